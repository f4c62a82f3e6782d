"""Source: a blueprint with one output."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .._ops import simple as _simple
from .._ops import sources as _sources
from .._ops.chain import (
    COLLECT,
    DROP,
    DROP_WHILE,
    FILTER,
    FILTER_NOT,
    MAP,
    MAP_CONCAT,
    SCAN,
    TAKE,
    TAKE_WHILE,
    ZIP_WITH_INDEX,
    ChainStage,
)
from .._ops.sinks import _NOTHING
from ..stage import Stage
from ._common import OverflowStrategy, _count, _expect, _seconds
from .keep import Keep
from .module import Module

if TYPE_CHECKING:
    from .._join.windows import JoinWindows
    from .._ops.supervision import Decider, Directive
    from .._state.store import StateStore
    from .._table.table import Table
    from .._table.view import TableView
    from .._time.results import LateRecord
    from .flow import Flow
    from .keyed import Keyed
    from .runnable import RunnableGraph
    from .sink import Sink
    from .subflow import SubFlow

Out = TypeVar("Out")
Mat = TypeVar("Mat")
T = TypeVar("T")
M2 = TypeVar("M2")
M3 = TypeVar("M3")
K = TypeVar("K")
R = TypeVar("R")


class Source(Generic[Out, Mat]):
    """A reusable description of where elements come from and what happens to them.

    Nothing runs until the Source is connected to a Sink and run; each run is
    independent.

    >>> total = await Source.from_iterable(range(10)).map(lambda x: x * 3).run_with(Sink.fold(0, operator.add))
    """

    __slots__ = ("_module",)

    def __init__(self, module: Module) -> None:
        self._module = module

    # -- factories ----------------------------------------------------------

    @staticmethod
    def _of_stage(stage: Stage) -> Source[Any, Any]:
        return Source(Module.of(stage))

    @staticmethod
    def from_iterable(iterable: Iterable[T]) -> Source[T, None]:
        """Emit the elements of ``iterable`` (iterated afresh at each run), then complete.

        Emits as fast as downstream takes, in chunks.
        """
        return Source(Module.of(_sources.IterableSource(iterable)))

    @staticmethod
    def from_iterator(factory: Callable[[], Iterable[T]]) -> Source[T, None]:
        """Emit the elements of ``factory()``, called once per run (e.g. a generator function)."""
        return Source(Module.of(_sources.IteratorFactorySource(factory)))

    @staticmethod
    def from_async_iterable(iterable: AsyncIterable[T] | Callable[[], AsyncIterable[T]]) -> Source[T, None]:
        """Emit the elements of an async iterable (or of ``factory()`` called per run).

        Emits each element when it arrives; gathers a chunk while backpressured.
        """
        return Source(Module.of(_sources.AsyncIterableSource(iterable)))

    @staticmethod
    def single(element: T) -> Source[T, None]:
        """Emit one element, then complete."""
        return Source(Module.of(_sources.IterableSource((element,))))

    @staticmethod
    def empty() -> Source[Any, None]:
        """Complete at once without emitting."""
        return Source(Module.of(_sources.IterableSource(())))

    @staticmethod
    def failed(error: BaseException) -> Source[Any, None]:
        """Fail at once with ``error``."""
        return Source(Module.of(_sources.FailedSource(error)))

    @staticmethod
    def repeat(element: T) -> Source[T, None]:
        """Emit ``element`` forever (combine with ``take``)."""
        return Source(Module.of(_sources.RepeatSource(element)))

    @staticmethod
    def from_callable(create: Callable[[], T]) -> Source[T, None]:
        """Emit the one element ``create()`` returns, called when the run starts."""
        return Source.from_iterator(lambda: (create(),))

    @staticmethod
    def unfold(seed: T, f: Callable[[T], tuple[T, Out] | None]) -> Source[Out, None]:
        """Emit elements from a state machine: ``f(state) -> (next_state, element)``, None ends.

        >>> await Source.unfold(0, lambda s: (s + 1, s) if s < 3 else None).run_with(Sink.collect())
        [0, 1, 2]
        """
        return Source(Module.of(_sources.UnfoldSource(seed, f)))

    @staticmethod
    def tick(interval: float | timedelta, value: T, initial_delay: float | timedelta = 0.0) -> Source[T, None]:
        """Emit ``value`` every ``interval`` seconds (after ``initial_delay``), forever.

        A tick that downstream cannot take at once is dropped, not queued.
        """
        return Source(Module.of(_sources.TickSource(_seconds(initial_delay), _seconds(interval), value)))

    @overload
    @staticmethod
    def queue(capacity: int) -> Source[Any, _sources.SourceQueue[Any]]: ...

    @overload
    @staticmethod
    def queue(capacity: int, *, of: type[T]) -> Source[T, _sources.SourceQueue[T]]: ...

    @staticmethod
    def queue(capacity: int, *, of: Any = None) -> Source[Any, _sources.SourceQueue[Any]]:
        """A source fed from outside: materializes a :class:`SourceQueue`.

        ``await queue.offer(x)`` waits while ``capacity`` elements are buffered.
        ``of`` names the element type for the type checker (``Source[T,
        SourceQueue[T]]``, so ``offer`` takes only ``T``); elements are not
        checked at run time.

        >>> queue, done = Source.queue(100, of=Order).map(f).to_mat(Sink.foreach(g), Keep.both).run()
        >>> await queue.offer(Order(1)); queue.complete(); await done
        """
        return Source(Module.of(_sources.QueueSource(capacity)))

    @staticmethod
    def from_publisher(publisher: Any) -> Source[Any, None]:
        """Emit what an async publisher produces: an async iterable, a factory of one, or ``async def p(emit)``.

        With ``async def publish(emit)``, each ``await emit(x)`` emits ``x``,
        waiting while downstream is full and raising once downstream cancelled;
        the stream completes when ``publish`` returns and fails when it raises.
        An async iterable is read as it yields (gathering a chunk while
        backpressured) and closed when downstream cancels.

        >>> async def publish(emit):
        ...     async for msg in websocket:
        ...         await emit(msg)
        >>> await Source.from_publisher(publish).take(10).run_with(Sink.collect())
        """
        from .._io.publisher import PushPublisherSource, is_push_publisher

        if is_push_publisher(publisher):
            return Source(Module.of(PushPublisherSource(publisher)))
        if not (hasattr(publisher, "__aiter__") or callable(publisher)):
            raise TypeError(f"from_publisher needs an async iterable, a factory of one or async def p(emit), got {publisher!r}")
        stage = _sources.AsyncIterableSource(publisher)
        stage.name = "from_publisher"
        return Source(Module.of(stage))

    # -- composition --------------------------------------------------------

    def _then(self, stage: Stage) -> Any:
        return Source(self._module.compose(Module.of(stage), Keep.left))

    def _via_module(self, module: Module, combine: Callable[[Any, Any], Any]) -> Any:
        return Source(self._module.compose(module, combine))

    def via(self, flow: Flow[Out, T, Any]) -> Source[T, Mat]:
        """Append ``flow``; keeps this Source's materialized value."""
        from .flow import Flow

        _expect(flow, Flow, "via")
        return Source(self._module.compose(flow._module, Keep.left))

    def via_mat(self, flow: Flow[Out, T, M2], combine: Callable[[Mat, M2], M3]) -> Source[T, M3]:
        """Append ``flow``, combining materialized values with ``combine`` (see ``Keep``)."""
        from .flow import Flow

        _expect(flow, Flow, "via_mat")
        return Source(self._module.compose(flow._module, combine))

    def to(self, sink: Sink[Out, Any]) -> RunnableGraph[Mat]:
        """Connect to ``sink``; the graph keeps this Source's materialized value."""
        from .runnable import RunnableGraph
        from .sink import Sink

        _expect(sink, Sink, "to")
        return RunnableGraph(self._module.compose(sink._module, Keep.left))

    def to_mat(self, sink: Sink[Out, M2], combine: Callable[[Mat, M2], M3]) -> RunnableGraph[M3]:
        """Connect to ``sink``, combining materialized values with ``combine``."""
        from .runnable import RunnableGraph
        from .sink import Sink

        _expect(sink, Sink, "to_mat")
        return RunnableGraph(self._module.compose(sink._module, combine))

    def run_with(self, sink: Sink[Out, M2]) -> M2:
        """Connect to ``sink``, run, and return the sink's materialized value.

        >>> await Source.from_iterable([1, 2, 3]).run_with(Sink.fold(0, operator.add))
        6
        """
        return self.to_mat(sink, Keep.right).run()

    def map_materialized_value(self, f: Callable[[Mat], M2]) -> Source[Out, M2]:
        """Transform the materialized value with ``f`` at each run."""
        return Source(self._module.map_mat(f))

    def describe(self, format: str = "mermaid") -> str:
        """This blueprint as Mermaid (or ``"dot"``) text."""
        from .describe import describe

        return describe(self._module, format)

    def __repr__(self) -> str:
        return f"Source({' -> '.join(s.stage_name() for s in self._module.stages)})"

    # --- operators (generated by scripts/gen_operators.py from scripts/operators.tmpl) ---
    def map(self, f: Callable[[Out], T]) -> Source[T, Mat]:
        """Apply ``f`` to each element.

        Emits when ``f`` returned; backpressures when downstream does; completes
        when upstream does. Element-wise: fused with its neighbours, one output per
        input, chunk boundaries kept.

        >>> await Source.from_iterable([1, 2]).map(str).run_with(Sink.collect())
        ['1', '2']
        """
        return self._then(ChainStage(MAP, f))

    def filter(self, p: Callable[[Out], object]) -> Source[Out, Mat]:
        """Keep the elements for which ``p`` is true.

        Emits when ``p`` holds; backpressures when downstream does; completes
        when upstream does.

        >>> await Source.from_iterable(range(5)).filter(lambda x: x % 2).run_with(Sink.collect())
        [1, 3]
        """
        return self._then(ChainStage(FILTER, p))

    def filter_not(self, p: Callable[[Out], object]) -> Source[Out, Mat]:
        """Drop the elements for which ``p`` is true (the opposite of ``filter``)."""
        return self._then(ChainStage(FILTER_NOT, p))

    def map_concat(self, f: Callable[[Out], Iterable[T]]) -> Source[T, Mat]:
        """Replace each element by the elements of the iterable ``f`` returns, in order.

        Emits when ``f``'s iterable yields; completes when upstream does and all
        is emitted. Output chunks may be larger than input chunks (split at the
        channel).

        >>> await Source.single(2).map_concat(lambda x: [x] * x).run_with(Sink.collect())
        [2, 2]
        """
        return self._then(ChainStage(MAP_CONCAT, f))

    def collect(self, f: Callable[[Out], T | None]) -> Source[T, Mat]:
        """Map with a partial function: ``f`` returning None drops the element.

        >>> await Source.from_iterable([1, 2, 3]).collect(lambda x: x * 10 if x != 2 else None).run_with(Sink.collect())
        [10, 30]
        """
        return self._then(ChainStage(COLLECT, f))

    def take(self, n: int) -> Source[Out, Mat]:
        """Pass the first ``n`` elements, then complete and cancel upstream.

        Completes when ``n`` elements passed or upstream completed.
        """
        return self._then(ChainStage(TAKE, None, _count(n, "take")))

    def take_while(self, p: Callable[[Out], object]) -> Source[Out, Mat]:
        """Pass elements while ``p`` holds; complete at the first that fails it (not emitted)."""
        return self._then(ChainStage(TAKE_WHILE, p))

    def drop(self, n: int) -> Source[Out, Mat]:
        """Skip the first ``n`` elements, then pass the rest."""
        return self._then(ChainStage(DROP, None, _count(n, "drop")))

    def drop_while(self, p: Callable[[Out], object]) -> Source[Out, Mat]:
        """Skip elements while ``p`` holds; from the first that fails it on, pass everything."""
        return self._then(ChainStage(DROP_WHILE, p))

    def scan(self, zero: T, f: Callable[[T, Out], T]) -> Source[T, Mat]:
        """Emit ``zero``, then each running result of ``f(acc, element)``.

        Emits ``zero`` at start and one result per element; completes when
        upstream does.

        >>> await Source.from_iterable([1, 2, 3]).scan(0, operator.add).run_with(Sink.collect())
        [0, 1, 3, 6]
        """
        return self._then(ChainStage(SCAN, f, zero))

    def zip_with_index(self) -> Source[tuple[Out, int], Mat]:
        """Pair each element with its position: ``(element, index)`` from 0."""
        return self._then(ChainStage(ZIP_WITH_INDEX))

    def fold(self, zero: T, f: Callable[[T, Out], T]) -> Source[T, Mat]:
        """Emit one element at completion: ``f`` folded over the stream from ``zero``.

        Emits when upstream completes; backpressures never (it consumes as it goes).
        """
        return self._then(_simple.fold(zero, f))

    def reduce(self, f: Callable[[Out, Out], Out]) -> Source[Out, Mat]:
        """Like ``fold`` seeded with the first element; fails with ``EmptyStreamError`` on an empty stream."""
        return self._then(_simple.reduce_stage(f))

    def grouped(self, n: int) -> Source[list[Out], Mat]:
        """Emit lists of ``n`` elements; the last list may be shorter.

        Emits when ``n`` elements are gathered or upstream completes.

        >>> await Source.from_iterable(range(5)).grouped(2).run_with(Sink.collect())
        [[0, 1], [2, 3], [4]]
        """
        return self._then(_simple.grouped(n))

    def sliding(self, n: int, step: int = 1) -> Source[list[Out], Mat]:
        """Emit windows of ``n`` elements starting every ``step`` elements.

        A shorter last window is emitted only when it holds elements no earlier
        window had (the semantics of Scala's ``sliding``).
        """
        return self._then(_simple.sliding(n, step))

    def intersperse(self, inject: Out, start: Out = _NOTHING, end: Out = _NOTHING) -> Source[Out, Mat]:
        """Insert ``inject`` between elements, and ``start``/``end`` around them if given.

        ``start`` and ``end`` are emitted even for an empty stream.
        """
        return self._then(_simple.intersperse(inject, start, end))

    def async_boundary(self) -> Source[Out, Mat]:
        """Put the stages before and after this point on different tasks, joined by a channel."""
        return self._then(_simple.async_boundary())

    def grouped_within(self, n: int, seconds: float | timedelta) -> Source[list[Out], Mat]:
        """Emit lists of up to ``n`` elements, or what has arrived when ``seconds`` pass.

        Emits when ``n`` elements are gathered, or when ``seconds`` have passed
        since the last emission (or the start) and at least one element waits
        (never an empty list); the interval restarts at each emission. A
        watermark or barrier first emits the elements before it. Backpressures
        when downstream does. Completes when upstream does, emitting what waits.
        Fused with its neighbours (a timer of the island, no extra task); one
        input chunk may yield several lists.

        >>> await Source.from_iterable(range(5)).grouped_within(2, 1.0).run_with(Sink.collect())
        [[0, 1], [2, 3], [4]]
        """
        from .._ops import timed

        return self._then(timed.GroupedWithin(n, _seconds(seconds)))

    def throttle(self, elements: int, per: float | timedelta, burst: int = 0) -> Source[Out, Mat]:
        """Pass at most ``elements`` per ``per`` seconds, shaping the stream (never dropping).

        A token bucket: one token every ``per / elements`` seconds, refilled
        continuously, holding up to ``max(burst, 1)`` tokens and full at the
        start; each element takes one. Emits when a token is available.
        Backpressures when no token is (and when downstream does). Completes
        when upstream does and every element is passed. Passes as much of a
        chunk as there are tokens at once, then waits for the next token.

        >>> # 0, 1, 2 at once (burst 3), then one every 0.5 s
        >>> await Source.from_iterable(range(5)).throttle(2, 1.0, burst=3).run_with(Sink.collect())
        [0, 1, 2, 3, 4]
        """
        from .._ops import timed

        return self._then(timed.Throttle(elements, _seconds(per), burst))

    def delay(self, seconds: float | timedelta) -> Source[Out, Mat]:
        """Emit each element ``seconds`` after it arrived, order kept.

        Emits when the oldest waiting element's time has come. Backpressures
        when downstream does, or when a channel's worth of elements (4096 by
        default) is waiting. Completes when upstream does and every element was
        emitted. Chunks stay whole (a chunk arrives, and leaves, at one instant);
        signals keep their place.

        >>> await Source.from_iterable([1, 2]).delay(0.5).run_with(Sink.collect())
        [1, 2]
        """
        from .._ops import timed

        return self._then(timed.Delay(_seconds(seconds)))

    def map_async(self, parallelism: int, f: Callable[[Out], Awaitable[T]]) -> Source[T, Mat]:
        """Apply the coroutine function ``f`` with up to ``parallelism`` calls in flight; order kept.

        Emits when the oldest call has finished: every finished result at the
        head goes as one chunk, without waiting for more. Backpressures when
        ``parallelism`` calls are started and not yet emitted. Completes when
        upstream does and every result was emitted. Fails when a call raises
        (with that exception), cancelling the calls in flight; cancelling the
        stream cancels them too.

        >>> async def double(x): return x * 2
        >>> await Source.from_iterable([1, 2, 3]).map_async(4, double).run_with(Sink.collect())
        [2, 4, 6]
        """
        from .._ops import concurrent

        return self._then(concurrent.MapAsync(parallelism, f, ordered=True))

    def map_async_unordered(self, parallelism: int, f: Callable[[Out], Awaitable[T]]) -> Source[T, Mat]:
        """Like ``map_async`` but emits each result as soon as its call finishes, in any order.

        Emits when any call has finished (all finished results as one chunk).
        A watermark or barrier waits until every call started before it is
        emitted. Backpressures, completes and fails as ``map_async``.

        >>> await Source.from_iterable([3, 1, 2]).map_async_unordered(3, sleep_then_return).run_with(Sink.collect())
        [1, 2, 3]
        """
        from .._ops import concurrent

        return self._then(concurrent.MapAsync(parallelism, f, ordered=False))

    def buffer(self, size: int, overflow: OverflowStrategy = "backpressure") -> Source[Out, Mat]:
        """Hold up to ``size`` elements while downstream is slower than upstream.

        ``overflow`` says what happens when an element arrives and the buffer
        is full: ``"backpressure"`` (stop taking input), ``"drop_head"`` (drop
        the oldest buffered), ``"drop_tail"`` (drop the newest buffered),
        ``"drop_new"`` (drop the arriving one) or ``"fail"`` (fail with
        ``BufferOverflowError``). Dropped counts are logged at debug level.
        Emits when downstream has room. Backpressures only with
        ``"backpressure"``. Completes when upstream does and the buffer is
        empty. Chunks pass whole unless a drop trims them. Holds ``size``
        elements on top of the channel to the next stage.

        >>> await Source.from_iterable(range(3)).buffer(100, "drop_head").run_with(Sink.collect())
        [0, 1, 2]
        """
        from .._ops import concurrent

        return self._then(concurrent.Buffer(size, overflow))

    def also_to(self, sink: Sink[Out, Any]) -> Source[Out, Mat]:
        """Send each element to ``sink`` too; as slow as the slower of the two."""
        from .._ops.junctions import also_to

        return self._via_module(also_to(sink._module), Keep.left)

    def divert_to(self, sink: Sink[Out, Any], when: Callable[[Out], object]) -> Source[Out, Mat]:
        """Send the elements for which ``when`` holds to ``sink`` instead of downstream."""
        from .._ops.junctions import divert_to

        return self._via_module(divert_to(sink._module, when), Keep.left)

    def watch_termination(self) -> Source[Out, asyncio.Future[None]]:
        """Pass elements through; materialize a future completed when the stream ends here.

        The future succeeds on completion or downstream cancellation and fails
        with the stream's error.
        """
        return self._via_module(Module.of(_simple.watch_termination()), Keep.right)

    # -- event time, keys and state --

    def with_timestamps(
        self,
        fn: Callable[[Out], int] | str | int,
        max_out_of_orderness: int | timedelta = 0,
        idle_timeout: float | timedelta | None = None,
        *,
        bounded: bool = False,
    ) -> Source[Out, Mat]:
        """Give each element an event timestamp (int ms since the epoch) and emit watermarks.

        Elements pass unchanged. Emits ``Watermark(max_ts - max_out_of_orderness)``
        after each chunk that raised the largest timestamp seen (watermarks only
        rise; upstream watermarks are dropped). ``max_out_of_orderness`` is int ms
        or a timedelta. With ``idle_timeout`` (seconds or timedelta of processing
        time), a quiet input advances the watermark by the time it has been quiet,
        so windows close without heartbeat messages. Windows and ``dedupe``
        downstream use ``fn`` as their event time. ``fn`` may be a field
        instead: a name (``"ts"``: ``e["ts"]`` for mappings, else ``e.ts``), an
        index (``0``: ``e[0]``), or ``operator.attrgetter`` / ``itemgetter``;
        the compiled kernels read a field without a Python call. With
        ``bounded=True``, for a finite input in any order (a file), no watermark
        is emitted: windows close only at the end of the stream, which gives the
        batch result with no bound to guess and nothing late.

        >>> Source.from_iterable(events).with_timestamps(lambda e: e.ts, max_out_of_orderness=timedelta(seconds=5))
        """
        from .keyed import with_timestamps_stage

        return self._then(with_timestamps_stage(fn, max_out_of_orderness, idle_timeout, bounded))

    @overload
    def key_by(self, key: Callable[[Out], K]) -> Keyed[Source[Out, Mat], Out, K]: ...
    @overload
    def key_by(self, key: str | int) -> Keyed[Source[Out, Mat], Out, Any]: ...
    def key_by(self, key: Callable[[Out], Any] | str | int) -> Keyed[Source[Out, Mat], Out, Any]:
        """Key the stream by ``key(element)`` for windows and per-key state.

        Adds no stage by itself: ``.window(...)``, ``.stateful_map(...)`` and
        ``.dedupe(...)`` on the result do the work, per key. ``key`` may be a
        field instead of a function: a name (``"user"``: ``e["user"]`` for
        mappings, else ``e.user``, decided per element type), an index (``1``:
        ``e[1]``), or ``operator.attrgetter`` / ``itemgetter``; the compiled
        window kernels read a field without a Python call.

        >>> Source.from_iterable(events).with_timestamps(ts).key_by(lambda e: e.user).window(TumblingWindows(60_000)).count()
        """
        from .keyed import Keyed

        return Keyed(self, key)

    def dedupe(
        self,
        key: Callable[[Out], Any],
        within: int | timedelta,
        *,
        store: StateStore | None = None,
        timestamp: Callable[[Out], int] | None = None,
        name: str | None = None,
    ) -> Source[Out, Mat]:
        """Drop an element when one with the same ``key`` passed less than ``within`` before or after it.

        ``within`` is event time (int ms or timedelta), from an upstream
        ``with_timestamps`` or ``timestamp=``; without either, the arrival time
        on the wall clock. Emits first occurrences; backpressures when downstream
        does; keys are forgotten once the watermark is ``within`` past them. With
        a store the seen keys are checkpointed and restored.

        >>> await Source.from_iterable([1, 2, 1]).dedupe(lambda x: x, within=timedelta(hours=1)).run_with(Sink.collect())
        [1, 2]
        """
        from .keyed import dedupe_stage, then_checked

        return then_checked(self, dedupe_stage(self, key, within, store, timestamp, name))

    def checkpointed(
        self,
        store: StateStore,
        *,
        every: int | None = None,
        interval: float | timedelta | None = None,
        name: str | None = None,
        replayable: bool | None = None,
    ) -> Source[Out, Mat]:
        """Checkpoint the stateful operators after this point into ``store``, and resume from it.

        Emits ``Barrier`` signals after the chunk that reaches ``every`` elements
        (or ``interval`` seconds) since the last one; each checkpoint commits all
        operators' state with the number of elements passed here, atomically.
        On start with a checkpoint in ``store`` it drops that many elements, so
        every source upstream must replay the same elements on every run
        (``from_iterable`` over a collection, ``from_iterator``, ``FileSource``):
        any other source is an error when the source is attached (at build time,
        or for a Flow when it runs). ``replayable=False`` is for a live source
        (``queue``, ``tick``, a publisher): state is restored and nothing is
        skipped, so elements not yet checkpointed at a crash are not seen
        again; ``replayable=True`` vouches for a source that replays without
        saying so. Emits one last checkpoint when upstream completes. Output is
        at-least-once across a crash; state is exactly-once.

        >>> Source.from_iterable(events).checkpointed(RocksDBStore("state"), every=10_000)
        """
        from .keyed import checkpointed_stage, then_checked

        return then_checked(self, checkpointed_stage(store, every, interval, name, replayable))

    # -- resilience: supervision and recovery --

    def with_supervision(self, decider: Decider | Directive) -> Source[Out, Mat]:
        """Attach a supervision decider to the last stage: what to do when its user function raises.

        ``Supervision.stop`` fails the stream (the default), ``Supervision.resume``
        drops the failing element (logged with the stage name) and goes on,
        ``Supervision.restart`` also resets the stage's state (``scan`` emits its
        zero again). Honoured by map, filter, filter_not, map_concat, collect,
        take_while, drop_while, scan, fold, reduce and map_async(_unordered); a
        TypeError for any other stage. A supervised element-wise stage is evaluated element by element and
        not fused with its neighbours.

        >>> await Source.from_iterable([1, 0, 2]).map(lambda x: 6 // x).with_supervision(
        ...     Supervision.resume).run_with(Sink.collect())
        [6, 3]
        """
        from .._ops.supervision import supervise_outlet

        return type(self)(supervise_outlet(self._module, decider))

    def recover(self, fn: Callable[[Exception], Out | None]) -> Source[Out, Mat]:
        """Turn an upstream failure into one last element ``fn(error)``, then complete.

        Emits when upstream emits, and ``fn(error)`` once upstream fails; when
        ``fn`` returns None the failure is not recovered and propagates. Completes
        when upstream completes or after the recovered element. An async stage:
        chunks pass unchanged.

        >>> await Source.from_iterable([2, 0, 1]).map(lambda x: 2 // x).recover(
        ...     lambda e: -1).run_with(Sink.collect())
        [1, -1]
        """
        from .._ops.supervision import Recover

        return self._then(Recover(fn))

    def recover_with_retries(self, attempts: int, fn: Callable[[Exception], Source[Out, Any] | None]) -> Source[Out, Mat]:
        """On an upstream failure switch to the Source ``fn(error)``; up to ``attempts`` failures recovered.

        Emits what upstream, then each replacement source, emits; a replacement
        that fails is itself recovered until ``attempts`` failures were handled
        (negative: without limit; 0: none). ``fn`` returning None lets the failure
        propagate. Completes when the current source completes.

        >>> flaky.recover_with_retries(3, lambda e: Source.from_iterable(cached))
        """
        from .._ops.supervision import RecoverWith

        return self._then(RecoverWith(attempts, fn))

    # -- rate decoupling and timeouts --

    def conflate(self, aggregate: Callable[[Out, Out], Out]) -> Source[Out, Mat]:
        """While downstream is busy, fold arriving elements into one with ``aggregate``.

        Emits when downstream has taken everything emitted before (the summary of
        what arrived since); backpressures never; completes when upstream
        completes and the last summary is emitted. A chunk arriving at once is
        summarized together.

        >>> latest_total = readings.conflate(operator.add)
        """
        from .._ops import flow_control

        return self._then(flow_control.conflate(aggregate))

    def conflate_with_seed(self, seed: Callable[[Out], T], aggregate: Callable[[T, Out], T]) -> Source[T, Mat]:
        """Like ``conflate``, starting each summary with ``seed(element)``.

        Emits when downstream has taken everything emitted before; backpressures
        never; completes when upstream completes and the last summary is emitted.

        >>> lists = source.conflate_with_seed(lambda x: [x], lambda acc, x: acc + [x])
        """
        from .._ops.flow_control import conflate_with_seed

        return self._then(conflate_with_seed(seed, aggregate))

    def batch(self, max: int, seed: Callable[[Out], T], aggregate: Callable[[T, Out], T]) -> Source[T, Mat]:
        """While downstream is busy, fold up to ``max`` arriving elements into one batch.

        Emits when downstream has taken everything emitted before; backpressures
        when a batch holds ``max`` elements and downstream is busy; completes when
        upstream completes and the last batch is emitted. How many elements a
        batch holds depends on how busy downstream is, never more than ``max``.

        >>> rows.batch(500, lambda r: [r], lambda b, r: b + [r]).map_async(1, insert_many)
        """
        from .._ops import flow_control

        return self._then(flow_control.batch(max, seed, aggregate))

    def batch_weighted(
        self, max_weight: float, cost: Callable[[Out], float], seed: Callable[[Out], T], aggregate: Callable[[T, Out], T]
    ) -> Source[T, Mat]:
        """Like ``batch``, counting ``cost(element)`` toward ``max_weight`` (an element heavier than it goes alone).

        Emits when downstream has taken everything emitted before; backpressures
        when the batch weighs ``max_weight`` and downstream is busy; completes
        when upstream completes and the last batch is emitted.

        >>> frames = chunks.batch_weighted(64_000, len, bytearray, lambda b, x: b + x)
        """
        from .._ops import flow_control

        return self._then(flow_control.batch_weighted(max_weight, cost, seed, aggregate))

    def expand(self, extrapolate: Callable[[Out], Iterable[T]]) -> Source[T, Mat]:
        """While upstream is slower than downstream, emit more elements from ``extrapolate(last)``.

        Emits the first element of ``extrapolate(x)`` when ``x`` arrives, then one
        more from it each time downstream has taken everything, until the next
        element arrives (or the iterable ends). Backpressures when downstream does
        and a first element waits; completes when upstream completes.

        >>> ticks = prices.expand(itertools.repeat)  # repeat the last price while nothing new comes
        """
        from .._ops.flow_control import Expand

        return self._then(Expand(extrapolate))

    def keep_alive(self, max_idle: float | timedelta, inject: Callable[[], Out]) -> Source[Out, Mat]:
        """Emit ``inject()`` whenever no element passed for ``max_idle`` seconds.

        Emits when upstream emits, or after ``max_idle`` seconds of silence;
        backpressures when downstream does; completes when upstream completes.
        Fused: chunks pass unchanged.

        >>> frames.keep_alive(15.0, lambda: b"ping")
        """
        from .._ops.flow_control import KeepAlive

        return self._then(KeepAlive(_seconds(max_idle), inject))

    def idle_timeout(self, seconds: float | timedelta) -> Source[Out, Mat]:
        """Fail with ``StreamTimeoutError`` when no element passes for ``seconds``.

        Emits what upstream emits (fused, chunks unchanged); fails when the gap
        between two elements (or before the first) exceeds ``seconds``.

        >>> requests.idle_timeout(30.0)
        """
        from .._ops.flow_control import Timeout

        return self._then(Timeout("idle", _seconds(seconds)))

    def completion_timeout(self, seconds: float | timedelta) -> Source[Out, Mat]:
        """Fail with ``StreamTimeoutError`` when the stream has not completed ``seconds`` after it started.

        Emits what upstream emits (fused, chunks unchanged); completes when
        upstream completes in time; fails at the deadline otherwise.

        >>> batch_job.completion_timeout(timedelta(minutes=5))
        """
        from .._ops.flow_control import Timeout

        return self._then(Timeout("completion", _seconds(seconds)))

    def initial_timeout(self, seconds: float | timedelta) -> Source[Out, Mat]:
        """Fail with ``StreamTimeoutError`` when the first element has not arrived ``seconds`` after the start.

        Emits what upstream emits (fused, chunks unchanged); after the first
        element it only passes elements on.

        >>> replies.initial_timeout(5.0)
        """
        from .._ops.flow_control import Timeout

        return self._then(Timeout("initial", _seconds(seconds)))

    def backpressure_timeout(self, seconds: float | timedelta) -> Source[Out, Mat]:
        """Fail with ``StreamTimeoutError`` when downstream takes nothing for ``seconds`` while elements wait.

        Emits what upstream emits; fails when a chunk has waited ``seconds`` for
        room downstream. An async stage (its own task).

        >>> events.backpressure_timeout(10.0).to(slow_sink)
        """
        from .._ops.flow_control import BackpressureTimeout

        return self._then(BackpressureTimeout(_seconds(seconds)))

    # -- fan-in with another source --

    def merge_sorted(self, other: Source[Out, Any], key: Callable[[Out], Any] | None = None) -> Source[Out, Mat]:
        """Merge this sorted stream with the sorted Source ``other`` into one sorted stream.

        Emits when both sides that have not completed have an element (the
        smaller first); backpressures when downstream does; completes when both
        completed; fails when either side is not sorted by ``key``.

        >>> await Source.from_iterable([1, 4, 9]).merge_sorted(Source.from_iterable([2, 3, 10])).run_with(Sink.collect())
        [1, 2, 3, 4, 9, 10]
        """
        from .._ops.fan import MergeSorted, fan_in_with

        return self._via_module(fan_in_with(MergeSorted(2, key), other._module), Keep.left)

    def interleave(self, other: Source[Out, Any], segment_size: int, eager_close: bool = False) -> Source[Out, Mat]:
        """Alternate ``segment_size`` elements of this stream with ``segment_size`` of ``other``.

        Emits when the side whose turn it is has an element; completes when both
        completed (``eager_close``: when the side whose turn it is completed); a
        side that completed hands its turns to the other.

        >>> await Source.from_iterable([1, 2, 3, 4]).interleave(Source.from_iterable([8, 9]), 2).run_with(Sink.collect())
        [1, 2, 8, 9, 3, 4]
        """
        from .._ops.fan import Interleave, fan_in_with

        return self._via_module(fan_in_with(Interleave(2, segment_size, eager_close), other._module), Keep.left)

    # -- joins --

    @overload
    def join(
        self,
        other: Table[K, T] | TableView[K, T],
        *,
        key: Callable[[Out], K] | str | int,
        combine: Callable[[Out, T], R],
        how: Literal["inner"] = "inner",
        store: StateStore | None = None,
        left_type: Any = None,
        name: str | None = None,
    ) -> Source[R, Mat]: ...
    @overload
    def join(
        self,
        other: Table[K, T] | TableView[K, T],
        *,
        key: Callable[[Out], K] | str | int,
        combine: Callable[[Out, T | None], R],
        how: Literal["left"],
        store: StateStore | None = None,
        left_type: Any = None,
        name: str | None = None,
    ) -> Source[R, Mat]: ...
    @overload
    def join(
        self,
        other: Source[T, Any],
        *,
        within: JoinWindows,
        combine: Callable[[Out, T], R],
        how: Literal["inner"] = "inner",
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[T], Any] | str | int | None = None,
        key: Callable[[Any], Any] | str | int | None = None,
        store: StateStore | None = None,
        late: Literal["fail"] | Sink[LateRecord, Any] = "fail",
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Source[R, Mat]: ...
    @overload
    def join(
        self,
        other: Source[T, Any],
        *,
        within: JoinWindows,
        combine: Callable[[Out, T | None], R],
        how: Literal["left"],
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[T], Any] | str | int | None = None,
        key: Callable[[Any], Any] | str | int | None = None,
        store: StateStore | None = None,
        late: Literal["fail"] | Sink[LateRecord, Any] = "fail",
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Source[R, Mat]: ...
    @overload
    def join(
        self,
        other: Source[T, Any],
        *,
        within: JoinWindows,
        combine: Callable[[Out | None, T | None], R],
        how: Literal["outer"],
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[T], Any] | str | int | None = None,
        key: Callable[[Any], Any] | str | int | None = None,
        store: StateStore | None = None,
        late: Literal["fail"] | Sink[LateRecord, Any] = "fail",
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Source[R, Mat]: ...
    @overload
    def join(
        self,
        other: Source[T, Any],
        *,
        within: JoinWindows,
        combine: Callable[[Any, Any], R],
        how: Literal["inner", "left", "outer"] = "inner",
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[T], Any] | str | int | None = None,
        key: Callable[[Any], Any] | str | int | None = None,
        store: StateStore | None = None,
        late: Literal["emit"],
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Source[R | LateRecord, Mat]: ...
    def join(
        self,
        other: Any,
        *,
        within: JoinWindows | None = None,
        combine: Callable[[Any, Any], Any],
        how: Literal["inner", "left", "outer"] = "inner",
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[Any], Any] | str | int | None = None,
        key: Callable[[Any], Any] | str | int | None = None,
        store: StateStore | None = None,
        late: Literal["fail", "emit"] | Sink[LateRecord, Any] = "fail",
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Any:
        """Join this stream with the Source ``other`` (pairs of equal keys within ``within``) or a Table.

        A pair ``(a, b)`` joins when ``key_a(a) == key_b(b)`` (``key=`` for both)
        and ``b.ts - a.ts`` lies in ``[-within.before, within.after]``; both
        inputs need event time (``with_timestamps``). Emits ``combine(a, b)`` as
        soon as both elements of a pair arrived. ``how="left"`` also emits
        ``combine(a, None)`` for each ``a`` that matched nothing, ``"outer"``
        also ``combine(None, b)``: once, only after the element's window closed
        (the minimum watermark of both inputs, minus ``within.grace``, passed
        ``a.ts + after`` / ``b.ts + before``), or at the end of the stream.
        Both sides' buffers are deleted as their windows close; with a store
        (``store=`` or an upstream ``checkpointed``; both inputs checkpointed
        into it, their barriers aligned here) they are checkpointed and
        restored, ``left_type``/``right_type`` decoding restored elements
        (msgspec types). An element whose timestamp is below the watermark
        minus grace is late: ``late="fail"`` (the default) fails the stream with
        ``LateDataError``, ``"emit"`` emits it as a ``LateRecord``, a Sink gets
        the ``LateRecord`` s. Completes when both inputs completed.

        With a ``Table`` as ``other``: the stream-table join (see docs/joins.md):
        each element is joined with the table's value for ``key(element)``
        (``how="inner"`` or ``"left"``); ``within``, ``key_a``, ``key_b``,
        ``late`` and ``right_type`` are for two streams only. With a table read
        elsewhere (a ``TableView`` such as ``streamlib.kafka.GlobalTable``): each
        element is joined with the value the table holds when it passes (a
        lookup, no state here).

        >>> orders.join(payments, key_a="order_id", key_b="order_id",
        ...             within=JoinWindows(before=0, after=timedelta(minutes=10)),
        ...             combine=lambda o, p: (o.order_id, p.amount))
        """
        from .._dsl.source import Source as _Source
        from .._join.dsl import join_streams
        from .._table.table import Table as _Table

        from .._table.view import TableView as _View

        if isinstance(other, (_Table, _View)) and (
            within is not None or key_a is not None or key_b is not None or late != "fail" or right_type is not None
        ):
            raise TypeError(
                "join(table, ...) takes key=, combine=, how='inner' or 'left', store=, left_type= and name=; "
                "within=, key_a=, key_b=, late= and right_type= are for joining two streams"
            )
        if isinstance(other, _View):  # a lookup in a table kept elsewhere (a GlobalTable)
            from .._dsl.fields import extractor

            if how not in ("inner", "left") or key is None:
                raise ValueError(f"joining a table view takes key= and how='inner' or 'left', got how={how!r}")
            key_of, get = extractor(key, "join(key=)"), other.get
            if how == "left":
                return self.map(lambda e: combine(e, get(key_of(e))))

            def _pair(e: Any) -> tuple[Any, ...]:
                value = get(key_of(e))
                return () if value is None else (combine(e, value),)

            return self.map_concat(_pair)
        if isinstance(other, _Table):  # the stream-table join
            from .._table.join import join_table

            return join_table(
                self, other, key=key, combine=combine, how=how, store=store, element_type=left_type, name=name
            )
        if not isinstance(other, _Source):
            raise TypeError(f"join(other) needs a Source (a stream-stream join) or a Table, got {other!r}")
        return join_streams(
            self, other, key=key, key_a=key_a, key_b=key_b, within=within, combine=combine, how=how,
            store=store, late=late, late_mat=None, types=(left_type, right_type), name=name,
        )  # fmt: skip

    @overload
    def join_asof(
        self,
        other: Source[T, Any],
        *,
        combine: Callable[[Out, T], R],
        key: Callable[[Any], Any] | str | int | None = None,
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[T], Any] | str | int | None = None,
        tolerance: int | timedelta | None = None,
        how: Literal["inner"] = "inner",
        store: StateStore | None = None,
        late: Literal["fail"] | Sink[LateRecord, Any] = "fail",
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Source[R, Mat]: ...
    @overload
    def join_asof(
        self,
        other: Source[T, Any],
        *,
        combine: Callable[[Out, T | None], R],
        how: Literal["left"],
        key: Callable[[Any], Any] | str | int | None = None,
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[T], Any] | str | int | None = None,
        tolerance: int | timedelta | None = None,
        store: StateStore | None = None,
        late: Literal["fail"] | Sink[LateRecord, Any] = "fail",
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Source[R, Mat]: ...
    @overload
    def join_asof(
        self,
        other: Source[T, Any],
        *,
        combine: Callable[[Out, Any], R],
        late: Literal["emit"],
        key: Callable[[Any], Any] | str | int | None = None,
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[T], Any] | str | int | None = None,
        tolerance: int | timedelta | None = None,
        how: Literal["inner", "left"] = "inner",
        store: StateStore | None = None,
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Source[R | LateRecord, Mat]: ...
    def join_asof(
        self,
        other: Source[Any, Any],
        *,
        combine: Callable[[Any, Any], Any],
        key: Callable[[Any], Any] | str | int | None = None,
        key_a: Callable[[Out], Any] | str | int | None = None,
        key_b: Callable[[Any], Any] | str | int | None = None,
        tolerance: int | timedelta | None = None,
        how: Literal["inner", "left"] = "inner",
        store: StateStore | None = None,
        late: Literal["fail", "emit"] | Sink[LateRecord, Any] = "fail",
        left_type: Any = None,
        right_type: Any = None,
        name: str | None = None,
    ) -> Any:
        """Join each element ``a`` with the latest element ``b`` of ``other`` with the same key at or before ``a``'s time.

        ``b`` is the element of ``other`` with ``key_b(b) == key_a(a)`` (``key=``
        for both) whose timestamp is the greatest one ``<= a``'s (the last to
        arrive of several with that timestamp); with ``tolerance`` (ms or a
        timedelta) it must also be at most that much older than ``a``. Emits
        ``combine(a, b)`` once per ``a``; with no such ``b``, ``how="inner"``
        drops ``a`` and ``"left"`` emits ``combine(a, None)``. Both inputs need
        event time (``with_timestamps``). ``a`` is joined once the minimum
        watermark of both inputs passed its timestamp (then no earlier ``b`` can
        still come), on arrival once ``other`` ended. The same watermark
        expires ``other``'s older elements (all but the latest per key, that one
        too once ``tolerance`` behind). State is in ``store`` (or the inputs'
        ``checkpointed`` store), restored with ``left_type``/``right_type``.
        An element behind the watermark on arrival is late: ``late="fail"``
        fails with ``LateDataError``, ``"emit"`` emits a ``LateRecord``, a Sink
        gets them.

        >>> trades.join_asof(quotes, key="symbol", combine=lambda t, q: (t.id, q.price),
        ...                  tolerance=timedelta(seconds=5), how="left")
        """
        from .._join.asof import join_asof

        return join_asof(
            self, other, combine=combine, key=key, key_a=key_a, key_b=key_b, tolerance=tolerance, how=how,
            store=store, late=late, late_mat=None, types=(left_type, right_type), name=name,
        )  # fmt: skip

    # -- substreams --

    def group_by(
        self, max_substreams: int, key: Callable[[Out], Any], allow_closed_substream_recreation: bool = False
    ) -> SubFlow[Out, Source[Any, Mat]]:
        """Split the stream into one substream per ``key(element)``; operators then apply per substream.

        Returns a ``SubFlow``: its operators run on each substream, and
        ``merge_substreams()`` joins them back. Emits (into a substream) when that
        substream has room; backpressures when the substream of the current
        element is full (one slow substream slows them all, as in Akka); completes
        when upstream and every substream completed. A key beyond
        ``max_substreams`` open substreams fails with ``TooManySubstreamsError``.
        Elements for a key whose substream completed early are dropped, unless
        ``allow_closed_substream_recreation`` opens a new one.

        >>> await Source.from_iterable("abcab").group_by(10, str).fold("", operator.add).merge_substreams().run_with(Sink.collect())
        ['aa', 'bb', 'c']  # in completion order
        """
        from .._ops.substreams import GroupBy
        from .subflow import SubFlow

        return SubFlow(self, GroupBy(max_substreams, key, allow_closed_substream_recreation))

    def split_when(self, p: Callable[[Out], object]) -> SubFlow[Out, Source[Any, Mat]]:
        """Start a new substream at each element for which ``p`` holds (that element opens it).

        Close with ``concat_substreams()`` to keep order. A substream that completes
        early drops the elements up to the next split.

        >>> await Source.from_iterable([1, 2, 0, 3, 0]).split_when(lambda x: x == 0).fold(0, operator.add).concat_substreams().run_with(Sink.collect())
        [3, 3, 0]
        """
        from .._ops.substreams import Split
        from .subflow import SubFlow

        return SubFlow(self, Split(p, after=False))

    def split_after(self, p: Callable[[Out], object]) -> SubFlow[Out, Source[Any, Mat]]:
        """End the current substream after each element for which ``p`` holds (that element closes it).

        Returns a ``SubFlow`` (see ``split_when``); the element after a split
        opens the next substream. Completes when upstream and every substream
        completed.

        >>> await Source.from_iterable([1, 2, 0, 3, 0]).split_after(lambda x: x == 0).map(str).fold("", operator.add).concat_substreams().run_with(Sink.collect())
        ['120', '30']
        """
        from .._ops.substreams import Split
        from .subflow import SubFlow

        return SubFlow(self, Split(p, after=True))

    def flat_map_merge(self, breadth: int, f: Callable[[Out], Source[T, Any]]) -> Source[T, Mat]:
        """Run the Source ``f(element)`` for each element, up to ``breadth`` at once, merging their elements.

        Emits when any running source emits; backpressures when downstream does,
        and reads upstream only while fewer than ``breadth`` sources run;
        completes when upstream and every source completed; fails when any does.

        >>> pages = urls.flat_map_merge(8, lambda u: paged_source(u))
        """
        from .._ops.substreams import FlatMap, Substreams

        return self._then(Substreams(FlatMap(f, concat=False), None, breadth))

    def flat_map_concat(self, f: Callable[[Out], Source[T, Any]]) -> Source[T, Mat]:
        """Run the Source ``f(element)`` for each element in turn, emitting all of one before the next.

        Emits what the current source emits; backpressures when downstream does
        and reads the next element only when the current source completed;
        completes when upstream and the last source completed; fails when any does.

        >>> await Source.from_iterable([1, 2]).flat_map_concat(lambda n: Source.from_iterable([n] * n)).run_with(Sink.collect())
        [1, 2, 2]
        """
        from .._ops.substreams import FlatMap, Substreams

        return self._then(Substreams(FlatMap(f, concat=True), None, 1))
    # --- end of generated operators ---
