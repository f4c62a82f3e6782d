"""Source stages: in-process iterables, generators, queues, ticks and async iterables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from itertools import islice, repeat
from typing import Any, Generic, TypeVar

from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.context import RunContext
from .._runtime.graph_run import RunningGraph
from .._runtime.materializer import ChannelSourceLogic
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, PullSourceLogic, Stage

T = TypeVar("T")


class _SourceStage(Stage):
    inputs = 0
    outputs = 1
    #: Yields the same elements in the same order on every run, so ``checkpointed`` may resume by skipping.
    replayable: bool = False


class _IteratorLogic(PullSourceLogic):
    __slots__ = ("it", "error")

    def __init__(self, it: Iterator[Any]) -> None:
        self.it = it
        self.error: BaseException | None = None

    def pull(self, n: int) -> list[Any]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        chunk: list[Any] = []
        try:
            chunk.extend(islice(self.it, n))
        except Exception as error:
            if not chunk:
                raise
            # Deliver what the iterator yielded before failing; fail at the next pull.
            self.error = error
            return chunk
        if len(chunk) < n:
            self.done = True
        return chunk

    def cancel(self) -> None:
        close = getattr(self.it, "close", None)
        if close is not None:
            close()


class _SequenceLogic(PullSourceLogic):
    """Slices a list, tuple or range directly: cheaper than iterating it."""

    __slots__ = ("seq", "pos")

    def __init__(self, seq: Sequence[Any]) -> None:
        self.seq = seq
        self.pos = 0

    def pull(self, n: int) -> list[Any]:
        pos = self.pos
        chunk = self.seq[pos : pos + n]
        if type(chunk) is not list:
            chunk = list(chunk)  # a tuple or range slice; a list slice is already a new list
        self.pos = pos + len(chunk)
        if self.pos >= len(self.seq):
            self.done = True
        return chunk


class IterableSource(_SourceStage):
    """Emits the elements of an iterable; each run iterates it afresh."""

    name = "from_iterable"

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable
        #: A collection yields the same elements on every run; a one-shot iterator does not.
        self.replayable = not isinstance(iterable, Iterator)

    def materialize(self, ctx: RunContext) -> tuple[PullSourceLogic, None]:
        if type(self.iterable) in (list, tuple) or _sized_range(self.iterable):
            return _SequenceLogic(self.iterable), None  # type: ignore[arg-type]
        return _IteratorLogic(iter(self.iterable)), None


def _sized_range(iterable: Iterable[Any]) -> bool:
    """A range whose len() works (not beyond sys.maxsize elements): it can be sliced."""
    if type(iterable) is not range:
        return False
    try:
        len(iterable)
    except OverflowError:
        return False
    return True


class IteratorFactorySource(_SourceStage):
    """Calls ``factory()`` at each run and emits the iterator's elements."""

    name = "from_iterator"
    replayable = True  # factory() is called afresh on every run

    def __init__(self, factory: Callable[[], Iterable[Any]]) -> None:
        self.factory = factory

    def materialize(self, ctx: RunContext) -> tuple[PullSourceLogic, None]:
        return _LazyIteratorLogic(self.factory), None


class _LazyIteratorLogic(_IteratorLogic):
    def __init__(self, factory: Callable[[], Iterable[Any]]) -> None:
        self.factory = factory
        self.it = None  # type: ignore[assignment]
        self.error = None

    def pull(self, n: int) -> list[Any]:
        if self.it is None:
            self.it = iter(self.factory())
        return super().pull(n)

    def cancel(self) -> None:
        if self.it is not None:
            super().cancel()


class FailedSource(_SourceStage):
    """Fails at once with ``error``."""

    name = "failed"
    replayable = True

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def materialize(self, ctx: RunContext) -> tuple[PullSourceLogic, None]:
        error = self.error

        class _Failed(PullSourceLogic):
            def pull(self, n: int) -> list[Any]:
                raise error

        return _Failed(), None


class RepeatSource(_SourceStage):
    """Emits ``value`` forever."""

    name = "repeat"
    replayable = True

    def __init__(self, value: Any) -> None:
        self.value = value

    def materialize(self, ctx: RunContext) -> tuple[PullSourceLogic, None]:
        return _IteratorLogic(repeat(self.value)), None


def _unfold(seed: Any, f: Callable[[Any], tuple[Any, Any] | None]) -> Iterator[Any]:
    state = seed
    while True:
        step = f(state)
        if step is None:
            return
        state, element = step
        yield element


