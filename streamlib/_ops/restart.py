"""Restarting a Source, Flow or Sink with exponential backoff when it fails.

``RestartSource.with_backoff(min_backoff, max_backoff, random_factor,
max_restarts, factory)`` is a Source that runs ``factory()`` (a Source
blueprint) as a sub-run and forwards its elements. When that run fails — or, for
``with_backoff``, also when it completes — the stage waits and runs a fresh
``factory()``. Downstream sees one uninterrupted stream: no failure, only the
gap of the backoff. Elements the failed run emitted stay emitted; nothing is
replayed. ``on_failures_with_backoff`` restarts only after failures: a
completion completes the stage.

The delay before restart number ``n`` (0-based) is
``min(max_backoff, min_backoff * 2**n) * (1 + random() * random_factor)``
(Akka's schedule: capped, then jittered). ``max_restarts`` bounds the restarts
(negative: unbounded); once reached, the stage ends as its last run did (fails
with its error or completes). A run that lasted ``max_restarts_within`` seconds
(default: ``min_backoff``) resets the count, so a source that fails once an hour
never runs out of restarts and restarts after a short delay again.

``RestartFlow`` restarts the inner Flow; the elements inside the failed flow are
lost, upstream is backpressured while it backs off, and an upstream completion or
failure ends the stage without restart. ``RestartSink`` restarts the inner Sink
(when it fails or cancels); upstream is backpressured while it backs off.

A failure that is not retried always surfaces: once the restarts are used up,
or when the inner run fails after upstream ended (the end was handed to it, so a
new run would have nothing to process), the stage fails with that error -- for
a Source or Flow downstream, for a Sink through its materialized future. One
loop (:meth:`_RestartLogic.run`) serves the three kinds; they differ only in how
one inner run is wired and what ends it.

Sleeping uses the run's clock, so tests drive the schedule with a virtual clock.
Sub-runs are owned by the stage: cancelling the run cancels them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .._dsl.module import Module
from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.clock import Clock
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage, fail_future
from ._subrun import SubRun, SubRuns, close_flow, close_sink, close_source
from .concurrent import Wakeup

if TYPE_CHECKING:
    from .._dsl.flow import Flow
    from .._dsl.sink import Sink
    from .._dsl.source import Source

log = logging.getLogger("streamlib.restart")

T = TypeVar("T")
U = TypeVar("U")

_rng = random.Random()


def _secs(value: float | timedelta, what: str) -> float:
    s = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if s < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return s


@dataclass(frozen=True)
class RestartSettings:
    """The backoff schedule of a restart stage (see the module docstring for the formula)."""

    min_backoff: float
    max_backoff: float
    random_factor: float
    max_restarts: int = -1
    max_restarts_within: float | None = None

    @staticmethod
    def create(
        min_backoff: float | timedelta,
        max_backoff: float | timedelta,
        random_factor: float,
        max_restarts: int = -1,
        max_restarts_within: float | timedelta | None = None,
    ) -> RestartSettings:
        lo = _secs(min_backoff, "min_backoff")
        hi = _secs(max_backoff, "max_backoff")
        if hi < lo:
            raise ValueError(f"max_backoff ({hi}s) must not be below min_backoff ({lo}s)")
        if random_factor < 0:
            raise ValueError(f"random_factor must not be negative, got {random_factor}")
        if not isinstance(max_restarts, int):
            raise TypeError(f"max_restarts must be an int (negative: unbounded), got {max_restarts!r}")
        within = None if max_restarts_within is None else _secs(max_restarts_within, "max_restarts_within")
        return RestartSettings(lo, hi, float(random_factor), max_restarts, within)

    def delay(self, restart_count: int, rnd: float | None = None) -> float:
        """Seconds to wait before restart number ``restart_count`` (0-based)."""
        base = min(self.max_backoff, self.min_backoff * 2.0 ** min(restart_count, 1000))
        jitter = _rng.random() if rnd is None else rnd
        return base * (1.0 + jitter * self.random_factor)


class _Backoff:
    """Restart counting and delays for one run of a restart stage."""

    def __init__(self, settings: RestartSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.count = 0
        self.reset_at = 0.0

    def started(self) -> None:
        s = self.settings
        within = s.min_backoff if s.max_restarts_within is None else s.max_restarts_within
        self.reset_at = self.clock.now() + within

    def exhausted(self) -> bool:
        if self.clock.now() >= self.reset_at and self.count:
            self.count = 0  # the last run lasted long enough: start the schedule over
        limit = self.settings.max_restarts
        return 0 <= limit <= self.count

    def next_delay(self) -> float:
        delay = self.settings.delay(self.count)
        self.count += 1
        return delay


async def _sleep_unless_cancelled(clock: Clock, seconds: float, out: Channel | None) -> None:
    """Sleep on ``clock``; wake early when ``out``'s consumer cancels."""
    loop = asyncio.get_running_loop()
    deadline = clock.now() + seconds
    while clock.now() < deadline and not (out is not None and out.cancelled):
        fut: asyncio.Future[None] = loop.create_future()

        def wake(f: asyncio.Future[None] = fut) -> None:
            if not f.done():
                f.set_result(None)

        handle = clock.call_at(deadline, wake)
        if out is not None:
            out._putter = fut  # a consumer's cancel() (or get) resolves the producer's waiter
        try:
            await fut
        finally:
            handle.cancel()
            if out is not None and out._putter is fut:
                out._putter = None


