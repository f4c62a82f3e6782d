"""Keyed streams and windows in the DSL: ``key_by``, ``window``, aggregations, ``stateful_map``.

``source.key_by(f)`` returns a :class:`Keyed` wrapper around the blueprint
(a Source or a Flow) and the key function. ``Keyed.window(...)`` returns a
:class:`Windowed` wrapper; its aggregation methods (``count``, ``sum``, ...)
append one window stage and return a plain Source/Flow of
:class:`WindowResult`. Neither wrapper runs anything or holds state.

Build-time lookups in the blueprint (walking its edges back from the open
output): the event-time function of the nearest upstream ``with_timestamps``,
and the store of the nearest upstream ``checkpointed`` stage, which is the
default store of every stateful operator after it. Stages with a
``check_blueprint`` (``checkpointed``, stateful operators with a store) are
checked as soon as they are added (:func:`then_checked`): on a Source the whole
upstream is known; on a Flow what is missing is checked when it materializes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .._state.checkpoint import Checkpointed, require_barriers
from .._state.store import StateStore
from .._time import aggregations as _aggs
from .._time.durations import event_ms, seconds
from .._time.results import LateRecord, WindowResult, is_late
from .._time.watermarks import WithTimestamps, find_upstream
from .._time.windows import WindowAssigner
from .fields import extractor
from .keep import Keep

if TYPE_CHECKING:
    from .._state.operators import KeyState
    from .._table.table import Table
    from ..cep import Match, Pattern, Timeout
    from .._state.timers import TimeDomain, Timer
    from .flow import Flow
    from .sink import Sink
    from .source import Source

B = TypeVar("B")
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
A = TypeVar("A")
S = TypeVar("S")
U = TypeVar("U")
I = TypeVar("I")  # noqa: E741
M = TypeVar("M")
M2 = TypeVar("M2")
M3 = TypeVar("M3")

EmitMode = Literal["final", "updates"]


# -- helpers used by the operator methods of Source and Flow ---------------------


def with_timestamps_stage(
    fn: Callable[[Any], int] | str | int,
    max_out_of_orderness: int | timedelta,
    idle_timeout: float | timedelta | None,
    bounded: bool = False,
) -> WithTimestamps:
    bound = event_ms(max_out_of_orderness, "with_timestamps(max_out_of_orderness)")
    idle = None if idle_timeout is None else seconds(idle_timeout, "with_timestamps(idle_timeout)")
    return WithTimestamps(extractor(fn, "with_timestamps(fn)"), bound, idle, bounded)


def timestamp_of(
    blueprint: Any, explicit: Callable[[Any], int] | str | int | None, what: str
) -> Callable[[Any], int] | None:
    """``explicit`` (a function or field), else the function of the nearest upstream ``with_timestamps`` (None if there is none)."""
    if explicit is not None:
        return extractor(explicit, f"{what}(timestamp=)")
    found = find_upstream(blueprint._module, WithTimestamps, what)
    if len(found) > 1:
        raise ValueError(
            f"{what}: the inputs have different with_timestamps(...) stages upstream; "
            "pass timestamp=<function> to say which event time to use"
        )
    return found[0].fn if found else None


def default_store(blueprint: Any, explicit: StateStore | None, what: str) -> StateStore | None:
    """``explicit``, else the store of the nearest upstream ``checkpointed`` stage (None if none)."""
    if explicit is not None:
        if not isinstance(explicit, StateStore):
            raise TypeError(f"{what}(store=) needs a state store (MemoryStore(), RocksDBStore(path)), got {explicit!r}")
        return explicit
    found = find_upstream(blueprint._module, Checkpointed, what)
    stores = {id(c.store): c.store for c in found}
    if len(stores) > 1:
        raise ValueError(f"{what}: several checkpointed(...) stores upstream; pass store= to choose one")
    return next(iter(stores.values())) if stores else None


def checkpointed_stage(
    store: StateStore,
    every: int | None,
    interval: float | timedelta | None,
    name: str | None,
    replayable: bool | None = None,
) -> Checkpointed:
    secs = None if interval is None else seconds(interval, "checkpointed(interval)")
    return Checkpointed(store, every, secs, name, replayable)


def then_checked(blueprint: Any, stage: Any) -> Any:
    """``blueprint`` with ``stage`` appended, after the stage's ``check_blueprint`` accepted the result."""
    out = blueprint._then(stage)
    module = out._module
    stage.check_blueprint(module.stages, module.edges, module.outlet[0])
    return out


