"""The ``StateStore`` protocol and the write-behind layer every store shares.

A store holds named *tables* (one per stateful operator; a RocksDB column
family). Keys and values are bytes (see ``codec.py``). Writes to a table are
*pending*: visible at once to ``get``/``scan`` through the same store object,
persisted only by the next :meth:`StateStore.checkpoint`, which writes every
table's pending writes plus the checkpoint's ``meta`` (source positions, later
Kafka offsets) in one atomic batch. :meth:`StateStore.restore` drops pending
writes and returns the last committed checkpoint: after a crash, a store is
exactly its last checkpoint.

Commit hooks see each checkpoint's complete write set before it is committed
locally (``Commit.writes``); a Kafka changelog mirrors a store through one.
The contract is written down in ``docs/state.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: Writes of one table: ``(key, value)``, value None meaning delete.
Writes = list[tuple[bytes, "bytes | None"]]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A committed checkpoint: its id and the metadata committed with it."""

    id: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Commit:
    """What one checkpoint writes: handed to commit hooks before the local commit."""

    checkpoint_id: int
    meta: dict[str, Any]
    #: Table name -> writes in the order they were made (value None = delete).
    writes: dict[str, Writes]


CommitHook = Callable[[Commit], None]


@runtime_checkable
class Table(Protocol):
    """One operator's key-value table inside a store."""

    name: str

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def write(self, batch: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply many puts (value bytes) and deletes (value None) at once."""
        ...

    def scan(
        self, prefix: bytes = b"", start: bytes | None = None, stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix`` and lies in ``[start, stop)``, in byte order."""
        ...

    def count(self) -> int:
        """Number of keys (committed and pending)."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """Tables plus atomic checkpoints. ``MemoryStore`` and ``RocksDBStore`` implement it."""

    def table(self, name: str) -> Table:
        """The table ``name``, created empty when missing."""
        ...

    def table_names(self) -> list[str]: ...

    def checkpoint(self, checkpoint_id: int, meta: Mapping[str, Any] | None = None) -> Checkpoint:
        """Commit every table's pending writes and ``meta`` atomically."""
        ...

    def last_checkpoint(self) -> Checkpoint | None:
        """The last committed checkpoint, or None for a fresh store."""
        ...

    def restore(self) -> Checkpoint | None:
        """Drop pending writes (back to the last checkpoint) and return that checkpoint."""
        ...

    def add_commit_hook(self, hook: CommitHook) -> None:
        """Call ``hook`` with each checkpoint's writes before they are committed."""
        ...

    def close(self) -> None: ...


class BaseTable:
    """A table with a pending-writes overlay over a backend's committed data."""

    __slots__ = ("name", "store", "pending")

    def __init__(self, store: BaseStore, name: str) -> None:
        self.name = name
        self.store = store
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        pending = self.pending
        if key in pending:
            return pending[key]
        return self.store._get(self.name, key)

    def put(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:
            raise TypeError(f"table {self.name!r}: keys and values are bytes, got {type(key).__name__}, {type(value).__name__}")
        self.pending[key] = value

    def delete(self, key: bytes) -> None:
        self.pending[key] = None

    def write(self, batch: Iterable[tuple[bytes, bytes | None]]) -> None:
        pending = self.pending
        for key, value in batch:
            pending[key] = value

    def scan(
        self, prefix: bytes = b"", start: bytes | None = None, stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        lo = prefix if start is None or start < prefix else start
        hi = _prefix_end(prefix)
        if stop is not None and (hi is None or stop < hi):
            hi = stop
        committed = self.store._scan(self.name, lo, hi)
        if not self.pending:
            yield from committed
            return
        overlay = sorted(
            (k, v) for k, v in self.pending.items() if k >= lo and (hi is None or k < hi)
        )
        yield from _merge(committed, overlay)

    def count(self) -> int:
        return sum(1 for _ in self.scan())

    def __repr__(self) -> str:
        return f"Table({self.name!r})"


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


def _merge(
    committed: Iterator[tuple[bytes, bytes]], overlay: list[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    i = 0
    n = len(overlay)
    for key, value in committed:
        while i < n and overlay[i][0] < key:
            ok, ov = overlay[i]
            i += 1
            if ov is not None:
                yield ok, ov
        if i < n and overlay[i][0] == key:
            ov = overlay[i][1]
            i += 1
            if ov is not None:
                yield key, ov
            continue
        yield key, value
    for ok, ov in overlay[i:]:
        if ov is not None:
            yield ok, ov


class BaseStore:
    """Pending writes, checkpoints and hooks; backends supply committed reads and the atomic write.

    Backends implement ``_get``, ``_scan``, ``_commit``, ``_load_checkpoint``,
    ``_create_table`` and ``_existing_tables``.
    """

    def __init__(self) -> None:
        self._tables: dict[str, BaseTable] = {}
        self._hooks: list[CommitHook] = []
        self._last: Checkpoint | None = None
        self._loaded = False
        self._users = 0

    # -- protocol ------------------------------------------------------------

    def table(self, name: str) -> BaseTable:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a table name is a non-empty str, got {name!r}")
        table = self._tables.get(name)
        if table is None:
            self._create_table(name)
            table = self._tables[name] = BaseTable(self, name)
        return table

    def table_names(self) -> list[str]:
        return sorted(set(self._existing_tables()) | set(self._tables))

    def checkpoint(self, checkpoint_id: int, meta: Mapping[str, Any] | None = None) -> Checkpoint:
        last = self.last_checkpoint()
        if last is not None and checkpoint_id <= last.id:
            raise ValueError(f"checkpoint ids increase: {checkpoint_id} after {last.id} in {self!r}")
        cp = Checkpoint(checkpoint_id, dict(meta or {}))
        writes = {name: list(t.pending.items()) for name, t in self._tables.items() if t.pending}
        if self._hooks:
            commit = Commit(checkpoint_id, cp.meta, writes)
            for hook in self._hooks:
                hook(commit)
        self._commit(writes, cp)
        for t in self._tables.values():
            t.pending = {}
        self._last = cp
        return cp

    def last_checkpoint(self) -> Checkpoint | None:
        if not self._loaded:
            self._last = self._load_checkpoint()
            self._loaded = True
        return self._last

    def restore(self) -> Checkpoint | None:
        for t in self._tables.values():
            t.pending = {}
        return self.last_checkpoint()

    def add_commit_hook(self, hook: CommitHook) -> None:
        self._hooks.append(hook)

    def remove_commit_hook(self, hook: CommitHook) -> None:
        self._hooks.remove(hook)

    def close(self) -> None:
        """Release resources; pending writes are dropped (they were never checkpointed)."""
        for t in self._tables.values():
            t.pending = {}

    def __enter__(self) -> BaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _acquire(self) -> None:
        """A run starts using this store."""
        self._users += 1

    def _release(self) -> None:
        """A run stopped using this store; the last one out closes it."""
        self._users -= 1
        if self._users == 0:
            self.close()

    def stats(self) -> dict[str, int]:
        """Number of keys per table (committed and pending)."""
        return {name: self.table(name).count() for name in self.table_names()}

    # -- backend -------------------------------------------------------------

    def _get(self, table: str, key: bytes) -> bytes | None:
        raise NotImplementedError

    def _scan(self, table: str, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    def _commit(self, writes: dict[str, Writes], checkpoint: Checkpoint) -> None:
        raise NotImplementedError

    def _load_checkpoint(self) -> Checkpoint | None:
        raise NotImplementedError

    def _create_table(self, name: str) -> None:
        raise NotImplementedError

    def _existing_tables(self) -> list[str]:
        raise NotImplementedError
