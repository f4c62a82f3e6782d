"""Operators driven by processing time: ``grouped_within``, ``throttle``, ``delay``.

All of them read time from the run's clock (``ctx.clock``), never from
``time`` or ``asyncio``, so a :class:`~streamlib.testing.VirtualClock` drives
them in tests.

* ``grouped_within`` never needs to hold upstream back, so it is a fused
  :class:`~streamlib.stage.StageLogic` with a timer (``uses_timers``): the
  island calls ``on_timer`` when ``timer_at`` passes, even while no input
  arrives.
* ``throttle`` and ``delay`` must hold elements back, so each is an
  :class:`~streamlib.stage.AsyncLogic` task between two channels. They keep
  chunks whole where they can (a chunk arrives at one instant), keep signals in
  their place among the elements, and treat an upstream failure in band: the
  elements before it leave on their schedule, then the stage fails.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from .._runtime.channel import Channel
from .._runtime.clock import Clock
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure, Signal
from ..stage import AsyncLogic, Stage, StageLogic
from .concurrent import Wakeup, check_cancelled, put_ready


def _positive_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _duration(value: object, what: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{what} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return float(value)


# -- grouped_within ---------------------------------------------------------------


class GroupedWithin(Stage):
    """Lists of up to ``n`` elements, emitted when full or when ``seconds`` have passed."""

    name = "grouped_within"

    def __init__(self, n: int, seconds: float) -> None:
        self.n = _positive_int(n, "grouped_within(n, seconds): n")
        self.seconds = _duration(seconds, "grouped_within(n, seconds): seconds", positive=True)

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        return _GroupedWithinLogic(self.n, self.seconds, ctx.clock), None

    def __repr__(self) -> str:
        return f"grouped_within({self.n}, {self.seconds})"


class _GroupedWithinLogic(StageLogic):
    """A periodic timer, restarted at each emission, armed only while elements wait.

    Ticks fall at ``phase + k * interval`` (k >= 1), ``phase`` being the last
    emission (or the start). A tick with elements buffered emits them; a tick
    with none does nothing, so the timer is armed only when the buffer holds
    something: at the first tick strictly after the first element arrived.
    """

    uses_timers = True

    def __init__(self, n: int, interval: float, clock: Clock) -> None:
        self.n = n
        self.interval = interval
        self.clock = clock
        self.buf: list[Any] = []
        self.phase = 0.0

    def on_start(self) -> list[Any]:
        self.phase = self.clock.now()
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        if not chunk:
            return []
        buf = self.buf
        was_empty = not buf
        buf.extend(chunk)
        n = self.n
        if len(buf) < n:
            if was_empty:
                self._arm(self.clock.now())
            return []
        full = len(buf) - len(buf) % n
        out = [buf[i : i + n] for i in range(0, full, n)]
        self.buf = buf[full:]
        self._emitted(self.clock.now())
        return out

    def _arm(self, now: float) -> None:
        """Set the timer to the first tick strictly after ``now``."""
        phase, interval = self.phase, self.interval
        at = phase + (math.floor((now - phase) / interval) + 1) * interval
        while at <= now:  # float rounding
            at += interval
        self.timer_at = at

    def _emitted(self, now: float) -> None:
        self.phase = now
        self.timer_at = now + self.interval if self.buf else None

    def on_timer(self, now: float) -> list[Any]:
        if not self.buf:
            return []
        out = [self.buf]
        self.buf = []
        self._emitted(now)
        return out

    def on_signal(self, signal: Signal) -> list[Any] | None:
        # The elements before a watermark or barrier must reach downstream before it.
        if not self.buf:
            return None
        out = [self.buf]
        self.buf = []
        self._emitted(self.clock.now())
        return out

    def on_finish(self) -> list[Any]:
        self.timer_at = None
        out = [self.buf] if self.buf else []
        self.buf = []
        return out

    def on_failure(self, error: BaseException) -> None:
        self._reset()

    def on_cancel(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.buf = []
        self.timer_at = None


# -- throttle ---------------------------------------------------------------------


class Throttle(Stage):
    """Pass at most ``elements`` per ``per_seconds`` (token bucket of ``max(burst, 1)`` tokens)."""

    name = "throttle"

    def __init__(self, elements: int, per_seconds: float, burst: int = 0) -> None:
        self.elements = _positive_int(elements, "throttle(elements, per, burst): elements")
        self.per_seconds = _duration(per_seconds, "throttle(elements, per, burst): per", positive=True)
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
            raise ValueError(f"throttle(elements, per, burst): burst must be an int >= 0, got {burst!r}")
        self.burst = burst

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _ThrottleLogic(self.per_seconds / self.elements, max(self.burst, 1), ctx), None

    def __repr__(self) -> str:
        return f"throttle({self.elements}, {self.per_seconds}, burst={self.burst})"


class _ThrottleLogic(AsyncLogic):
    """A token bucket kept as a theoretical arrival time (GCRA).

    One token every ``interval`` seconds, at most ``capacity`` saved, the bucket
    full at start. ``tat`` is when the bucket would next be empty-and-refilled
    by one token: an element may pass at ``now`` when ``tat - tolerance <= now``
    with ``tolerance = (capacity - 1) * interval``, and each passing element
    moves ``tat`` one interval on. Exact with a virtual clock: element times are
    sums of intervals, nothing is rounded through a token count.
    """

    def __init__(self, interval: float, capacity: int, ctx: RunContext) -> None:
        self.interval = interval
        self.tolerance = (capacity - 1) * interval
        self.clock = ctx.clock
        self.wakeup = Wakeup(ctx.loop)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        clock, interval, tolerance = self.clock, self.interval, self.tolerance
        tat = clock.now()
        while True:
            check_cancelled(out)
            item = inlet.get_nowait()
            if item is None:
                await self.wakeup.wait(inlet=inlet, outlet=out)  # also woken by a cancel downstream
                continue
            if type(item) is not list:
                if item is END:
                    return
                if isinstance(item, Failure):
                    raise item.error
                await out.put(item)
                continue
            i, n = 0, len(item)
            while i < n:
                now = clock.now()
                if tat < now:
                    tat = now
                k = 0
                while i + k < n and tat - tolerance <= now:
                    tat += interval
                    k += 1
                if k:
                    await out.put(item if k == n else item[i : i + k])
                    i += k
                if i < n:
                    await self.wakeup.wait(outlet=out, clock=clock, at=tat - tolerance)
                    check_cancelled(out)


# -- delay ------------------------------------------------------------------------


class Delay(Stage):
    """Emit each element ``seconds`` after it arrived, order kept; at most ``max_pending`` waiting."""

    name = "delay"

    def __init__(self, seconds: float, max_pending: int | None = None) -> None:
        self.seconds = _duration(seconds, "delay(seconds)", positive=False)
        if max_pending is not None:
            _positive_int(max_pending, "delay max_pending")
        self.max_pending = max_pending

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        bound = self.max_pending if self.max_pending is not None else ctx.channel_capacity
        return _DelayLogic(self.seconds, bound, ctx), None

    def __repr__(self) -> str:
        return f"delay({self.seconds})"


_NOW = -math.inf  # the due time of a signal: it leaves as soon as it is at the head


class _DelayLogic(AsyncLogic):
    """A FIFO of (due time, chunk or signal); input is read while fewer than ``bound`` elements wait."""

    def __init__(self, seconds: float, bound: int, ctx: RunContext) -> None:
        self.seconds = seconds
        self.bound = bound
        self.clock = ctx.clock
        self.wakeup = Wakeup(ctx.loop)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        clock, seconds, bound = self.clock, self.seconds, self.bound
        pending: deque[tuple[float, list[Any] | Signal]] = deque()
        count = 0
        ended = False
        error: BaseException | None = None  # an upstream failure: raised once ``pending`` is emitted
        while True:
            check_cancelled(out)
            now = clock.now()
            while pending and pending[0][0] <= now and out.has_room():
                ready = pending.popleft()[1]
                if type(ready) is list:
                    count -= len(ready)
                put_ready(out, ready)
            if not ended and count < bound:
                item = inlet.get_nowait()
                if item is not None:
                    if type(item) is list:
                        if item:
                            pending.append((clock.now() + seconds, item))
                            count += len(item)
                    elif item is END:
                        ended = True
                    elif isinstance(item, Failure):
                        ended, error = True, item.error
                    else:
                        pending.append((_NOW, item))
                    continue
            if ended and not pending:
                if error is not None:
                    raise error
                return
            due = pending[0][0] if pending else None
            await self.wakeup.wait(
                inlet=inlet if not ended and count < bound else None,
                outlet=out,
                need_room=due is not None and due <= now,
                clock=clock,
                at=due if due is not None and due > now else None,
            )