def _module_of(blueprint: Any, kind: str, stage: str) -> Module:
    module = getattr(blueprint, "_module", None)
    ok = isinstance(module, Module) and {
        "Source": module.inlet is None and module.outlet is not None,
        "Flow": module.inlet is not None and module.outlet is not None,
        "Sink": module.inlet is not None and module.outlet is None,
    }[kind]
    if not ok:
        raise TypeError(f"{stage}: the factory must return a {kind}, got {blueprint!r}")
    assert isinstance(module, Module)
    return module


def _future_error(value: Any) -> BaseException | None:
    """The error of a materialized future that failed, if ``value`` is one."""
    if isinstance(value, asyncio.Future) and value.done() and not value.cancelled():
        return value.exception()
    return None


class _RestartStage(Stage):
    kind = ""

    def __init__(self, settings: RestartSettings, factory: Callable[[], Any], only_on_failures: bool) -> None:
        if not callable(factory):
            raise TypeError(f"Restart{self.kind}: factory must be callable, got {factory!r}")
        self.settings = settings
        self.factory = factory
        self.only_on_failures = only_on_failures
        self.name = f"Restart{self.kind}"

    def __repr__(self) -> str:
        return f"Restart{self.kind}({getattr(self.factory, '__name__', 'factory')})"


class _RestartLogic(AsyncLogic):
    """The restart loop shared by the three kinds; a subclass runs the inner blueprint once.

    A run ends the stage when upstream ended (and the end was handed to the
    inner blueprint), when it completed and only failures restart, or when no
    restart is left; the stage then ends as that run did. Otherwise the stage
    backs off and runs a fresh ``factory()``.
    """

    def __init__(self, stage: _RestartStage, ctx: RunContext) -> None:
        self.stage = stage
        self.ctx = ctx
        self.backoff = _Backoff(stage.settings, ctx.clock)
        self.runs = SubRuns()
        #: Upstream ended and the end was handed to the inner run: nothing is left to restart with.
        self.finishing = False
        self.upstream_error: BaseException | None = None

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        out = outlets[0] if outlets else None
        try:
            while True:
                self.backoff.started()
                module = self._blueprint()
                error = module if not isinstance(module, Module) else await self._run_once(module, inlets, out)
                if self.finishing or (error is None and self.stage.only_on_failures):
                    break
                if not await self._back_off(error, out):
                    if out is not None and out.cancelled:
                        raise DownstreamCancelled(out.name)
                    break
        finally:
            await self.runs.aclose()
        if error is not None:
            raise error

    async def _run_once(self, module: Module, inlets: Sequence[Channel], out: Channel | None) -> BaseException | None:
        """Run ``module`` until it ends; its error, or None when it completed (or, a sink, cancelled)."""
        raise NotImplementedError

    def _blueprint(self) -> Module | BaseException:
        """The next run's blueprint; a factory that raises counts as a failed run."""
        try:
            blueprint = self.stage.factory()
        except Exception as error:
            return error
        return _module_of(blueprint, self.stage.kind, self.stage_name)

    async def _back_off(self, error: BaseException | None, out: Channel | None) -> bool:
        """Sleep before the next restart; False when no restart is left."""
        if self.backoff.exhausted():
            return False
        delay = self.backoff.next_delay()
        why = "it completed" if error is None else f"{type(error).__name__}: {error}"
        log.warning("'%s' restarts in %.3fs (restart %d) after %s", self.stage_name, delay, self.backoff.count, why)
        await _sleep_unless_cancelled(self.ctx.clock, delay, out)
        return not (out is not None and out.cancelled)

    async def _feed(self, inlet: Channel, into: Channel) -> None:
        """Forward upstream into the inner run until upstream ends (handing the end on) or the run goes away."""
        while True:
            item = await inlet.get()
            if item is END or isinstance(item, Failure):
                self.finishing = True
                if isinstance(item, Failure):
                    self.upstream_error = item.error
                into.put_final(item)  # type: ignore[arg-type]
                return
            try:
                await into.put(item)
            except DownstreamCancelled:
                return  # the inner run is gone (failed or completed); the element is lost with it


