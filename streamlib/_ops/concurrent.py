"""Stages that decouple upstream from downstream: ``map_async`` and ``buffer``.

Both are :class:`~streamlib.stage.AsyncLogic` tasks over one inlet and one
outlet channel. Each loop does, in order: emit what is ready while the outlet
has room, take input while the stage may hold more, and otherwise wait on one
future woken by whichever comes first (an input item, outlet room, a finished
call, a clock time: see :class:`Wakeup`). Signals keep their place among the
elements; returning completes the stage.

Failures are in band: an upstream failure is read like the end of the stream
(everything before it is processed and emitted), and only then does the stage
fail with it. ``map_async`` owns the tasks it starts for the user's calls: a
failed call, a downstream cancellation or the cancellation of the run cancels
the calls that will never be emitted and waits for them, so no call outlives
the stage.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, get_args

from .._dsl._common import OverflowStrategy
from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.clock import Clock, TimerHandle
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure, Signal
from ..stage import AsyncLogic, Stage

log = logging.getLogger("streamlib")

OVERFLOW_STRATEGIES: tuple[str, ...] = get_args(OverflowStrategy)


class BufferOverflowError(RuntimeError):
    """A ``buffer(size, overflow="fail")`` stage received an element while full."""


class Wakeup:
    """One future per wait, woken by the first of: input, outlet room, a time, a callback.

    Channels are single-producer single-consumer, so a stage may park this
    future as its inlet's getter and its outlet's putter. ``wake`` can also be
    given to ``Task.add_done_callback``.
    """

    __slots__ = ("loop", "fut")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fut: asyncio.Future[None] | None = None

    def wake(self, *_: object) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(
        self,
        *,
        inlet: Channel | None = None,
        outlet: Channel | None = None,
        need_room: bool = False,
        clock: Clock | None = None,
        at: float | None = None,
    ) -> None:
        """Wait until ``inlet`` has an item, ``outlet`` has room (if ``need_room``) or
        is cancelled, ``clock`` reaches ``at``, or ``wake`` is called."""
        if inlet is not None and len(inlet._items):
            return
        if outlet is not None and (outlet.cancelled or (need_room and outlet.has_room())):
            return
        if at is not None and clock is not None and clock.now() >= at:
            return
        self.fut = fut = self.loop.create_future()
        handle: TimerHandle | None = None
        if at is not None:
            assert clock is not None
            handle = clock.call_at(at, self.wake)
        if inlet is not None:
            inlet._getter = fut
        if outlet is not None:
            # Also woken (harmlessly) when the consumer takes an item; always woken by cancel().
            outlet._putter = fut
        try:
            await fut
        finally:
            self.fut = None
            if handle is not None:
                handle.cancel()
            if inlet is not None and inlet._getter is fut:
                inlet._getter = None
            if outlet is not None and outlet._putter is fut:
                outlet._putter = None


def check_cancelled(out: Channel) -> None:
    """Raise :class:`DownstreamCancelled` once the consumer of ``out`` has cancelled."""
    if out.cancelled:
        raise DownstreamCancelled(out.name)


def put_ready(out: Channel, item: list[Any] | Signal) -> None:
    """Put ``item`` on an outlet known to have room (raises when downstream cancelled)."""
    if not out.put_nowait(item):
        if out.cancelled:
            raise DownstreamCancelled(out.name)
        raise AssertionError(f"{out!r} has no room")  # callers check has_room() first


# -- map_async ------------------------------------------------------------------


class MapAsync(Stage):
    """Apply a coroutine function with up to ``parallelism`` calls in flight.

    ``ordered=True`` emits results in input order, ``False`` as they finish.
    """

    def __init__(self, parallelism: int, f: Callable[[Any], Awaitable[Any]], ordered: bool = True) -> None:
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise ValueError(f"map_async(parallelism, f) needs parallelism >= 1, got {parallelism!r}")
        if not callable(f):
            raise TypeError(f"map_async(parallelism, f) needs a callable f, got {f!r}")
        self.parallelism = parallelism
        self.f = f
        self.ordered = ordered
        self.name = "map_async" if ordered else "map_async_unordered"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        if self.ordered:
            return _OrderedMapAsyncLogic(self.parallelism, self.f, ctx), None
        return _UnorderedMapAsyncLogic(self.parallelism, self.f, ctx), None

    def __repr__(self) -> str:
        return f"{self.name}({self.parallelism})"


class _MapAsyncLogic(AsyncLogic):
    """What both orders share: starting calls, owning their tasks, reading input.

    A failure is in band. An upstream failure is read like the end of the
    stream: the calls for the elements before it finish and are emitted, then
    the stage fails with it. A failing call stops the reading; the calls for
    the elements before it finish and are emitted (``ordered``: in order),
    those after it are cancelled, then the stage fails with the call's error.
    """

    def __init__(self, parallelism: int, f: Callable[[Any], Awaitable[Any]], ctx: RunContext) -> None:
        self.parallelism = parallelism
        self.f = f
        self.loop_ = ctx.loop
        self.max_chunk = ctx.max_chunk
        self.wakeup = Wakeup(ctx.loop)
        #: Every task started and not yet collected: cancelled when the stage ends.
        self.tasks: set[asyncio.Future[Any]] = set()
        #: Input elements read but not started yet (the rest of the current chunk).
        self.todo: deque[Any] = deque()
        #: The error of an upstream failure already read; raised once the calls before it are emitted.
        self.upstream_error: BaseException | None = None

    def start(self, x: Any, on_done: Callable[[asyncio.Future[Any]], object]) -> asyncio.Future[Any]:
        """Call ``f(x)`` as a task owned by this stage; ``f`` raising at once is a failed call."""
        try:
            aw = self.f(x)
            if not inspect.isawaitable(aw):
                raise TypeError(
                    f"{self.stage_name}: f must return an awaitable (use an async def), "
                    f"got {type(aw).__name__} for element {x!r}"
                )
            task: asyncio.Future[Any] = asyncio.ensure_future(aw)
        except Exception as error:
            task = self.loop_.create_future()
            task.set_exception(error)
        self.tasks.add(task)
        task.add_done_callback(on_done)
        return task

    @staticmethod
    def failed(task: asyncio.Future[Any]) -> bool:
        """True for a finished call that raised or was cancelled."""
        return task.cancelled() or task.exception() is not None

    def result(self, task: asyncio.Future[Any]) -> Any:
        self.tasks.discard(task)
        if task.cancelled():
            raise RuntimeError(f"{self.stage_name}: a call was cancelled from outside the stage")
        return task.result()

    def read(self, inlet: Channel) -> list[Any] | Signal | None:
        """The next input item; an upstream failure is kept and reads as the end."""
        item = inlet.get_nowait()
        if isinstance(item, Failure):
            self.upstream_error = item.error
            return END
        return item

    def end(self) -> None:
        """Everything before the end has been emitted: complete, or fail with upstream's error."""
        if self.upstream_error is not None:
            raise self.upstream_error

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        try:
            await self.loop(inlet, out)
        finally:
            await self.cancel_all()

    async def loop(self, inlet: Channel, out: Channel) -> None:
        raise NotImplementedError

    async def cancel_all(self) -> None:
        """Cancel the calls still in flight and wait until each has ended."""
        tasks = [t for t in self.tasks if not t.done()]
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)


