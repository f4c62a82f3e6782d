"""Keyed stateful operators on the store: ``stateful_map`` and ``dedupe``.

``stateful_map(fn)`` calls ``fn(element, state)`` with a :class:`KeyState`
handle on the element's key. State is a dict in memory; with a store it is
read through from the store on a miss (so a restart needs no bulk load), its
changes are staged at each barrier, and after a checkpoint commits the clean
entries are dropped from memory once more than ``cache_size`` keys are cached,
which bounds memory for any number of keys.

``dedupe(key, within)`` drops an element when an element with the same key
passed less than ``within`` ms of event time before or after it; entries expire
once the watermark is ``within`` past them. Without timestamps upstream it uses
the wall clock at arrival (``ctx.clock.wall_ms()``) as the element's time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from heapq import heappop, heappush
from typing import Any, Generic, TypeVar, overload

from .._runtime.context import RunContext
from .._runtime.signals import Barrier, Signal, Watermark
from ..stage import StageLogic
from .checkpoint import StatefulStage
from .codec import encode_key
from .operator_state import OperatorState
from .store import StateStore

K = TypeVar("K")
S = TypeVar("S")

_ABSENT: Any = object()


class KeyState(Generic[K, S]):
    """The state of one key, handed to a ``stateful_map`` function with each element.

    >>> def running_total(e, state):
    ...     total = state.get(0) + e.amount
    ...     state.set(total)
    ...     return (e.account, total)
    """

    __slots__ = ("_logic", "key")

    def __init__(self, logic: StatefulMapLogic) -> None:
        self._logic = logic
        self.key: K = None  # type: ignore[assignment]

    @overload
    def get(self) -> S | None: ...

    @overload
    def get(self, default: S) -> S: ...

    def get(self, default: S | None = None) -> S | None:
        """The key's value, or ``default`` when it has none (None without a default).

        With a default the result has the state's type: ``state.get(0) + 1``.
        """
        value = self._logic.lookup(self.key)
        return default if value is _ABSENT else value

    def set(self, value: S) -> None:
        """Give the key ``value`` (stored at the next checkpoint)."""
        lg = self._logic
        lg.cache[self.key] = value
        if lg.tracking:
            lg.state.dirty.add(self.key)

    def delete(self) -> None:
        """Forget the key's value."""
        lg = self._logic
        lg.cache[self.key] = _ABSENT
        lg.state.remove(self.key, maybe_stored=True)

    def exists(self) -> bool:
        return self._logic.lookup(self.key) is not _ABSENT

    def __repr__(self) -> str:
        value = self._logic.lookup(self.key)
        return f"KeyState({self.key!r}: {'<none>' if value is _ABSENT else repr(value)})"


class StatefulMap(StatefulStage):
    def __init__(
        self,
        key_of: Callable[[Any], Hashable],
        fn: Callable[[Any, KeyState[Any, Any]], Any],
        store: StateStore | None,
        state_type: Any,
        cache_size: int,
        name: str | None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"stateful_map(fn) needs a function fn(element, state), got {fn!r}")
        if cache_size < 1:
            raise ValueError(f"stateful_map(cache_size=) must be positive, got {cache_size}")
        self.key_of = key_of
        self.fn = fn
        self.store = store
        self.state_type = state_type
        self.cache_size = cache_size
        self.name = name or "stateful_map"

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        return StatefulMapLogic(self, ctx), None


