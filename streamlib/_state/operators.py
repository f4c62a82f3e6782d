"""Keyed stateful operators on the store: ``stateful_map`` and ``dedupe``.

``stateful_map(fn)`` calls ``fn(element, state)`` with a :class:`KeyState`
handle on the element's key. State is a dict in memory; with a store it is
read through from the store on a miss (so a restart needs no bulk load), its
changes are staged at each barrier, and after a checkpoint commits the clean
entries are dropped from memory once more than ``cache_size`` keys are cached,
which bounds memory for any number of keys.

With ``on_timer=`` (or ``ttl=``) the logic is :class:`TimersLogic`: keys also
have timers (``_state/timers.py``), fired in event time when a watermark
reaches them and in processing time through the island's timer
(``uses_timers``/``timer_at``/``on_timer``); timers are rows of the same table,
staged at the same barriers. ``ttl`` is one more timer per key (name None),
moved later by each element of the key; when it fires the key's value is
deleted. ``process`` is the same logic emitting every item of an iterable.

``dedupe(key, within)`` drops an element when an element with the same key
passed less than ``within`` ms of event time before or after it; entries expire
once the watermark is ``within`` past them. Without timestamps upstream it uses
the wall clock at arrival (``ctx.clock.wall_ms()``) as the element's time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import timedelta
from heapq import heappop, heappush
from typing import Any, Generic, Literal, TypeVar, overload

from .._runtime.context import RunContext
from .._runtime.signals import Barrier, Signal, Watermark
from .._time.watermarks import NO_WATERMARK
from ..stage import StageLogic
from .checkpoint import StatefulStage
from .codec import encode_key
from .operator_state import OperatorState
from .store import StateStore
from .timers import SEQ_KEY, WATERMARK_KEY, KeyTimers, Timer, decoded

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
        """Forget the key's value (its timers stay pending)."""
        self._logic.forget(self.key)

    def exists(self) -> bool:
        """Whether the key has a value."""
        return self._logic.lookup(self.key) is not _ABSENT

    def timer_at(self, time_ms: int, name: str = "timer") -> None:
        """Call ``on_timer`` for this key once the watermark reaches event time ``time_ms``.

        One timer per key and ``name``: setting it again replaces it (in either
        time domain); setting it to the time it has changes nothing. Timers of
        equal time fire in the order they were set. A time the watermark has
        already reached fires with the next watermark (or at the end of input).
        Needs ``on_timer=`` on the operator.
        """
        if type(time_ms) is not int:
            raise TypeError(
                f"timer_at(time_ms) is an event time in int milliseconds, got {time_ms!r}; "
                "use timer_after(seconds) for processing time"
            )
        self._logic.set_timer(self.key, _name(name), True, time_ms)

    def timer_after(self, delay: float | timedelta, name: str = "timer") -> None:
        """Call ``on_timer`` for this key ``delay`` seconds (or a timedelta) from now, by the run's clock.

        Processing time: fires when the clock passes the deadline, even while no
        element arrives. The deadline is kept as wall-clock milliseconds
        (``Timer.time``), so it holds across a restart. Replaces the key's timer
        ``name`` as ``timer_at`` does.
        """
        if isinstance(delay, timedelta):
            secs = delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            secs = float(delay)
        else:
            raise TypeError(f"timer_after(delay) is seconds or a datetime.timedelta, got {delay!r}")
        if secs < 0:
            raise ValueError(f"timer_after(delay) must not be negative, got {secs} s")
        self._logic.set_timer_after(self.key, _name(name), secs)

    def cancel_timer(self, name: str = "timer") -> bool:
        """Remove this key's timer ``name``; False when none was pending."""
        return self._logic.cancel_timer(self.key, _name(name))

    def timer(self, name: str = "timer") -> Timer | None:
        """This key's pending timer ``name``, or None."""
        return self._logic.pending_timer(self.key, _name(name))

    def __repr__(self) -> str:
        value = self._logic.lookup(self.key)
        return f"KeyState({self.key!r}: {'<none>' if value is _ABSENT else repr(value)})"


def _name(name: Any) -> str:
    if type(name) is not str:
        raise TypeError(f"a timer name is a str, got {name!r}")
    return name