class _OrderedMapAsyncLogic(_MapAsyncLogic):
    async def loop(self, inlet: Channel, out: Channel) -> None:
        # Tasks in input order, with signals in their place; the head is emitted first.
        queue: deque[asyncio.Future[Any] | Signal] = deque()
        in_flight = 0  # tasks in ``queue``: started and not yet emitted
        ended = False
        first_failed: list[asyncio.Future[Any]] = []  # the first call to fail, in time
        stopped = False
        parallelism, todo, max_chunk, failed = self.parallelism, self.todo, self.max_chunk, self.failed

        def on_done(task: asyncio.Future[Any]) -> None:
            if not first_failed and failed(task):
                first_failed.append(task)
            self.wakeup.wake()

        while True:
            check_cancelled(out)
            if first_failed and not stopped:
                # Nothing after the failed call is read, started or emitted.
                stopped = ended = True
                todo.clear()
                while queue[-1] is not first_failed[0]:
                    dropped = queue.pop()
                    if not isinstance(dropped, Signal):
                        dropped.cancel()
                        in_flight -= 1
            # Emit the finished prefix (one chunk), and the signals that follow it.
            while queue:
                head = queue[0]
                if isinstance(head, Signal):
                    if not out.has_room():
                        break
                    queue.popleft()
                    put_ready(out, head)
                    continue
                if not head.done():
                    break
                if failed(head):
                    self.result(head)  # raises: everything before it was emitted
                if not out.has_room():
                    break
                chunk: list[Any] = []
                while queue and len(chunk) < max_chunk:
                    task = queue[0]
                    if isinstance(task, Signal) or not task.done() or failed(task):
                        break
                    queue.popleft()
                    chunk.append(self.result(task))
                in_flight -= len(chunk)
                put_ready(out, chunk)
            # Start calls while there is room in flight.
            while in_flight < parallelism:
                if not todo:
                    if ended:
                        break
                    item = self.read(inlet)
                    if item is None:
                        break
                    if type(item) is list:
                        todo.extend(item)
                        continue
                    if item is END:
                        ended = True
                        break
                    queue.append(item)  # type: ignore[arg-type]
                    continue
                queue.append(self.start(todo.popleft(), on_done))
                in_flight += 1
            if ended and not queue and not todo:
                self.end()
                return
            if queue and out.has_room() and (isinstance(queue[0], Signal) or queue[0].done()):
                continue  # a signal read after the last call was emitted goes out now, not with the next input
            can_read = in_flight < parallelism and not todo and not ended
            blocked_out = bool(queue) and not out.has_room()
            await self.wakeup.wait(inlet=inlet if can_read else None, outlet=out, need_room=blocked_out)