def dedupe_stage(
    blueprint: Any,
    key: Callable[[Any], Hashable],
    within: int | timedelta,
    store: StateStore | None,
    timestamp: Callable[[Any], int] | None,
    name: str | None,
) -> Any:
    from .._state.operators import Dedupe

    within_ms = event_ms(within, "dedupe(within)", positive=True)
    ts_of = timestamp_of(blueprint, timestamp, "dedupe")
    return Dedupe(key, within_ms, ts_of, default_store(blueprint, store, "dedupe"), name)


# -- the wrappers ------------------------------------------------------------------


class Keyed(Generic[B, T, K]):
    """A blueprint ``B`` (Source or Flow) of ``T`` elements with a key function; from ``key_by``.

    >>> keyed = Source.from_iterable(events).with_timestamps(ts).key_by(lambda e: e.user)
    >>> keyed.window(TumblingWindows(timedelta(minutes=1))).count()
    """

    __slots__ = ("_parent", "_key")

    def __init__(self, parent: B, key: Callable[[T], K] | str | int) -> None:
        self._parent = parent
        self._key: Callable[[T], K] = extractor(key, "key_by(f)")

    @overload
    def window(
        self,
        assigner: WindowAssigner,
        *,
        store: StateStore | None = None,
        allowed_lateness: int | timedelta = 0,
        emit: EmitMode = "final",
        late: Sink[LateRecord, Any] | Literal["fail", "emit"] = "fail",
        late_mat: None = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Windowed[B, T, K]: ...
    @overload
    def window(
        self: Keyed[Source[Any, M], T, K],
        assigner: WindowAssigner,
        *,
        store: StateStore | None = None,
        allowed_lateness: int | timedelta = 0,
        emit: EmitMode = "final",
        late: Sink[LateRecord, M2],
        late_mat: Callable[[M, M2], M3],
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Windowed[Source[T, M3], T, K]: ...
    @overload
    def window(
        self: Keyed[Flow[I, Any, M], T, K],
        assigner: WindowAssigner,
        *,
        store: StateStore | None = None,
        allowed_lateness: int | timedelta = 0,
        emit: EmitMode = "final",
        late: Sink[LateRecord, M2],
        late_mat: Callable[[M, M2], M3],
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Windowed[Flow[I, T, M3], T, K]: ...
    def window(
        self,
        assigner: WindowAssigner,
        *,
        store: StateStore | None = None,
        allowed_lateness: int | timedelta = 0,
        emit: EmitMode = "final",
        late: Sink[LateRecord, Any] | Literal["fail", "emit"] = "fail",
        late_mat: Callable[[Any, Any], Any] | None = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Windowed[Any, T, K]:
        """Group each key's elements into windows; pick an aggregation on the result.

        ``store``: where window state is checkpointed (default: the store of an
        upstream ``checkpointed``, else memory only). ``allowed_lateness``
        (int ms or timedelta): how long after its end a window still accepts
        elements. ``emit``: ``"final"`` (one result per window when the watermark
        passes end + allowed lateness) or ``"updates"`` (a result per change).
        ``late``: where late elements go, as :class:`LateRecord` -- a Sink,
        ``"emit"`` (into this stream, next to the results) or ``"fail"`` (the
        default: a late element fails the stream with ``LateDataError``).
        ``late_mat``: with a late Sink, ``combine(mat, late_mat)`` of this
        blueprint's materialized value and the late Sink's, as in ``to_mat``
        (``Keep.right``, ``Keep.both``); without it the late Sink's is dropped.
        ``timestamp``: the event-time function (or field, as in ``key_by``),
        when no ``with_timestamps`` upstream in this blueprint provides it.
        """
        if not isinstance(assigner, WindowAssigner):
            raise TypeError(
                f"window(assigner) needs TumblingWindows, HoppingWindows, SlidingWindows, SessionWindows "
                f"or CountWindows, got {assigner!r}"
            )
        if emit not in ("final", "updates"):
            raise ValueError(f"window(emit=) is 'final' or 'updates', got {emit!r}")
        lateness = event_ms(allowed_lateness, "window(allowed_lateness)")
        ts_of = timestamp_of(self._parent, timestamp, "window")
        if assigner.timed and ts_of is None:
            raise ValueError(
                f"window({assigner!r}) needs event timestamps: add .with_timestamps(lambda e: e.ts_ms) "
                "before key_by, or pass window(..., timestamp=lambda e: ...)"
            )
        if not assigner.timed and lateness:
            raise ValueError(f"{assigner!r} has no event time: allowed_lateness does not apply")
        from .sink import Sink as _Sink

        if not (isinstance(late, _Sink) or late in ("fail", "emit")):
            raise ValueError(f"window(late=) is a Sink, 'emit' or 'fail', got {late!r}")
        if late_mat is not None and not isinstance(late, _Sink):
            raise ValueError(
                f"window(late_mat=) combines the materialized value of a late-data Sink, but late={late!r}: "
                "pass late=Sink...(...) with it, or drop late_mat="
            )
        window_store = default_store(self._parent, store, "window")
        if window_store is not None:
            module = self._parent._module  # type: ignore[attr-defined]
            require_barriers(window_store, module.stages, module.edges, module.outlet[0], f"window({assigner!r})")
        return Windowed(
            self._parent, self._key, assigner, ts_of, window_store, lateness, emit, late, name, late_mat,
        )  # fmt: skip

    @overload
    def stateful_map(
        self: Keyed[Source[Any, M], T, K],
        fn: Callable[[T, KeyState[K, S]], U | None],
        *,
        on_timer: Callable[[K, KeyState[K, S], Timer], U | None] | None = None,
        ttl: int | timedelta | None = None,
        ttl_time: TimeDomain = "event",
        timestamp: Callable[[T], int] | str | int | None = None,
        store: StateStore | None = None,
        state_type: Any = None,
        cache_size: int = 100_000,
        name: str | None = None,
    ) -> Source[U, M]: ...

    @overload
    def stateful_map(
        self: Keyed[Flow[I, Any, M], T, K],
        fn: Callable[[T, KeyState[K, S]], U | None],
        *,
        on_timer: Callable[[K, KeyState[K, S], Timer], U | None] | None = None,
        ttl: int | timedelta | None = None,
        ttl_time: TimeDomain = "event",
        timestamp: Callable[[T], int] | str | int | None = None,
        store: StateStore | None = None,
        state_type: Any = None,
        cache_size: int = 100_000,
        name: str | None = None,
    ) -> Flow[I, U, M]: ...

    def stateful_map(
        self,
        fn: Callable[[Any, Any], Any],
        *,
        on_timer: Callable[[Any, Any, Any], Any] | None = None,
        ttl: int | timedelta | None = None,
        ttl_time: TimeDomain = "event",
        timestamp: Callable[[T], int] | str | int | None = None,
        store: StateStore | None = None,
        state_type: Any = None,
        cache_size: int = 100_000,
        name: str | None = None,
    ) -> Any:
        """Map each element with ``fn(element, state)``, ``state`` a handle on the element's key.

        ``state.get(default)``, ``state.set(value)``, ``state.delete()``,
        ``state.exists()``, ``state.key``. Emits what ``fn`` returns; a None
        result emits nothing. Backpressures when downstream does; completes when
        upstream does. With a store (``store=`` or an upstream
        ``checkpointed``), state is read from it on a miss, checkpointed at each
        barrier and restored on restart; ``state_type`` decodes stored values to
        their type (msgspec); at most ``cache_size`` clean keys stay in memory.

        Timers: with ``on_timer=on_timer(key, state, timer)``, ``fn`` (and
        ``on_timer``) may call ``state.timer_at(event_ms, name="timer")``
        (fires once the watermark reaches it), ``state.timer_after(seconds)``
        (fires by the run's clock), ``state.cancel_timer(name)`` and
        ``state.timer(name)``. One timer per key and name: setting it again
        replaces it. ``on_timer`` gets the :class:`Timer` that fired and emits
        what it returns (None: nothing). Timers are state: checkpointed with the
        values and restored after a restart. At the end of input every
        event-time timer fires; processing-time timers still pending do not.

        ``ttl`` (int ms or timedelta): a key none of whose elements came for
        that long loses its value, in memory and, at the next checkpoint, in the
        store. ``ttl_time="event"`` (the default) measures it in event time
        (element timestamps from ``with_timestamps`` upstream or
        ``timestamp=``; the value goes when the watermark reaches the key's
        latest timestamp plus ``ttl``, and an element arriving that late sees
        none); ``"processing"`` by the wall clock of the run.

        >>> def count(e, state):
        ...     n = state.get(0) + 1
        ...     state.set(n)
        ...     return (state.key, n)
        >>> await Source.from_iterable("abca").key_by(str).stateful_map(count).run_with(Sink.collect())
        [('a', 1), ('b', 1), ('c', 1), ('a', 2)]
        """
        return then_checked(
            self._parent,
            self._stateful(fn, on_timer, ttl, ttl_time, timestamp, store, state_type, cache_size, name, False),
        )

    @overload
    def process(
        self: Keyed[Source[Any, M], T, K],
        fn: Callable[[T, KeyState[K, S]], Iterable[U] | None],
        *,
        on_timer: Callable[[K, KeyState[K, S], Timer], Iterable[U] | None] | None = None,
        ttl: int | timedelta | None = None,
        ttl_time: TimeDomain = "event",
        timestamp: Callable[[T], int] | str | int | None = None,
        store: StateStore | None = None,
        state_type: Any = None,
        cache_size: int = 100_000,
        name: str | None = None,
    ) -> Source[U, M]: ...

    @overload
    def process(
        self: Keyed[Flow[I, Any, M], T, K],
        fn: Callable[[T, KeyState[K, S]], Iterable[U] | None],
        *,
        on_timer: Callable[[K, KeyState[K, S], Timer], Iterable[U] | None] | None = None,
        ttl: int | timedelta | None = None,
        ttl_time: TimeDomain = "event",
        timestamp: Callable[[T], int] | str | int | None = None,
        store: StateStore | None = None,
        state_type: Any = None,
        cache_size: int = 100_000,
        name: str | None = None,
    ) -> Flow[I, U, M]: ...

    def process(
        self,
        fn: Callable[[Any, Any], Any],
        *,
        on_timer: Callable[[Any, Any, Any], Any] | None = None,
        ttl: int | timedelta | None = None,
        ttl_time: TimeDomain = "event",
        timestamp: Callable[[T], int] | str | int | None = None,
        store: StateStore | None = None,
        state_type: Any = None,
        cache_size: int = 100_000,
        name: str | None = None,
    ) -> Any:
        """``stateful_map`` whose ``fn`` and ``on_timer`` return any number of outputs (an iterable, or None).

        Same state handle, timers, TTL and store as ``stateful_map``; every item
        of what the functions return is emitted in order (a generator function
        works). Flink's ``KeyedProcessFunction``.

        >>> def alert_if_quiet(e, state):
        ...     state.timer_at(e.ts + 60_000)   # replaces the key's pending timer
        ...     return ()
        >>> def on_timer(key, state, timer):
        ...     yield ("quiet", key, timer.time)
        >>> keyed.process(alert_if_quiet, on_timer=on_timer)
        """
        return then_checked(
            self._parent,
            self._stateful(fn, on_timer, ttl, ttl_time, timestamp, store, state_type, cache_size, name, True),
        )

    def _stateful(
        self,
        fn: Callable[[Any, Any], Any],
        on_timer: Callable[[Any, Any, Any], Any] | None,
        ttl: int | timedelta | None,
        ttl_time: TimeDomain,
        timestamp: Callable[[T], int] | str | int | None,
        store: StateStore | None,
        state_type: Any,
        cache_size: int,
        name: str | None,
        many: bool,
    ) -> Any:
        from .._state.operators import StatefulMap

        what = "process" if many else "stateful_map"
        if ttl_time not in ("event", "processing"):
            raise ValueError(f"{what}(ttl_time=) is 'event' or 'processing', got {ttl_time!r}")
        ttl_ms = None if ttl is None else event_ms(ttl, f"{what}(ttl)", positive=True)
        ts_of = timestamp_of(self._parent, timestamp, what) if ttl_ms is not None and ttl_time == "event" else None
        return StatefulMap(
            self._key, fn, default_store(self._parent, store, what), state_type, cache_size, name,
            on_timer, ttl_ms, ttl_time == "event", ts_of, many,
        )  # fmt: skip

    def dedupe(
        self,
        within: int | timedelta,
        *,
        store: StateStore | None = None,
        timestamp: Callable[[T], int] | None = None,
        name: str | None = None,
    ) -> B:
        """``dedupe(key_fn, within)`` with this stream's key function."""
        return then_checked(self._parent, dedupe_stage(self._parent, self._key, within, store, timestamp, name))  # type: ignore[no-any-return]

    @overload
    def match(
        self: Keyed[Source[Any, M], T, K],
        pattern: Pattern[T],
        *,
        timeouts: Sink[Timeout[K, T], Any] | None = None,
        timeouts_mat: None = None,
        time: Literal["event", "processing"] = "event",
        store: StateStore | None = None,
        event_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Source[Match[K, T], M]: ...
    @overload
    def match(
        self: Keyed[Flow[I, Any, M], T, K],
        pattern: Pattern[T],
        *,
        timeouts: Sink[Timeout[K, T], Any] | None = None,
        timeouts_mat: None = None,
        time: Literal["event", "processing"] = "event",
        store: StateStore | None = None,
        event_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Flow[I, Match[K, T], M]: ...
    @overload
    def match(
        self: Keyed[Source[Any, M], T, K],
        pattern: Pattern[T],
        *,
        timeouts: Sink[Timeout[K, T], M2],
        timeouts_mat: Callable[[M, M2], M3],
        time: Literal["event", "processing"] = "event",
        store: StateStore | None = None,
        event_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Source[Match[K, T], M3]: ...
    @overload
    def match(
        self: Keyed[Flow[I, Any, M], T, K],
        pattern: Pattern[T],
        *,
        timeouts: Sink[Timeout[K, T], M2],
        timeouts_mat: Callable[[M, M2], M3],
        time: Literal["event", "processing"] = "event",
        store: StateStore | None = None,
        event_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Flow[I, Match[K, T], M3]: ...
    def match(
        self,
        pattern: Pattern[Any],
        *,
        timeouts: Sink[Any, Any] | None = None,
        timeouts_mat: Callable[[Any, Any], Any] | None = None,
        time: Literal["event", "processing"] = "event",
        store: StateStore | None = None,
        event_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Any:
        """Match ``pattern`` (``streamlib.cep.Pattern``) per key; emit a :class:`~streamlib.cep.Match` per match.

        Event time (default): events are matched in timestamp order as the
        watermark passes them (from ``with_timestamps`` upstream, or
        ``timestamp=``); windows (``within``) close on the watermark, so
        ``not_followed_by`` fires with no new event. ``time="processing"``
        stamps events with the run's clock and closes windows on its timers.
        ``timeouts``: a Sink for :class:`~streamlib.cep.Timeout` (partial
        matches whose window closed); ``timeouts_mat`` combines materialized
        values as in ``to_mat``. ``store``: where partial matches are
        checkpointed (default: an upstream ``checkpointed``'s store);
        ``event_type`` decodes restored events (msgspec). Emits when a match
        completes; backpressures when downstream does; completes when upstream
        does, after closing every window (event time). See docs/cep.md.

        >>> p = Pattern.begin("a").where(lambda e: e.kind == "a").followed_by("b").where(lambda e: e.kind == "b")
        >>> source.with_timestamps(lambda e: e.ts).key_by(lambda e: e.user).match(p.within(60_000))
        """
        from .._ops.junctions import divert_to
        from ..cep._stage import MatchStage, is_timeout
        from .sink import Sink as _Sink

        if timeouts is not None and not isinstance(timeouts, _Sink):
            raise TypeError(f"match(timeouts=) takes a Sink of Timeout records, got {timeouts!r}")
        if timeouts_mat is not None and timeouts is None:
            raise ValueError("match(timeouts_mat=) combines the timeouts Sink's materialized value: pass timeouts= too")
        ts_of = timestamp_of(self._parent, timestamp, "match") if time == "event" else None
        match_store = default_store(self._parent, store, "match")
        stage = MatchStage(pattern, self._key, ts_of, match_store, timeouts is not None, time, event_type, name)
        out = then_checked(self._parent, stage)
        if timeouts is not None:
            out = out._via_module(divert_to(timeouts._module, is_timeout), timeouts_mat or Keep.left)
        return out

    # -- tables --

    @overload
    def to_table(
        self: Keyed[Source[Any, Any], T, K],
        value: None = None,
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[K, T]: ...
    @overload
    def to_table(
        self: Keyed[Source[Any, Any], T, K],
        value: Callable[[T], V | None],
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[K, V]: ...
    @overload
    def to_table(
        self: Keyed[Source[Any, Any], T, K],
        value: str | int,
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[K, Any]: ...
    def to_table(
        self,
        value: Callable[[Any], Any] | str | int | None = None,
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[Any], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[Any, Any]:
        """The table of the latest ``value(element)`` (default: the element) per key; a None value deletes the key.

        See :class:`~streamlib.Table` (``history``, ``store``, ``value_type``
        and ``timestamp`` as in ``Table.from_source``). Needs a Source.

        >>> prices = Source.from_iterable(updates).key_by("sku").to_table(value="price")
        """
        from .._table.table import table_of

        return table_of(
            self._parent, self._key, None if value is None else extractor(value, "to_table(value=)"),
            history=history, store=store, value_type=value_type, timestamp=timestamp, name=name, what="to_table",
        )  # fmt: skip

    def aggregate(
        self: Keyed[Source[Any, Any], T, K],
        initial: A | Callable[[], A],
        add: Callable[[A, T], A | None],
        *,
        store: StateStore | None = None,
        acc_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[K, A]:
        """The table of a running aggregate per key: ``add(acc, element)`` from ``initial``.

        No window: each element updates its key's row, and the table emits the
        change. ``initial`` is a value (shallow-copied per key) or a function
        making one; ``add`` must return a new accumulator rather than modify
        ``acc`` (the change carries the old one), and returning None deletes
        the key. ``acc_type`` decodes accumulators restored from a store.

        >>> totals = orders.key_by("customer").aggregate(0, lambda total, o: total + o.amount)
        """
        from .._table.table import table_of

        if not callable(add):
            raise TypeError(f"aggregate(initial, add) needs a function add(acc, element), got {add!r}")
        return table_of(
            self._parent, self._key, None, history=None, store=store, value_type=acc_type, timestamp=timestamp,
            name=name, what="aggregate", aggregate=(initial, add),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"Keyed({self._parent!r})"


class Windowed(Generic[B, T, K]):
    """A keyed, windowed blueprint; an aggregation method turns it into a stream of results."""

    __slots__ = (
        "_parent", "_key", "_assigner", "_ts", "_store", "_lateness", "_emit", "_late", "_name", "_late_mat",
    )  # fmt: skip

    def __init__(
        self,
        parent: B,
        key: Callable[[T], K],
        assigner: WindowAssigner,
        ts_of: Callable[[T], int] | None,
        store: StateStore | None,
        lateness: int,
        emit: EmitMode,
        late: Any,
        name: str | None,
        late_mat: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        self._parent = parent
        self._key = key
        self._assigner = assigner
        self._ts = ts_of
        self._store = store
        self._lateness = lateness
        self._emit = emit
        self._late = late
        self._name = name
        self._late_mat = late_mat

    def _agg(self, agg: _aggs.Aggregation) -> Any:
        from .._time.window_op import WindowStage

        late_sink = None if isinstance(self._late, str) else self._late
        stage = WindowStage(
            self._assigner, agg, self._key, self._ts, self._store, self._lateness, self._emit,
            "fail" if self._late == "fail" else "emit", self._name,
        )  # fmt: skip
        out = self._parent._then(stage)  # type: ignore[attr-defined]
        if late_sink is not None:
            from .._ops.junctions import divert_to

            out = out._via_module(divert_to(late_sink._module, is_late), self._late_mat or Keep.left)
        return out

    @overload
    def count(self: Windowed[Source[Any, M], T, K]) -> Source[WindowResult[K, int], M]: ...
    @overload
    def count(self: Windowed[Flow[I, Any, M], T, K]) -> Flow[I, WindowResult[K, int], M]: ...
    def count(self) -> Any:
        """The number of elements per window.

        Emits per the window's ``emit`` mode; fused with its neighbours; one
        dict update per element.

        >>> .key_by(k).window(TumblingWindows(60_000)).count()
        """
        return self._agg(_aggs.count())

    @overload
    def sum(self: Windowed[Source[Any, M], T, K], value: Callable[[T], V]) -> Source[WindowResult[K, V], M]: ...
    @overload
    def sum(self: Windowed[Flow[I, Any, M], T, K], value: Callable[[T], V]) -> Flow[I, WindowResult[K, V], M]: ...
    @overload
    def sum(self: Windowed[Source[Any, M], T, K], value: str | int) -> Source[WindowResult[K, Any], M]: ...
    @overload
    def sum(self: Windowed[Flow[I, Any, M], T, K], value: str | int) -> Flow[I, WindowResult[K, Any], M]: ...
    def sum(self, value: Callable[[Any], Any] | str | int) -> Any:
        """The sum of ``value(element)`` per window.

        ``value`` may be a field instead of a function, as in ``key_by``: a
        name (attribute, or key of a mapping), an index, ``attrgetter`` or
        ``itemgetter``; so may the values of ``min``, ``max``, ``mean`` and
        ``collect``.

        >>> .key_by(lambda e: e.key).window(TumblingWindows(10_000)).sum(lambda e: e.value)
        """
        return self._agg(_aggs.sum_(extractor(value, "sum(value)")))

    @overload
    def min(self: Windowed[Source[Any, M], T, K], value: Callable[[T], V]) -> Source[WindowResult[K, V], M]: ...
    @overload
    def min(self: Windowed[Flow[I, Any, M], T, K], value: Callable[[T], V]) -> Flow[I, WindowResult[K, V], M]: ...
    @overload
    def min(self: Windowed[Source[Any, M], T, K], value: str | int) -> Source[WindowResult[K, Any], M]: ...
    @overload
    def min(self: Windowed[Flow[I, Any, M], T, K], value: str | int) -> Flow[I, WindowResult[K, Any], M]: ...
    def min(self, value: Callable[[Any], Any] | str | int) -> Any:
        """The smallest ``value(element)`` per window."""
        return self._agg(_aggs.min_(extractor(value, "min(value)")))

    @overload
    def max(self: Windowed[Source[Any, M], T, K], value: Callable[[T], V]) -> Source[WindowResult[K, V], M]: ...
    @overload
    def max(self: Windowed[Flow[I, Any, M], T, K], value: Callable[[T], V]) -> Flow[I, WindowResult[K, V], M]: ...
    @overload
    def max(self: Windowed[Source[Any, M], T, K], value: str | int) -> Source[WindowResult[K, Any], M]: ...
    @overload
    def max(self: Windowed[Flow[I, Any, M], T, K], value: str | int) -> Flow[I, WindowResult[K, Any], M]: ...
    def max(self, value: Callable[[Any], Any] | str | int) -> Any:
        """The largest ``value(element)`` per window."""
        return self._agg(_aggs.max_(extractor(value, "max(value)")))

    @overload
    def mean(
        self: Windowed[Source[Any, M], T, K], value: Callable[[T], float] | str | int
    ) -> Source[WindowResult[K, float], M]: ...
    @overload
    def mean(
        self: Windowed[Flow[I, Any, M], T, K], value: Callable[[T], float] | str | int
    ) -> Flow[I, WindowResult[K, float], M]: ...
    def mean(self, value: Callable[[Any], Any] | str | int) -> Any:
        """The arithmetic mean of ``value(element)`` per window."""
        return self._agg(_aggs.mean(extractor(value, "mean(value)")))

    @overload
    def collect(
        self: Windowed[Source[Any, M], T, K], value: Callable[[T], V] | None = None
    ) -> Source[WindowResult[K, list[V]], M]: ...
    @overload
    def collect(
        self: Windowed[Flow[I, Any, M], T, K], value: Callable[[T], V] | None = None
    ) -> Flow[I, WindowResult[K, list[V]], M]: ...
    @overload
    def collect(self: Windowed[Source[Any, M], T, K], value: str | int) -> Source[WindowResult[K, list[Any]], M]: ...
    @overload
    def collect(self: Windowed[Flow[I, Any, M], T, K], value: str | int) -> Flow[I, WindowResult[K, list[Any]], M]: ...
    def collect(self, value: Callable[[Any], Any] | str | int | None = None) -> Any:
        """The list of ``value(element)`` (default: the elements) per window, in arrival order."""
        return self._agg(_aggs.collect(None if value is None else extractor(value, "collect(value)")))

    @overload
    def aggregate(
        self: Windowed[Source[Any, M], T, K],
        initial: A | Callable[[], A],
        add: Callable[[A, T], A],
        merge: Callable[[A, A], A] | None = None,
        result: Callable[[A], V] | None = None,
        acc_type: Any = None,
    ) -> Source[WindowResult[K, Any], M]: ...
    @overload
    def aggregate(
        self: Windowed[Flow[I, Any, M], T, K],
        initial: A | Callable[[], A],
        add: Callable[[A, T], A],
        merge: Callable[[A, A], A] | None = None,
        result: Callable[[A], V] | None = None,
        acc_type: Any = None,
    ) -> Flow[I, WindowResult[K, Any], M]: ...
    def aggregate(
        self,
        initial: Any,
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any] | None = None,
        result: Callable[[Any], Any] | None = None,
        acc_type: Any = None,
    ) -> Any:
        """A user aggregation: ``add(acc, element)`` from ``initial``, ``result(acc)`` emitted.

        ``initial`` is a value (shallow-copied for each window) or a function
        making one. ``merge(a, b)`` combines two accumulators (may modify ``a``,
        not ``b``); session and sliding windows need it. ``acc_type`` decodes
        accumulators restored from a store (msgspec types).

        >>> .window(SessionWindows(30_000)).aggregate(0, lambda n, e: n + e.clicks, merge=operator.add)
        """
        return self._agg(_aggs.aggregate(initial, add, merge, result, acc_type))

    def __repr__(self) -> str:
        return f"Windowed({self._assigner!r}, {self._parent!r})"
