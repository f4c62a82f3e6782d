"""A virtual clock: timers fire when the test says time has passed, never by sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: How many rounds of the event loop :func:`settle` runs at most.
SETTLE_ROUNDS = 10_000


async def settle() -> None:
    """Run every task that can run until all of them wait on something.

    Each round yields to the event loop once, so every task that is ready takes one step;
    it returns once no task or callback is ready to run: every task waits on a future, an
    event, a queue, I/O, a thread or a timer. Neither the loop's time nor a
    :class:`VirtualClock` moves. Use it in a test instead of counting ``asyncio.sleep(0)``,
    then assert what the pipeline did up to where it waits (for example, how far it pulled
    before backpressure stopped it)::

        sink = Source.from_iterable(range(5)).run_with(TestSink.probe())
        await settle()
        assert sink.demand == 0

    A task that never waits (``while True: await asyncio.sleep(0)``) keeps the loop busy;
    then it returns after ``SETTLE_ROUNDS`` (10,000) rounds. On an event loop other than
    asyncio's own (e.g. uvloop) it cannot see what is ready and always runs that many.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # asyncio's queue of callbacks due on the next round
    for _ in range(SETTLE_ROUNDS):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            # One more round: a callback run just now may have woken a task.
            await asyncio.sleep(0)
            if not ready:
                return


class _Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that only moves when told to: ``await clock.advance(seconds)``.

    Pass it to a run (``graph.run(clock=clock)``) and every timer of the run
    (``tick``, ``grouped_within``, ``throttle``, window idle timeouts) follows it.
    ``await clock.run(awaitable)`` jumps time forward whenever every task is
    waiting, until the awaitable is done, so a test of a 10-minute window takes
    milliseconds.

    >>> clock = VirtualClock()
    >>> done = Source.tick(1.0, "t").take(3).to_mat(Sink.collect(), Keep.right).run(clock=clock)
    >>> await clock.run(done)
    ['t', 't', 't']
    """

    def __init__(self, start: float = 0.0, wall_start_ms: int = 1_700_000_000_000) -> None:
        self._now = start
        self._start = start
        self._wall_start_ms = wall_start_ms
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall_ms(self) -> int:
        return self._wall_start_ms + int(round((self._now - self._start) * 1000))

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_at(self._now + max(seconds, 0.0), wake)
        try:
            await fut
        finally:
            timer.cancel()

    def next_timer(self) -> float | None:
        """When the earliest pending timer is due, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def settle(self) -> None:
        """Run every task that can run until all of them wait on something (see :func:`settle`).

        Time does not move: a timer of this clock fires only in ``advance`` or ``run``.
        """
        await settle()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing due timers in order."""
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        """Move time forward to ``when``, firing due timers in order."""
        await self.settle()
        while True:
            due = self.next_timer()
            if due is None or due > when:
                break
            _w, _s, timer = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            timer.callback()
            await self.settle()
        self._now = max(self._now, when)
        await self.settle()

    async def run(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``awaitable``, jumping to the next timer whenever all tasks wait.

        Raises ``TimeoutError`` when ``timeout`` virtual seconds pass first, and
        ``RuntimeError`` when nothing can happen any more (no timer pending).
        """
        fut: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        limit = None if timeout is None else self._now + timeout
        try:
            while True:
                await self.settle()
                if fut.done():
                    return fut.result()
                due = self.next_timer()
                if due is None:
                    raise RuntimeError("deadlock: the awaited work waits, and no timer is pending")
                if limit is not None and due > limit:
                    self._now = limit
                    raise TimeoutError(f"not done after {timeout} virtual seconds")
                await self.advance_to(due)
        finally:
            if not fut.done():
                fut.cancel()
                try:
                    await fut
                except BaseException:
                    pass