class StatefulMapLogic(StageLogic):
    def __init__(self, stage: StatefulMap, ctx: RunContext) -> None:
        self.key_of = stage.key_of
        self.fn = stage.fn
        self.cache_size = stage.cache_size
        self.state = OperatorState(stage.store, ctx, stage.name, stage.state_type, self._committed)
        self.tracking = self.state.tracking
        self.cache = self.state.data
        self.table: Any = None
        self.staged = 0
        self.handle: KeyState[Any, Any] = KeyState(self)

    def on_start(self) -> list[Any]:
        run = self.state.run
        if run is not None and run.start is not None:
            self.table = run.store.table(self.state.table)
        return []

    def lookup(self, key: Hashable) -> Any:
        value = self.cache.get(key, _ABSENT)
        if value is _ABSENT and self.table is not None and key not in self.cache:
            raw = self.table.get(encode_key(key))
            value = _ABSENT if raw is None else self.state.decode(raw)
            self.cache[key] = value
        return value

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out = []
        fn, key_of, handle = self.fn, self.key_of, self.handle
        for e in chunk:
            handle.key = key_of(e)
            r = fn(e, handle)
            if r is not None:
                out.append(r)
        return out

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Barrier and self.tracking:
            self.staged += 1
            self.state.stage(signal.checkpoint_id)
        return None

    def _committed(self, checkpoint_id: int) -> None:
        self.staged -= 1
        if self.table is None and self.state.run is not None:
            self.table = self.state.run.store.table(self.state.table)
        if self.staged == 0 and len(self.cache) > self.cache_size:
            # Everything not changed since the last barrier is in the store now.
            keep = self.state.dirty | self.state.drop
            for key in [k for k in self.cache if k not in keep]:
                del self.cache[key]

    def on_finish(self) -> list[Any]:
        self.state.close()
        return []

    def on_cancel(self) -> None:
        self.state.close()

    def on_failure(self, error: BaseException) -> None:
        self.state.close()


class Dedupe(StatefulStage):
    def __init__(
        self,
        key_of: Callable[[Any], Hashable],
        within_ms: int,
        ts_of: Callable[[Any], int] | None,
        store: StateStore | None,
        name: str | None,
    ) -> None:
        if not callable(key_of):
            raise TypeError(f"dedupe(key, within) needs a key function, got {key_of!r}")
        self.key_of = key_of
        self.within = within_ms
        self.ts_of = ts_of
        self.store = store
        self.name = name or "dedupe"

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        return DedupeLogic(self, ctx), None


class DedupeLogic(StageLogic):
    def __init__(self, stage: Dedupe, ctx: RunContext) -> None:
        self.key_of = stage.key_of
        self.ts_of = stage.ts_of
        self.within = stage.within
        self.clock = ctx.clock
        self.state = OperatorState(stage.store, ctx, stage.name)
        self.seen = self.state.data
        self.heap: list[int] = []
        self.by_expiry: dict[int, list[Hashable]] = {}

    def _schedule(self, at: int, key: Hashable) -> None:
        keys = self.by_expiry.get(at)
        if keys is None:
            self.by_expiry[at] = [key]
            heappush(self.heap, at)
        else:
            keys.append(key)

    def on_start(self) -> list[Any]:
        self.state.load()
        for k, ts in self.seen.items():
            self._schedule(ts + self.within, k)
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        ts_of, key_of, within, seen = self.ts_of, self.key_of, self.within, self.seen
        now = 0
        if ts_of is None:
            now = self.clock.wall_ms()
            self._expire(now)
        out = []
        tracking = self.state.tracking
        dirty = self.state.dirty
        for e in chunk:
            k = key_of(e)
            ts = now if ts_of is None else ts_of(e)
            last = seen.get(k)
            if last is not None and last - within < ts < last + within:
                continue
            seen[k] = ts
            self._schedule(ts + within, k)
            if tracking:
                dirty.add(k)
            out.append(e)
        return out

    def _expire(self, upto: int) -> None:
        heap, seen, within = self.heap, self.seen, self.within
        while heap and heap[0] <= upto:
            for k in self.by_expiry.pop(heappop(heap)):
                ts = seen.get(k)
                if ts is not None and ts + within <= upto:
                    del seen[k]
                    self.state.remove(k)

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Watermark:
            if self.ts_of is not None:
                self._expire(signal.time_ms)
        elif type(signal) is Barrier:
            self.state.stage(signal.checkpoint_id)
        return None

    def on_finish(self) -> list[Any]:
        self.state.close()
        return []

    def on_cancel(self) -> None:
        self.state.close()

    def on_failure(self, error: BaseException) -> None:
        self.state.close()