class UnfoldSource(_SourceStage):
    """``f(state) -> (next_state, element)`` until it returns None."""

    name = "unfold"
    replayable = True  # from the same seed on every run

    def __init__(self, seed: Any, f: Callable[[Any], tuple[Any, Any] | None]) -> None:
        self.seed = seed
        self.f = f

    def materialize(self, ctx: RunContext) -> tuple[PullSourceLogic, None]:
        return _IteratorLogic(_unfold(self.seed, self.f)), None


class AsyncIterableSource(_SourceStage):
    """Emits the elements of an async iterable (or of ``factory()`` per run)."""

    name = "from_async_iterable"

    def __init__(self, iterable: AsyncIterable[Any] | Callable[[], AsyncIterable[Any]]) -> None:
        self.iterable = iterable

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        src = self.iterable
        return _AsyncIterLogic(src if hasattr(src, "__aiter__") else src(), ctx.max_chunk), None  # type: ignore[operator, arg-type]


class _AsyncIterLogic(AsyncLogic):
    def __init__(self, iterable: AsyncIterable[Any], max_chunk: int) -> None:
        self.iterable = iterable
        self.max_chunk = max_chunk

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        """Forward each element at once while there is room; gather a chunk while backpressured.

        The next element is awaited directly (no task per element). Meanwhile a future
        parked as the outlet's putter (this source is its only producer) is woken when
        downstream takes something, so elements gathered while it was full go out as
        soon as there is room, or cancels: then the wait for the next element is
        cancelled at once, however long it would have taken.
        """
        (out,) = outlets
        it = self.iterable.__aiter__()
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        pending: list[Any] = []
        waiting = False
        stopped_by_downstream = False
        watch: asyncio.Future[None] | None = None

        def park() -> None:
            nonlocal watch
            if watch is None:
                watch = loop.create_future()
                watch.add_done_callback(on_downstream)
            out._putter = watch

        def on_downstream(_: object) -> None:
            nonlocal pending, watch, stopped_by_downstream
            watch = None
            if not waiting:
                return
            if out.cancelled:
                stopped_by_downstream = True
                assert task is not None
                task.cancel()
                return
            if pending and out.put_nowait(pending):
                pending = []
            park()

        try:
            while True:
                if pending and (out.has_room() or len(pending) >= self.max_chunk):
                    await out.put(pending)  # raises DownstreamCancelled once cancelled
                    pending = []
                if out.cancelled:
                    raise DownstreamCancelled(out.name)
                park()
                waiting = True
                failure: BaseException | None = None
                try:
                    x = await it.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if not stopped_by_downstream or task is None or task.uncancel() > 0:
                        raise
                    failure = DownstreamCancelled(out.name)
                except Exception as error:
                    failure = error
                finally:
                    waiting = False
                    if out._putter is watch:
                        out._putter = None
                if failure is not None:
                    if pending and not isinstance(failure, DownstreamCancelled):
                        await out.put(pending)  # what arrived before the failure goes first
                    raise failure
                pending.append(x)
            if pending:
                await out.put(pending)
        finally:
            if watch is not None:
                watch.remove_done_callback(on_downstream)
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()


class TickSource(_SourceStage):
    """Emits ``value`` after ``initial_delay``, then every ``interval`` seconds."""

    name = "tick"

    def __init__(self, initial_delay: float, interval: float, value: Any) -> None:
        if interval <= 0:
            raise ValueError(f"tick interval must be positive, got {interval}")
        self.initial_delay = initial_delay
        self.interval = interval
        self.value = value

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, Any]:
        return _TickLogic(self, ctx), None


class _TickLogic(AsyncLogic):
    def __init__(self, stage: TickSource, ctx: RunContext) -> None:
        self.stage = stage
        self.clock = ctx.clock

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        clock = self.clock
        next_at = clock.now() + self.stage.initial_delay
        while True:
            delay = next_at - clock.now()
            if delay > 0:
                await self._sleep_unless_cancelled(out, delay)
            if out.cancelled:
                return
            # A tick is dropped (not queued) while downstream is backpressuring.
            out.put_nowait([self.stage.value])
            next_at += self.stage.interval

    async def _sleep_unless_cancelled(self, out: Channel, delay: float) -> None:
        """Sleep ``delay`` on the run's clock, but return as soon as downstream cancels.

        The channel wakes its producer's waiter on cancellation (and when room
        appears, which only means checking again); this source is that producer
        and never waits for room otherwise.
        """
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        loop = asyncio.get_running_loop()
        try:
            while not sleeper.done() and not out.cancelled:
                waiter: asyncio.Future[None] = loop.create_future()
                out._putter = waiter
                try:
                    await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if out._putter is waiter:
                        out._putter = None
        finally:
            sleeper.cancel()
            await asyncio.wait((sleeper,))


