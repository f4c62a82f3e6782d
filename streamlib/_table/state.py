"""The state of one table: the latest value per key, or its versions over a history.

A plain dict in memory (``data``), mirrored to a store table at barriers
through :class:`~streamlib._state.operator_state.OperatorState`, so a table is
checkpointed, restored and (in a Kafka app) changelogged like every other
stateful operator.

* Latest only (``history_ms`` None): ``data[key] = value``. An update replaces
  the value; ``None`` deletes the key.
* Versioned (``history_ms`` set): ``data[key] = [(ts, value_or_None), ...]``
  sorted by event time. The latest value is the version with the greatest
  timestamp (an equal timestamp replaces that version); an update older than
  the latest goes into the history and leaves the latest alone. ``as_of(key,
  t)`` is the value of the last version at or before ``t``. A version is
  dropped once the next one is ``history_ms`` behind the watermark, so every
  lookup at or after ``watermark - history_ms`` is answered exactly. A
  tombstone is kept as a version (older updates stay history); a key whose
  only version is a tombstone that old is forgotten. Expiry is indexed
  by time (a heap of distinct times and a dict time -> keys), so a watermark
  costs in proportion to the keys it touches.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterator
from heapq import heappop, heappush
from operator import itemgetter
from typing import Any, Optional

from .._runtime.context import RunContext
from .._state.operator_state import OperatorState
from .._state.store import StateStore

#: ``put`` returns this for an update that went into a versioned table's history only.
HISTORY: tuple[Any, Any] = (None, None)
_TS = itemgetter(0)


class TableState:
    """Latest value (or versions) per key, with store staging and version expiry."""

    __slots__ = ("state", "data", "history", "heap", "by_expiry", "tracking", "max_age")

    def __init__(
        self,
        store: StateStore | None,
        ctx: RunContext,
        name: str,
        history_ms: int | None,
        value_type: Any = None,
        max_age: int | None = None,
    ) -> None:
        """``max_age`` (versioned only): a version older than that is never wanted by a lookup, so a
        key whose latest version is ``max_age`` behind ``watermark - history`` is forgotten."""
        stored_type = value_type
        if history_ms is not None and value_type is not None:
            stored_type = list[tuple[int, Optional[value_type]]]  # noqa: UP045 (a runtime type for msgspec)
        self.state = OperatorState(store, ctx, name, stored_type)
        self.data: dict[Hashable, Any] = self.state.data
        self.history = history_ms
        self.heap: list[int] = []
        self.by_expiry: dict[int, list[Hashable]] = {}
        self.tracking = self.state.tracking
        self.max_age = max_age

    # -- lifecycle -----------------------------------------------------------------

    def load(self) -> None:
        """Fill the table from the store's last checkpoint (if any)."""
        self.state.load()
        if self.history is not None:
            for key, versions in list(self.data.items()):
                versions = self.data[key] = [tuple(v) for v in versions]
                self._schedule_all(key, versions)

    def stage(self, checkpoint_id: int) -> None:
        self.state.stage(checkpoint_id)

    def close(self) -> None:
        self.state.close()

    # -- reads ----------------------------------------------------------------------

    def get(self, key: Hashable) -> Any:
        """The latest value of ``key``, None when absent."""
        v = self.data.get(key)
        if v is None or self.history is None:
            return v
        return v[-1][1]

    def as_of(self, key: Hashable, ts: int) -> Any:
        """The value of ``key`` at event time ``ts`` (versioned tables), None when absent then."""
        versions = self.data.get(key)
        if versions is None:
            return None
        i = bisect_right(versions, ts, key=_TS)
        return versions[i - 1][1] if i else None

    def version_as_of(self, key: Hashable, ts: int) -> tuple[int, Any] | None:
        """``(timestamp, value)`` of the version of ``key`` valid at ``ts`` (versioned tables), None if none."""
        versions = self.data.get(key)
        if versions is None:
            return None
        i = bisect_right(versions, ts, key=_TS)
        return versions[i - 1] if i else None  # type: ignore[no-any-return]

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, latest value) of every present key."""
        if self.history is None:
            yield from self.data.items()
            return
        for key, versions in self.data.items():
            value = versions[-1][1]
            if value is not None:
                yield key, value

    def __len__(self) -> int:
        if self.history is None:
            return len(self.data)
        return sum(1 for v in self.data.values() if v[-1][1] is not None)

    # -- writes ---------------------------------------------------------------------

    def put(self, key: Hashable, value: Any, ts: int | None) -> tuple[Any, Any] | None:
        """Apply one update (``value`` None deletes); ``(old, new)`` of the latest value, or None if unchanged.

        A versioned table returns :data:`HISTORY` (the same object every time)
        for an update older than the key's latest version.
        """
        data = self.data
        if self.history is None:
            old = data.get(key)
            if value is None:
                if old is None:
                    return None
                del data[key]
                self.state.remove(key)
                return (old, None)
            data[key] = value
            if self.tracking:
                self.state.dirty.add(key)
            return (old, value)
        return self._put_version(key, value, ts)

    def _put_version(self, key: Hashable, value: Any, ts: int | None) -> tuple[Any, Any] | None:
        assert ts is not None, "a versioned table needs event time"
        versions = self.data.get(key)
        h: int = self.history  # type: ignore[assignment]
        if versions is None:
            # a tombstone is kept too: it says the key is deleted as of ts, so older updates stay history
            self.data[key] = [(ts, value)]
            self._dirty(key)
            if self.max_age is not None:
                self._schedule(ts + h + self.max_age + 1, key)
            if value is None:
                self._schedule(ts + h, key)
                return None
            return (None, value)
        last_ts, last = versions[-1]
        if ts >= last_ts:
            if ts == last_ts:
                versions[-1] = (ts, value)
            else:
                versions.append((ts, value))
                self._schedule(ts + h, key)
                if self.max_age is not None:
                    self._schedule(ts + h + self.max_age + 1, key)
            if value is None:
                self._schedule(ts + h, key)
            self._dirty(key)
            return None if last is None and value is None else (last, value)
        i = bisect_right(versions, ts, key=_TS)
        if i and versions[i - 1][0] == ts:
            versions[i - 1] = (ts, value)
        else:
            versions.insert(i, (ts, value))
            self._schedule(versions[i + 1][0] + h, key)
            if i:
                self._schedule(ts + h, key)  # the version before it is superseded sooner now
        self._dirty(key)
        return HISTORY

    def _dirty(self, key: Hashable) -> None:
        if self.tracking:
            self.state.dirty.add(key)

    # -- expiry of versions -------------------------------------------------------

    def _schedule(self, at: int, key: Hashable) -> None:
        keys = self.by_expiry.get(at)
        if keys is None:
            self.by_expiry[at] = [key]
            heappush(self.heap, at)
        else:
            keys.append(key)

    def _schedule_all(self, key: Hashable, versions: list[Any]) -> None:
        h: int = self.history  # type: ignore[assignment]
        for ts, _v in versions[1:]:
            self._schedule(ts + h, key)
        if versions[-1][1] is None:
            self._schedule(versions[-1][0] + h, key)
        if self.max_age is not None:
            self._schedule(versions[-1][0] + h + self.max_age + 1, key)

    def expire(self, watermark: int) -> None:
        """Drop versions no lookup at or after ``watermark - history`` can need."""
        if self.history is None:
            return
        heap = self.heap
        cutoff = watermark - self.history
        while heap and heap[0] <= watermark:
            for key in self.by_expiry.pop(heappop(heap)):
                self._prune(key, cutoff)

    def _prune(self, key: Hashable, cutoff: int) -> None:
        versions = self.data.get(key)
        if versions is None:
            return
        i = bisect_right(versions, cutoff, key=_TS) - 1  # the version valid at the cutoff
        if i > 0:
            del versions[:i]
        if len(versions) == 1 and versions[0][1] is None and versions[0][0] <= cutoff:
            versions.clear()  # deleted longer ago than the history: forget the key
        elif self.max_age is not None and versions and versions[-1][0] < cutoff - self.max_age:
            versions.clear()  # even the latest version is too old for any lookup from now on
        if versions:
            self._dirty(key)
        else:
            del self.data[key]
            self.state.remove(key)
