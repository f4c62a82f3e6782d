"""Rate decoupling and timeouts: conflate, batch, expand, keep_alive and the four timeouts.

``conflate``, ``batch`` and ``expand`` let upstream and downstream run at
different rates, so they must know when downstream is *ready*. Between tasks the
only demand signal is the channel: these stages count downstream as ready when
it has taken everything they emitted before (their output channel is empty).
Each is an :class:`~streamlib.stage.AsyncLogic` with its own task:

* ``conflate`` folds what arrives while downstream is busy into one summary
  and never holds upstream back;
* ``batch`` does the same up to a maximum weight, then backpressures;
* ``expand`` emits each element's first extrapolation at once (backpressured),
  then, while no new element arrives, one more extrapolated element each time
  downstream is ready.

``keep_alive``, ``idle_timeout``, ``completion_timeout`` and
``initial_timeout`` only watch time, so they are fused
:class:`~streamlib.stage.StageLogic` s with a timer (``uses_timers``): chunks
pass through untouched. ``backpressure_timeout`` must see downstream demand,
so it is an async stage that fails when a put waits too long.

All read time from the run's clock, so tests drive them with a virtual clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .._runtime.channel import Channel
from .._runtime.clock import Clock
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage, StageLogic
from .concurrent import Wakeup, check_cancelled, put_ready

_NONE: Any = object()


class StreamTimeoutError(TimeoutError):
    """A timeout operator (``idle_timeout``, ``completion_timeout``, ...) failed the stream.

    Catch it as ``except StreamTimeoutError``. It subclasses the builtin
    ``TimeoutError``, which since Python 3.11 is also ``asyncio.TimeoutError``:
    ``except TimeoutError`` catches a stream's timeout *and* an
    ``asyncio.wait_for`` or ``asyncio.timeout`` around the run, which raise a
    plain ``TimeoutError`` (and cancel the run). ``stage`` names the operator,
    ``seconds`` is its limit.
    """

    def __init__(self, message: str, stage: str = "", seconds: float = 0.0) -> None:
        super().__init__(message)
        self.stage = stage
        self.seconds = seconds


def _positive(value: float, what: str) -> float:
    if not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def _one(x: Any) -> int:
    return 1


# -- conflate and batch -------------------------------------------------------------


class Batch(Stage):
    """Fold elements into a summary while downstream is busy; at most ``max_weight`` per summary.

    ``max_weight`` None means unbounded (``conflate``: upstream is never held back).
    """

    def __init__(
        self,
        name: str,
        max_weight: float | None,
        cost: Callable[[Any], float],
        seed: Callable[[Any], Any],
        aggregate: Callable[[Any, Any], Any],
    ) -> None:
        if max_weight is not None and not max_weight > 0:
            raise ValueError(f"{name}: the maximum must be positive, got {max_weight!r}")
        if not (callable(seed) and callable(aggregate) and callable(cost)):
            raise TypeError(f"{name}: seed, aggregate and cost must be callable")
        self.name = name
        self.max_weight = max_weight
        self.cost = cost
        self.seed = seed
        self.aggregate = aggregate

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _BatchLogic(self, ctx), None

    def __repr__(self) -> str:
        return self.name if self.max_weight is None else f"{self.name}({self.max_weight:g})"


class _BatchLogic(AsyncLogic):
    def __init__(self, stage: Batch, ctx: RunContext) -> None:
        self.stage = stage
        self.wakeup = Wakeup(ctx.loop)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        stage = self.stage
        seed, aggregate, cost, limit = stage.seed, stage.aggregate, stage.cost, stage.max_weight
        todo: deque[Any] = deque()  # read from upstream, not folded yet (batch only)
        pending: Any = _NONE
        weight = 0.0
        ended = False
        error: BaseException | None = None  # an upstream failure: raised once the summary is out
        while True:
            check_cancelled(out)
            # Fold what was read, up to the limit.
            while todo:
                x = todo[0]
                c = cost(x) if limit is not None else 0
                if pending is not _NONE and weight + c > limit:  # type: ignore[operator]
                    break
                todo.popleft()
                pending = seed(x) if pending is _NONE else aggregate(pending, x)
                weight += c
            if pending is not _NONE and len(out) == 0:
                put_ready(out, [pending])
                pending, weight = _NONE, 0.0
                continue
            if ended and not todo:
                if pending is not _NONE:
                    await out.put([pending])
                if error is not None:
                    raise error
                return
            if not ended and not todo:
                item = inlet.get_nowait()
                if type(item) is list:
                    if limit is None:
                        for x in item:
                            pending = seed(x) if pending is _NONE else aggregate(pending, x)
                    else:
                        todo.extend(item)
                    continue
                if item is END:
                    ended = True
                    continue
                if isinstance(item, Failure):
                    ended, error = True, item.error
                    continue
                if item is not None:  # a signal keeps its place after what came before it
                    if pending is not _NONE:
                        await out.put([pending])
                        pending, weight = _NONE, 0.0
                    await out.put(item)
                    continue
            reading = not ended and not todo
            await self.wakeup.wait(inlet=inlet if reading else None, outlet=out)


def _identity(x: Any) -> Any:
    return x


def conflate(aggregate: Callable[[Any, Any], Any]) -> Stage:
    return Batch("conflate", None, _one, _identity, aggregate)


def conflate_with_seed(seed: Callable[[Any], Any], aggregate: Callable[[Any, Any], Any]) -> Stage:
    return Batch("conflate", None, _one, seed, aggregate)


def batch(max_n: int, seed: Callable[[Any], Any], aggregate: Callable[[Any, Any], Any]) -> Stage:
    if not isinstance(max_n, int) or isinstance(max_n, bool):
        raise TypeError(f"batch(max, seed, aggregate) needs an int max, got {max_n!r}")
    return Batch("batch", max_n, _one, seed, aggregate)


def batch_weighted(
    max_weight: float,
    cost: Callable[[Any], float],
    seed: Callable[[Any], Any],
    aggregate: Callable[[Any, Any], Any],
) -> Stage:
    return Batch("batch_weighted", max_weight, cost, seed, aggregate)


# -- expand -------------------------------------------------------------------------------


class Expand(Stage):
    """Extrapolate from the last element while downstream is faster than upstream."""

    name = "expand"

    def __init__(self, extrapolate: Callable[[Any], Iterable[Any]]) -> None:
        if not callable(extrapolate):
            raise TypeError(f"expand(extrapolate) needs a callable, got {extrapolate!r}")
        self.extrapolate = extrapolate

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _ExpandLogic(self.extrapolate, ctx), None


class _ExpandLogic(AsyncLogic):
    def __init__(self, extrapolate: Callable[[Any], Iterable[Any]], ctx: RunContext) -> None:
        self.extrapolate = extrapolate
        self.wakeup = Wakeup(ctx.loop)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        extrapolate = self.extrapolate
        current: Iterator[Any] | None = None
        while True:
            check_cancelled(out)
            item = inlet.get_nowait()
            if type(item) is list:
                firsts = []
                for x in item:
                    current = iter(extrapolate(x))
                    first = next(current, _NONE)
                    if first is not _NONE:
                        firsts.append(first)
                if firsts:
                    await out.put(firsts)
                continue
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            if item is not None:
                await out.put(item)
                continue
            if current is not None and len(out) == 0:
                nxt = next(current, _NONE)
                if nxt is _NONE:
                    current = None
                else:
                    put_ready(out, [nxt])
                continue
            await self.wakeup.wait(inlet=inlet, outlet=out)


# -- timers: keep_alive and the timeouts -------------------------------------------------


class _TimerStage(Stage):
    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = _positive(seconds, f"{name}(seconds)")

    def __repr__(self) -> str:
        return f"{self.name}({self.seconds:g})"


class KeepAlive(_TimerStage):
    """Inject ``inject()`` whenever no element passed for ``seconds``."""

    def __init__(self, seconds: float, inject: Callable[[], Any]) -> None:
        super().__init__("keep_alive", seconds)
        if not callable(inject):
            raise TypeError(f"keep_alive(max_idle, inject) needs a callable inject, got {inject!r}")
        self.inject = inject

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        return _KeepAliveLogic(self.seconds, self.inject, ctx.clock), None


class _KeepAliveLogic(StageLogic):
    uses_timers = True

    def __init__(self, seconds: float, inject: Callable[[], Any], clock: Clock) -> None:
        self.seconds = seconds
        self.inject = inject
        self.clock = clock

    def on_start(self) -> list[Any]:
        self.timer_at = self.clock.now() + self.seconds
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        if chunk:
            self.timer_at = self.clock.now() + self.seconds
        return chunk

    def on_timer(self, now: float) -> list[Any]:
        self.timer_at = now + self.seconds
        return [self.inject()]

    def on_finish(self) -> list[Any]:
        self.timer_at = None
        return []


class Timeout(_TimerStage):
    """Fail the stream with :class:`StreamTimeoutError` when ``kind``'s deadline passes.

    ``idle``: no element for ``seconds``; ``completion``: not complete within
    ``seconds`` of the start; ``initial``: no first element within ``seconds``.
    """

    def __init__(self, kind: str, seconds: float) -> None:
        super().__init__(f"{kind}_timeout", seconds)
        self.kind = kind

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        return _TimeoutLogic(self.kind, self.seconds, ctx.clock), None


class _TimeoutLogic(StageLogic):
    uses_timers = True

    def __init__(self, kind: str, seconds: float, clock: Clock) -> None:
        self.kind = kind
        self.seconds = seconds
        self.clock = clock

    def on_start(self) -> list[Any]:
        self.timer_at = self.clock.now() + self.seconds
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        if chunk:
            if self.kind == "idle":
                self.timer_at = self.clock.now() + self.seconds
            elif self.kind == "initial":
                self.timer_at = None
        return chunk

    def on_timer(self, now: float) -> list[Any]:
        what = {
            "idle": f"no element passed for {self.seconds:g} s",
            "completion": f"the stream did not complete within {self.seconds:g} s",
            "initial": f"no first element within {self.seconds:g} s",
        }[self.kind]
        raise StreamTimeoutError(f"{self.stage_name}: {what}", self.stage_name, self.seconds)

    def on_finish(self) -> list[Any]:
        self.timer_at = None
        return []


class BackpressureTimeout(_TimerStage):
    """Fail the stream when downstream takes nothing for ``seconds`` while an element waits."""

    def __init__(self, seconds: float) -> None:
        super().__init__("backpressure_timeout", seconds)

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _BackpressureTimeoutLogic(self.seconds, ctx), None


class _BackpressureTimeoutLogic(AsyncLogic):
    def __init__(self, seconds: float, ctx: RunContext) -> None:
        self.seconds = seconds
        self.clock = ctx.clock
        self.wakeup = Wakeup(ctx.loop)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        clock = self.clock
        while True:
            item = await inlet.get()
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            if not out.has_room():
                deadline = clock.now() + self.seconds
                while not out.has_room():
                    check_cancelled(out)
                    if clock.now() >= deadline:
                        raise StreamTimeoutError(
                            f"{self.stage_name}: downstream took nothing for {self.seconds:g} s",
                            self.stage_name,
                            self.seconds,
                        )
                    await self.wakeup.wait(outlet=out, need_room=True, clock=clock, at=deadline)
            check_cancelled(out)
            put_ready(out, item)