class _UnorderedMapAsyncLogic(_MapAsyncLogic):
    async def loop(self, inlet: Channel, out: Channel) -> None:
        parallelism, todo, max_chunk = self.parallelism, self.todo, self.max_chunk
        running: dict[asyncio.Future[Any], int] = {}  # call -> input position
        finished: deque[asyncio.Future[Any]] = deque()  # in the order the calls ended
        failing: list[tuple[int, asyncio.Future[Any]]] = []  # the failed call earliest in input order
        barrier: Signal | None = None  # a signal waits until every call before it is emitted
        ended = False
        started = 0
        failed = self.failed

        def on_done(task: asyncio.Future[Any]) -> None:
            position = running.pop(task, None)
            if position is None:
                return  # cancelled by the stage: it came after a failed call
            if not failed(task):
                finished.append(task)
            elif not failing or position < failing[0][0]:
                failing[:] = [(position, task)]
            self.wakeup.wake()

        while True:
            check_cancelled(out)
            if failing:
                # Only the calls before the failed one are still awaited and emitted.
                ended = True
                todo.clear()
                barrier = None
                cut = failing[0][0]
                for task, position in list(running.items()):
                    if position > cut:
                        del running[task]
                        task.cancel()
            while finished and out.has_room():
                chunk: list[Any] = []
                while finished and len(chunk) < max_chunk:
                    chunk.append(self.result(finished.popleft()))
                put_ready(out, chunk)
            if barrier is not None and not running and not finished and out.has_room():
                put_ready(out, barrier)
                barrier = None
            while barrier is None and not failing and len(running) + len(finished) < parallelism:
                if not todo:
                    if ended:
                        break
                    item = self.read(inlet)
                    if item is None:
                        break
                    if type(item) is list:
                        todo.extend(item)
                        continue
                    if item is END:
                        ended = True
                        break
                    barrier = item  # type: ignore[assignment]
                    break
                running[self.start(todo.popleft(), on_done)] = started
                started += 1
            if ended and not running and not finished and not todo and barrier is None:
                if failing:
                    self.result(failing[0][1])  # raises
                self.end()
                return
            if barrier is not None and not running and not finished and out.has_room():
                continue  # a signal read after the last call was emitted goes out now, not with the next input
            busy = len(running) + len(finished)
            can_read = barrier is None and busy < parallelism and not todo and not ended
            blocked_out = (bool(finished) or barrier is not None) and not out.has_room()
            await self.wakeup.wait(inlet=inlet if can_read else None, outlet=out, need_room=blocked_out)


# -- buffer -----------------------------------------------------------------------


class Buffer(Stage):
    """Hold up to ``size`` elements between upstream and downstream; ``overflow`` says what happens when full."""

    name = "buffer"

    def __init__(self, size: int, overflow: str = "backpressure") -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"buffer(size, overflow) needs size >= 1, got {size!r}")
        if overflow not in OVERFLOW_STRATEGIES:
            raise ValueError(
                f"buffer overflow strategy must be one of {', '.join(map(repr, OVERFLOW_STRATEGIES))}; "
                f"got {overflow!r}"
            )
        self.size = size
        self.overflow = overflow

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _BufferLogic(self.size, self.overflow, ctx), None

    def __repr__(self) -> str:
        return f"buffer({self.size}, {self.overflow!r})"


