"""The state of one stateful operator: a plain dict in memory, mirrored to a store table at barriers.

``data`` is the live state (``key -> value``, native Python objects) and is
what operators read and write in their hot loops. With a store, the operator
also marks what it changed (``dirty``) and what it dropped (``drop``); at each
barrier :meth:`OperatorState.stage` encodes exactly those entries (values with
msgspec MessagePack) and hands them to the run's checkpoint coordinator, which
commits them atomically with the other operators' state and the source
position. Without a store nothing is tracked or encoded.

Extra rows (an operator's watermark, counters) use keys starting with byte
0xC1, which never starts a MessagePack value, so they cannot clash with keys.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .._runtime.context import RunContext
from .checkpoint import RunCheckpoints, attach
from .codec import decode_key, encode, encode_key, raw_encode, value_decoder
from .store import StateStore

EXTRA_PREFIX = b"\xc1"


class OperatorState:
    """Live state of one operator plus its link to a store (when it has one)."""

    __slots__ = (
        "data",
        "dirty",
        "drop",
        "persisted",
        "tracking",
        "run",
        "member",
        "table",
        "decode",
        "extra",
        "stage_name",
    )

    def __init__(
        self,
        store: StateStore | None,
        ctx: RunContext,
        base_name: str,
        value_type: Any = None,
        on_committed: Callable[[int], None] | None = None,
    ) -> None:
        self.data: dict[Hashable, Any] = {}
        self.dirty: set[Hashable] = set()
        self.drop: set[Hashable] = set()
        self.persisted: set[Hashable] = set()
        self.extra: dict[bytes, Any] = {}
        self.tracking = store is not None
        self.stage_name = base_name
        self.run: RunCheckpoints | None = None
        self.member = base_name
        self.table = base_name
        self.decode = value_decoder(value_type)
        if store is not None:
            self.run = attach(store, ctx)
            self.member = self.table = self.run.join(base_name, on_committed)

    def load(self) -> None:
        """Fill ``data`` (and ``extra``) from the store's last checkpoint."""
        if self.run is None or self.run.start is None:
            return
        decode, plain = self.decode, value_decoder()
        table = self.run.store.table(self.table)
        for k, v in table.scan():
            if k.startswith(EXTRA_PREFIX):
                self.extra[k] = plain(v)
                continue
            key = decode_key(k)
            self.data[key] = decode(v)
            self.persisted.add(key)

    def remove(self, key: Hashable, maybe_stored: bool = False) -> None:
        """``key`` left the live state (``data`` already updated by the caller).

        ``maybe_stored``: the key may be in the store without this object
        knowing (state read lazily), so delete it there in any case.
        """
        if self.tracking:
            self.dirty.discard(key)
            if maybe_stored or key in self.persisted:
                self.drop.add(key)

    def stage(
        self,
        checkpoint_id: int,
        extra: dict[bytes, Any] | None = None,
        rows: list[tuple[bytes, bytes | None]] | None = None,
    ) -> None:
        """Barrier ``checkpoint_id`` arrived: hand the changes since the last barrier to the coordinator.

        ``extra``: rows of the operator's own (0xC1 keys) to encode and put;
        ``rows``: encoded rows to put, or delete (value None), as they are.
        """
        if self.run is None:
            return
        data = self.data
        what = f"state of {self.stage_name}"
        try:
            writes: list[tuple[bytes, bytes | None]] = [
                (raw_encode(key), raw_encode(data[key])) for key in self.dirty if key in data
            ]
        except (TypeError, OverflowError):
            for key in self.dirty:  # name the culprit
                if key in data:
                    encode_key(key)
                    encode(data[key], what)
            raise
        drop = self.drop - self.dirty  # removed, then set again: the new value wins
        for key in drop:
            writes.append((encode_key(key), None))
        if extra:
            for k, v in extra.items():
                writes.append((k, encode(v, what)))
        if rows:
            writes.extend(rows)
        self.persisted -= drop
        self.persisted |= self.dirty
        self.dirty = set()
        self.drop = set()
        self.run.stage(checkpoint_id, self.member, self.table, writes)

    def finish(self) -> None:
        """The operator's input ended normally: it stages nothing more, and later checkpoints of
        the store (staged by other operators that go on) no longer wait for it."""
        if self.run is not None:
            self.run.finish(self.member)

    def close(self) -> None:
        """The operator failed or was cancelled: no checkpoint after this one commits."""
        if self.run is not None:
            self.run.leave(self.member)