class StatefulMap(StatefulStage):
    """``stateful_map`` (``many=False``: emits what ``fn`` returns) or ``process`` (emits every item it returns).

    ``on_timer(key, state, timer)``: called for each timer that fires.
    ``ttl_ms``: a key untouched for that long loses its value, in event time
    (``ttl_event``: by ``ts_of`` and watermarks) or processing time (wall clock).
    ``processing``: whether processing-time timers may be set (the logic then
    uses the island's timer, which an island fed by ``Source.queue`` pays for
    with its fast path); by default when ``on_timer`` is given or the TTL is in
    processing time.
    """

    def __init__(
        self,
        key_of: Callable[[Any], Hashable],
        fn: Callable[[Any, KeyState[Any, Any]], Any],
        store: StateStore | None,
        state_type: Any,
        cache_size: int,
        name: str | None,
        on_timer: Callable[[Any, KeyState[Any, Any], Timer], Any] | None = None,
        ttl_ms: int | None = None,
        ttl_event: bool = True,
        ts_of: Callable[[Any], int] | None = None,
        many: bool = False,
        processing: bool | None = None,
    ) -> None:
        what = "process" if many else "stateful_map"
        if not callable(fn):
            raise TypeError(f"{what}(fn) needs a function fn(element, state), got {fn!r}")
        if cache_size < 1:
            raise ValueError(f"{what}(cache_size=) must be positive, got {cache_size}")
        if on_timer is not None and not callable(on_timer):
            raise TypeError(f"{what}(on_timer=) needs a function on_timer(key, state, timer), got {on_timer!r}")
        if ttl_ms is not None and ttl_event and ts_of is None:
            raise ValueError(
                f"{what}(ttl=) in event time needs event timestamps: add .with_timestamps(lambda e: e.ts_ms) "
                f"before key_by, pass timestamp=lambda e: ..., or pass ttl_time='processing' to expire keys "
                "by the wall clock"
            )
        self.key_of = key_of
        self.fn = fn
        self.store = store
        self.state_type = state_type
        self.cache_size = cache_size
        self.name = name or what
        self.on_timer = on_timer
        self.ttl_ms = ttl_ms
        self.ttl_event = ttl_event
        self.ts_of = ts_of
        self.many = many
        if processing is None:
            processing = on_timer is not None or (ttl_ms is not None and not ttl_event)
        self.processing = processing

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        if self.on_timer is None and self.ttl_ms is None:
            return (ProcessLogic if self.many else StatefulMapLogic)(self, ctx), None
        return (ProcessingTimersLogic if self.processing else TimersLogic)(self, ctx), None


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
        self.out: list[Any] = []

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

    def forget(self, key: Hashable) -> None:
        """The key's value is gone (``delete``, TTL)."""
        if self.tracking:
            self.cache[key] = _ABSENT  # hides the stored value until the checkpoint deletes it
            self.state.remove(key, maybe_stored=True)
        else:
            self.cache.pop(key, None)

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out = self.out = []
        fn, key_of, handle = self.fn, self.key_of, self.handle
        for e in chunk:
            handle.key = key_of(e)
            r = fn(e, handle)
            if r is not None:
                out.append(r)
        return out

    def take_partial(self) -> list[Any]:
        return self.out

    def set_timer(self, key: Hashable, name: str, event: bool, time: int) -> None:
        raise self._no_timers()

    def set_timer_after(self, key: Hashable, name: str, seconds: float) -> None:
        raise self._no_timers()

    def cancel_timer(self, key: Hashable, name: str) -> bool:
        raise self._no_timers()

    def pending_timer(self, key: Hashable, name: str) -> Timer | None:
        raise self._no_timers()

    def _no_timers(self) -> RuntimeError:
        return RuntimeError(
            f"{self.stage_name}: timers need a callback to deliver them to: pass on_timer=lambda key, state, "
            "timer: ... to stateful_map or process"
        )

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
        self.state.finish()
        return []

    def on_cancel(self) -> None:
        self.state.close()

    def on_failure(self, error: BaseException) -> None:
        self.state.close()


class ProcessLogic(StatefulMapLogic):
    """``process`` without timers: every item ``fn`` returns is emitted."""

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out = self.out = []
        fn, key_of, handle = self.fn, self.key_of, self.handle
        for e in chunk:
            handle.key = key_of(e)
            r = fn(e, handle)
            if r is not None:
                out.extend(r)
        return out