class QueueClosedError(RuntimeError):
    """The stream behind a :class:`SourceQueue` or :class:`SinkQueue` is gone."""


def on_run_end(graph: RunningGraph | None, callback: Callable[[], None]) -> bool:
    """Call ``callback`` once every task of the run has ended.

    False (nothing registered) while the run has not started. Queue handles use it
    so that a producer or puller waiting on a run that was cancelled, even before
    its stages started, is woken instead of waiting forever.
    """
    if graph is None or graph.task is None:
        return False
    graph.task.add_done_callback(lambda _task: callback())
    return True


class SourceQueue(Generic[T]):
    """Materialized by ``Source.queue``: push elements into a running stream.

    ``await offer(x)`` waits while the buffer is full (backpressure);
    ``complete()`` ends the stream and ``fail(error)`` fails it.

    Fast path: while the synchronous stages right after the queue are idle and
    nothing is buffered, an offer runs them on the caller's stack (no event-loop
    turn) and returns once they are done with the element. Otherwise it is
    buffered for their task. Results are the same either way; an error raised by
    a stage fails the stream and is never raised to the caller.
    """

    def __init__(self, channel: Channel, graph: RunningGraph | None = None) -> None:
        self._channel = channel
        self._closed = False
        self._graph = graph
        self._watching = False
        #: Awaited offers waiting for room, one at a time, first come first served.
        self._line = asyncio.Lock()
        self._blocked = 0

    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosedError("offer after complete() or fail()")
        if not self._watching:
            self._watching = on_run_end(self._graph, self._channel.cancel)
        if self._graph is not None and self._graph.done:
            raise QueueClosedError("the stream has ended")

    async def offer(self, element: T) -> None:
        """Enqueue one element, waiting while the buffer is full."""
        self._check_open()
        await self._put([element])

    async def offer_all(self, elements: Iterable[T]) -> None:
        """Enqueue many elements as one chunk, waiting while the buffer is full."""
        chunk = list(elements)
        self._check_open()
        if chunk:
            await self._put(chunk)

    async def _put(self, chunk: list[T]) -> None:
        """Put ``chunk`` now when there is room and no awaited offer waits; else wait in line.

        The channel wakes one waiting producer, so awaited offers from several tasks
        wait for room one at a time, in the order they arrived.
        """
        if not self._blocked and self._offer_now(chunk):
            return
        self._blocked += 1
        try:
            async with self._line:
                await self._channel.put(chunk)
        except DownstreamCancelled:
            raise QueueClosedError("the stream was cancelled downstream") from None
        finally:
            self._blocked -= 1

    def offer_nowait(self, element: T) -> bool:
        """Enqueue without waiting; False when the buffer is full or the stream is gone."""
        try:
            self._check_open()
        except QueueClosedError:
            return False
        return self._offer_now([element])

    def _offer_now(self, chunk: list[T]) -> bool:
        """Take ``chunk`` without waiting: inline through an idle island, else into the buffer."""
        channel = self._channel
        inline = channel.inline
        return (inline is not None and inline(chunk)) or channel.put_nowait(chunk)

    def complete(self) -> None:
        """End the stream after the elements already offered."""
        if not self._closed:
            self._closed = True
            self._channel.put_final(END)

    def fail(self, error: BaseException) -> None:
        """Fail the stream with ``error``."""
        if not self._closed:
            self._closed = True
            self._channel.put_final(Failure(error))

    @property
    def cancelled(self) -> bool:
        """True once downstream has cancelled the stream."""
        return self._channel.cancelled


class QueueSource(_SourceStage):
    name = "queue"

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity

    def materialize(self, ctx: RunContext) -> tuple[ChannelSourceLogic, SourceQueue[Any]]:
        channel = Channel(self.capacity, "queue")
        return ChannelSourceLogic(channel, inline=True), SourceQueue(channel, ctx.graph)