async def _forward(inner: Channel, out: Channel) -> BaseException | None:
    """Forward ``inner`` to ``out`` until it ends; its error, or None when it completed.

    Raises :class:`DownstreamCancelled` as soon as ``out``'s consumer cancels, even
    while the inner run is idle.
    """
    wakeup = Wakeup(asyncio.get_running_loop())
    while True:
        item = inner.get_nowait()
        if item is None:
            if out.cancelled:
                raise DownstreamCancelled(out.name)
            await wakeup.wait(inlet=inner, outlet=out)
            continue
        if item is END:
            return None
        if isinstance(item, Failure):
            return item.error
        await out.put(item)


class _RestartSourceStage(_RestartStage):
    inputs = 0
    outputs = 1
    kind = "Source"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _RestartSourceLogic(self, ctx), None


class _RestartSourceLogic(_RestartLogic):
    async def _run_once(self, module: Module, inlets: Sequence[Channel], out: Channel | None) -> BaseException | None:
        assert out is not None
        ch = Channel(self.ctx.channel_capacity, f"{self.stage_name}.inner")
        run = self.runs.start(close_source(module, ch), self.ctx, f"{self.stage_name}:run")
        try:
            return await _forward(ch, out)
        finally:
            ch.cancel()
            run.cancel()
            await run.wait()


class _RestartFlowStage(_RestartStage):
    inputs = 1
    outputs = 1
    kind = "Flow"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _RestartFlowLogic(self, ctx), None


class _RestartFlowLogic(_RestartLogic):
    async def _run_once(self, module: Module, inlets: Sequence[Channel], out: Channel | None) -> BaseException | None:
        assert out is not None
        cap = self.ctx.channel_capacity
        into = Channel(cap, f"{self.stage_name}.in")
        back = Channel(cap, f"{self.stage_name}.out")
        run = self.runs.start(close_flow(into, module, back), self.ctx, f"{self.stage_name}:run")
        feeder = self.ctx.loop.create_task(self._feed(inlets[0], into))
        try:
            return await _forward(back, out)
        finally:
            feeder.cancel()
            back.cancel()
            into.cancel()
            await _end([feeder], run)


async def _end(tasks: list[asyncio.Task[Any]], run: SubRun) -> None:
    """Cancel the sub-run and wait for it and ``tasks`` (already cancelled) to end."""
    run.cancel()
    try:
        await asyncio.wait([*tasks, run.task])
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        run.cancel()
        raise
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


def _run_error(run: SubRun) -> BaseException | None:
    """The error of an ended sink run: of its materialized value, else of any future it materialized.

    A sink reports a failure only through its futures (it has no output); a
    sink whose own value is not a future (``flow.to(sink)``) still has the
    inner sink's future among the run's.
    """
    error = _future_error(run.value)
    if error is None:
        for fut in run.graph.futures:
            error = _future_error(fut)
            if error is not None:
                break
    return error


class _RestartSinkStage(_RestartStage):
    inputs = 1
    outputs = 0
    kind = "Sink"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, asyncio.Future[None]]:
        fut: asyncio.Future[None] = ctx.new_future()
        return _RestartSinkLogic(self, ctx, fut), fut


class _RestartSinkLogic(_RestartLogic):
    def __init__(self, stage: _RestartStage, ctx: RunContext, fut: asyncio.Future[None]) -> None:
        super().__init__(stage, ctx)
        self.fut = fut

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        try:
            await super().run(inlets, outlets)
        except BaseException as error:
            fail_future(self.fut, error)
            raise
        if not self.fut.done():
            self.fut.set_result(None)

    def on_failure(self, error: BaseException) -> None:
        fail_future(self.fut, error)

    async def _run_once(self, module: Module, inlets: Sequence[Channel], out: Channel | None) -> BaseException | None:
        into = Channel(self.ctx.channel_capacity, f"{self.stage_name}.in")
        run = self.runs.start(close_sink(into, module), self.ctx, f"{self.stage_name}:run")
        feeder = self.ctx.loop.create_task(self._feed(inlets[0], into))
        try:
            # The run ends when the inner sink finished the end it was handed, failed or cancelled.
            await run.wait()
        finally:
            feeder.cancel()
            into.cancel()
            await _end([feeder], run)
        return _run_error(run) or (self.upstream_error if self.finishing else None)