class TimersLogic(StatefulMapLogic):
    """``stateful_map``/``process`` with keyed timers and/or TTL; event-time timers only.

    Event-time timers fire when a watermark reaches them (in order of time,
    then of setting), before the watermark is forwarded; all of them fire at
    the end of input. The operator's watermark and timers are staged at each
    barrier and reloaded on start; watermarks below the restored one are
    ignored (a replay after a restart starts its watermarks low again).
    """

    def __init__(self, stage: StatefulMap, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        self.callback = stage.on_timer
        self.many = stage.many
        self.ttl = stage.ttl_ms
        self.ttl_event = stage.ttl_event
        self.ts_of = stage.ts_of
        self.clock = ctx.clock
        self.timers = KeyTimers(self.tracking)
        self.wm = NO_WATERMARK

    def on_start(self) -> list[Any]:
        super().on_start()
        if self.table is not None:
            self.timers.restore(self.table)
            self.wm = decoded(self.table.get(WATERMARK_KEY), NO_WATERMARK)
        self._arm()
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out = self.out = []
        fn, key_of, handle, many = self.fn, self.key_of, self.handle, self.many
        ttl = self.ttl
        if ttl is None:
            for e in chunk:
                handle.key = key_of(e)
                r = fn(e, handle)
                if r is not None:
                    if many:
                        out.extend(r)
                    else:
                        out.append(r)
        else:
            ts_of = self.ts_of if self.ttl_event else None
            now = 0 if ts_of is not None else self.clock.wall_ms()
            event = self.ttl_event
            timers = self.timers
            recs = timers.recs
            dirty = timers.dirty if self.tracking else None
            for e in chunk:
                k = handle.key = key_of(e)
                t = now if ts_of is None else ts_of(e)
                ident = (k, None)
                rec = recs.get(ident)
                if rec is None:
                    timers.set(k, None, event, t + ttl)
                else:
                    if t >= rec.time:  # expired, its timer has not fired yet: the value is gone all the same
                        self.forget(k)
                    if t + ttl > rec.time:
                        # KeyTimers.set moving a timer later, inlined: the heap entry stays where it is.
                        timers.seq += 1
                        rec.time = t + ttl
                        rec.seq = timers.seq
                        if dirty is not None:
                            dirty.add(ident)
                r = fn(e, handle)
                if r is not None:
                    if many:
                        out.extend(r)
                    else:
                        out.append(r)
        self._arm()
        return out

    def _fire(self, event: bool, upto: int) -> list[Any]:
        out = self.out = []
        handle = self.handle
        callback = self.callback
        many = self.many
        domain: Literal["event", "processing"] = "event" if event else "processing"
        for key, name, t in self.timers.due(event, upto):
            handle.key = key
            if name is None:  # the key's TTL
                self.forget(key)
                continue
            assert callback is not None
            r = callback(key, handle, Timer(name, t, domain))
            if r is not None:
                if many:
                    out.extend(r)
                else:
                    out.append(r)
            if self.ttl is not None and self.lookup(key) is not _ABSENT:
                self._touch(key, t if event is self.ttl_event else self._now(self.ttl_event))
        self._arm()
        return out

    def _touch(self, key: Hashable, t: int) -> None:
        assert self.ttl is not None
        rec = self.timers.get(key, None)
        if rec is None or t + self.ttl > rec.time:
            self.timers.set(key, None, self.ttl_event, t + self.ttl)

    def _now(self, event: bool) -> int:
        return max(self.wm, 0) if event else self.clock.wall_ms()

    def _arm(self) -> None:
        """Processing-time timers are watched by the island (``ProcessingTimersLogic``)."""

    def set_timer(self, key: Hashable, name: str, event: bool, time: int) -> None:
        self.timers.set(key, name, event, time)

    def set_timer_after(self, key: Hashable, name: str, seconds: float) -> None:
        raise RuntimeError(
            f"{self.stage_name}: this operator was built for event-time timers only; timer_after "
            "(processing time) needs it built with processing-time timers"
        )

    def cancel_timer(self, key: Hashable, name: str) -> bool:
        return self.timers.cancel(key, name)

    def pending_timer(self, key: Hashable, name: str) -> Timer | None:
        rec = self.timers.get(key, name)
        if rec is None:
            return None
        return Timer(name, rec.time, "event" if rec.event else "processing")

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Watermark:
            if signal.time_ms > self.wm:
                self.wm = signal.time_ms
                return self._fire(True, signal.time_ms)
        elif type(signal) is Barrier and self.tracking:
            self.staged += 1
            timers = self.timers
            rows = timers.rows(self.stage_name)
            self.state.stage(signal.checkpoint_id, {WATERMARK_KEY: self.wm, SEQ_KEY: timers.seq}, rows)
        return None

    def on_finish(self) -> list[Any]:
        # The end of input is the end of event time: every event-time timer fires.
        out = self._fire(True, 2**63 - 1)
        self.timer_at = None
        self.state.finish()
        return out


class ProcessingTimersLogic(TimersLogic):
    """``TimersLogic`` that also fires processing-time timers, through the island's timer."""

    uses_timers = True

    def set_timer_after(self, key: Hashable, name: str, seconds: float) -> None:
        self.timers.set(key, name, False, self.clock.wall_ms() + round(seconds * 1000))

    def _arm(self) -> None:
        head = self.timers.next_processing()
        if head is None:
            self.timer_at = None
        else:
            clock = self.clock
            self.timer_at = clock.now() + max(head - clock.wall_ms(), 0) / 1000

    def on_timer(self, now: float) -> list[Any]:
        return self._fire(False, self.clock.wall_ms())

    def on_finish(self) -> list[Any]:
        # Processing-time timers still pending stay pending (in the store, if any): input is over.
        return super().on_finish()


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
        self.state.finish()
        return []

    def on_cancel(self) -> None:
        self.state.close()

    def on_failure(self, error: BaseException) -> None:
        self.state.close()