class _BufferLogic(AsyncLogic):
    """Chunks and signals in arrival order; ``count`` elements in them (signals not counted).

    Chunks stay whole unless a drop strategy trims them (by slicing: a chunk
    received is never mutated).
    """

    def __init__(self, size: int, overflow: str, ctx: RunContext) -> None:
        self.size = size
        self.overflow = overflow
        self.wakeup = Wakeup(ctx.loop)
        self.queue: deque[list[Any] | Signal] = deque()
        self.count = 0
        #: Elements dropped by an overflow strategy so far.
        self.dropped = 0

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        queue = self.queue
        backpressure = self.overflow == "backpressure"
        ended = False
        error: BaseException | None = None  # an upstream failure: raised once the queue is emitted
        try:
            while True:
                check_cancelled(out)
                while queue and out.has_room():
                    ready = queue.popleft()
                    if type(ready) is list:
                        self.count -= len(ready)
                    put_ready(out, ready)
                if not ended and (not backpressure or self.count < self.size):
                    item = inlet.get_nowait()
                    if item is not None:
                        if type(item) is list:
                            if not item:
                                pass
                            elif not queue and out.has_room():
                                put_ready(out, item)  # nothing waits: straight through
                            else:
                                self.offer(item)
                        elif item is END:
                            ended = True
                        elif isinstance(item, Failure):
                            ended, error = True, item.error
                        else:
                            queue.append(item)
                        continue
                if ended and not queue:
                    if error is not None:
                        raise error
                    return
                can_read = not ended and (not backpressure or self.count < self.size)
                await self.wakeup.wait(inlet=inlet if can_read else None, outlet=out, need_room=bool(queue))
        finally:
            if self.dropped:
                log.debug("%s: %d elements dropped in all (%s)", self.stage_name, self.dropped, self.overflow)

    def offer(self, chunk: list[Any]) -> None:
        """Add an input chunk, applying the overflow strategy to what does not fit."""
        room = self.size - self.count
        n = len(chunk)
        if n <= room or self.overflow == "backpressure":
            self.queue.append(chunk)
            self.count += n
            return
        overflow = self.overflow
        if overflow == "fail":
            raise BufferOverflowError(
                f"{self.stage_name}: buffer of size {self.size} overflowed "
                f"({self.count} elements waiting, {n} more arrived while downstream was backpressuring)"
            )
        dropped = n - room
        if overflow == "drop_new":
            if room:
                self.queue.append(chunk[:room])
                self.count += room
        elif overflow == "drop_head":
            # Each new element pushes out the oldest: keep the newest ``size`` elements.
            if n >= self.size:
                self.clear_elements()
                self.queue.append(chunk[n - self.size :])
                self.count = self.size
            else:
                self.drop_oldest(dropped)
                self.queue.append(chunk)
                self.count += n
        else:  # drop_tail: each new element replaces the newest buffered one.
            if room:
                self.queue.append(chunk[: room - 1] + [chunk[-1]])
                self.count += room
            else:
                self.drop_newest(1)
                self.queue.append([chunk[-1]])
                self.count += 1
        self.dropped += dropped
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: buffer full (size %d), dropped %d elements (%s)", self.stage_name, self.size, dropped, overflow)

    def clear_elements(self) -> None:
        """Drop every buffered element, keeping buffered signals."""
        kept = [item for item in self.queue if type(item) is not list]
        self.queue.clear()
        self.queue.extend(kept)
        self.count = 0

    def drop_oldest(self, k: int) -> None:
        queue = self.queue
        i = 0
        while k > 0:
            item = queue[i]
            if type(item) is list:
                if len(item) <= k:
                    k -= len(item)
                    self.count -= len(item)
                    del queue[i]
                else:
                    queue[i] = item[k:]
                    self.count -= k
                    k = 0
            else:
                i += 1

    def drop_newest(self, k: int) -> None:
        queue = self.queue
        i = len(queue) - 1
        while k > 0:
            item = queue[i]
            if type(item) is list:
                if len(item) <= k:
                    k -= len(item)
                    self.count -= len(item)
                    del queue[i]
                else:
                    queue[i] = item[: len(item) - k]
                    self.count -= k
                    k = 0
            i -= 1