class RestartSource:
    """Sources that run again, after a backoff, when they fail."""

    @staticmethod
    def with_backoff(
        min_backoff: float | timedelta,
        max_backoff: float | timedelta,
        random_factor: float,
        max_restarts: int,
        factory: Callable[[], Source[T, Any]],
        *,
        max_restarts_within: float | timedelta | None = None,
    ) -> Source[T, None]:
        """A Source running ``factory()``, run again after a backoff whenever it fails or completes.

        Emits what the current inner source emits; backpressures when downstream
        does (and, while backing off, emits nothing); completes or fails as the
        last run did once ``max_restarts`` restarts were used (negative: never);
        cancels the inner source when downstream cancels. Chunks pass unchanged.

        >>> src = RestartSource.with_backoff(1.0, 30.0, 0.2, -1, lambda: websocket_source(url))
        """
        from .._dsl.source import Source

        settings = RestartSettings.create(min_backoff, max_backoff, random_factor, max_restarts, max_restarts_within)
        return Source(Module.of(_RestartSourceStage(settings, factory, only_on_failures=False)))

    @staticmethod
    def on_failures_with_backoff(
        min_backoff: float | timedelta,
        max_backoff: float | timedelta,
        random_factor: float,
        max_restarts: int,
        factory: Callable[[], Source[T, Any]],
        *,
        max_restarts_within: float | timedelta | None = None,
    ) -> Source[T, None]:
        """Like ``with_backoff``, but only a failure restarts: a completion completes the stage.

        >>> rows = RestartSource.on_failures_with_backoff(0.5, 10, 0.1, 5, lambda: query_source(db))
        """
        from .._dsl.source import Source

        settings = RestartSettings.create(min_backoff, max_backoff, random_factor, max_restarts, max_restarts_within)
        return Source(Module.of(_RestartSourceStage(settings, factory, only_on_failures=True)))


class RestartFlow:
    """Flows that are materialized again, after a backoff, when they fail."""

    @staticmethod
    def with_backoff(
        min_backoff: float | timedelta,
        max_backoff: float | timedelta,
        random_factor: float,
        max_restarts: int,
        factory: Callable[[], Flow[T, U, Any]],
        *,
        max_restarts_within: float | timedelta | None = None,
    ) -> Flow[T, U, None]:
        """A Flow running ``factory()``, run again after a backoff when it fails or completes early.

        Emits what the inner flow emits; backpressures when downstream does and
        while backing off; completes when upstream completed and the inner flow
        finished; fails when the inner flow fails after ``max_restarts`` restarts.
        Elements inside the failed inner flow are lost.

        >>> calls = RestartFlow.with_backoff(1, 30, 0.2, 10, lambda: Flow.map_async(4, call_service))
        """
        from .._dsl.flow import Flow

        settings = RestartSettings.create(min_backoff, max_backoff, random_factor, max_restarts, max_restarts_within)
        return Flow(Module.of(_RestartFlowStage(settings, factory, only_on_failures=False)))

    @staticmethod
    def on_failures_with_backoff(
        min_backoff: float | timedelta,
        max_backoff: float | timedelta,
        random_factor: float,
        max_restarts: int,
        factory: Callable[[], Flow[T, U, Any]],
        *,
        max_restarts_within: float | timedelta | None = None,
    ) -> Flow[T, U, None]:
        """Like ``with_backoff``, but only a failure restarts: an early completion completes the stage."""
        from .._dsl.flow import Flow

        settings = RestartSettings.create(min_backoff, max_backoff, random_factor, max_restarts, max_restarts_within)
        return Flow(Module.of(_RestartFlowStage(settings, factory, only_on_failures=True)))


class RestartSink:
    """Sinks that are materialized again, after a backoff, when they fail or cancel."""

    @staticmethod
    def with_backoff(
        min_backoff: float | timedelta,
        max_backoff: float | timedelta,
        random_factor: float,
        max_restarts: int,
        factory: Callable[[], Sink[T, Any]],
        *,
        max_restarts_within: float | timedelta | None = None,
    ) -> Sink[T, asyncio.Future[None]]:
        """A Sink running ``factory()``, run again after a backoff when it fails or cancels.

        Backpressures when the inner sink does and while backing off. Its
        materialized future completes when upstream completed and the inner sink
        finished with that end; it fails with every failure that is not retried:
        the inner sink failing after upstream completed (nothing is left to
        retry with), the inner sink failing once ``max_restarts`` restarts are
        used, and an upstream failure. An inner sink reports failure through its
        materialized future or any future its blueprint materializes
        (``flow.to(Sink.foreach(f))`` included). A cancel with no restart left
        cancels upstream and completes the future. The inner sinks'
        materialized values are not exposed.

        >>> done = orders.run_with(RestartSink.with_backoff(1, 30, 0.2, 10, lambda: Sink.foreach(write_to_db)))
        >>> await done  # raises what the 11th failure of write_to_db raised
        """
        from .._dsl.sink import Sink

        settings = RestartSettings.create(min_backoff, max_backoff, random_factor, max_restarts, max_restarts_within)
        return Sink(Module.of(_RestartSinkStage(settings, factory, only_on_failures=False)))
