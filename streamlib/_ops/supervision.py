"""Supervision: what a stage does when a user function raises, and recovering from failures.

A *decider* maps the exception a user function raised to a directive:

* ``"stop"`` — fail the stream with the exception (the default);
* ``"resume"`` — drop the element that caused it, log it with the stage name, go on;
* ``"restart"`` — like resume, and reset the stage's state first (a ``scan``
  accumulator goes back to its zero, which is emitted again; ``fold`` goes back to
  its zero; ``reduce`` to empty; ``drop_while`` drops again).

Only :class:`Exception` s are supervised; cancellation and ``KeyboardInterrupt``
always stop.

How it is wired: ``with_supervision(decider)`` on a Source or Flow returns a
copy of the blueprint whose last stage is wrapped in a :class:`SupervisedStage`.
A supervised element-wise stage materializes :class:`SupervisedChainLogic`, which
evaluates its one op element by element (so it knows the failing element). It
never merges with the neighbouring fused chain and the compiled chain runner does
not replace it; unsupervised chains are untouched. ``fold`` and ``reduce`` get
:class:`SupervisedStepLogic`, which feeds their ordinary logic one element at a
time and re-materializes the stage on restart.

Stages that honour supervision: ``map``, ``filter``, ``filter_not``,
``map_concat``, ``collect``, ``take_while``, ``drop_while``, ``scan``, ``fold``,
``reduce``, ``map_async`` and ``map_async_unordered`` (a call that raises drops
its element; there is no state, so restart is resume; the stage gets one extra
hop that removes the dropped elements' places). ``with_supervision``
on any other stage is a ``TypeError`` at build time, naming the stage.

A per-run default: ``graph.run(supervision=decider)`` wraps every stage that
honours supervision and has no decider of its own, including the stages of
substreams started during the run.

``recover`` and ``recover_with_retries`` (``Recover`` / ``RecoverWith`` here)
are async stages: a failure travels as a signal on the channel into them, and
they turn it into a last element or a replacement source.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import reprlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

from .._dsl.module import Module
from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage, StageLogic, annotate
from . import chain as _chain
from ._subrun import SubRuns, close_source

log = logging.getLogger("streamlib.supervision")

Directive = Literal["stop", "resume", "restart"]
Decider = Callable[[Exception], Directive]
_DIRECTIVES = ("stop", "resume", "restart")


def _stop(error: Exception) -> Directive:
    """Fail the stream (the default)."""
    return "stop"


def _resume(error: Exception) -> Directive:
    """Drop the failing element and go on."""
    return "resume"


def _restart(error: Exception) -> Directive:
    """Drop the failing element, reset the stage's state, go on."""
    return "restart"


class Supervision:
    """The three standard deciders, for ``with_supervision`` and ``run(supervision=...)``.

    A decider is any ``Callable[[Exception], "stop" | "resume" | "restart"]``;
    the directive names themselves are accepted too.

    >>> flow = Flow.map(parse).with_supervision(Supervision.resume)
    >>> flow = Flow.map(parse).with_supervision(
    ...     lambda e: "resume" if isinstance(e, ValueError) else "stop")
    """

    stop: Decider = staticmethod(_stop)
    resume: Decider = staticmethod(_resume)
    restart: Decider = staticmethod(_restart)


def as_decider(decider: Decider | Directive | str) -> Decider:
    """A decider from a decider or a directive name; anything else is a TypeError."""
    if isinstance(decider, str):
        if decider not in _DIRECTIVES:
            raise ValueError(f"unknown supervision directive {decider!r}: use 'stop', 'resume' or 'restart'")
        return {"stop": _stop, "resume": _resume, "restart": _restart}[decider]
    if not callable(decider):
        raise TypeError(f"a supervision decider must be callable or a directive name, got {decider!r}")
    return decider


def _decider_label(decider: Decider) -> str:
    for name, fn in (("stop", _stop), ("resume", _resume), ("restart", _restart)):
        if decider is fn:
            return name
    return getattr(decider, "__name__", "decider")


# -- which stages honour supervision --------------------------------------------

#: Element-wise kinds that call a user function.
_SUPERVISED_KINDS = frozenset(
    {
        _chain.MAP,
        _chain.FILTER,
        _chain.FILTER_NOT,
        _chain.MAP_CONCAT,
        _chain.COLLECT,
        _chain.TAKE_WHILE,
        _chain.DROP_WHILE,
        _chain.SCAN,
    }
)
#: Non-element-wise synchronous stages supervised one element at a time.
_STEP_STAGES = frozenset({"fold", "reduce"})


def _supervisable(stage: Stage) -> bool:
    from .concurrent import MapAsync

    if isinstance(stage, _chain.ChainStage):
        return stage.kind in _SUPERVISED_KINDS
    if isinstance(stage, MapAsync):
        return True
    from .simple import _LogicStage

    return isinstance(stage, _LogicStage) and stage.name in _STEP_STAGES


def _wrap(stage: Stage, decider: Decider) -> Stage:
    if isinstance(stage, SupervisedStage):
        stage = stage.inner
    return SupervisedStage(stage, decider)


def supervise_outlet(module: Module, decider: Decider | Directive | str) -> Module:
    """``module`` with the stage at its outlet supervised by ``decider``."""
    fn = as_decider(decider)
    if module.outlet is None:
        raise TypeError("with_supervision applies to a blueprint with an output (a Source or Flow)")
    index = module.outlet[0]
    stage = module.stages[index]
    target = stage.inner if isinstance(stage, SupervisedStage) else stage
    if not _supervisable(target):
        raise TypeError(
            f"with_supervision: stage '{target.stage_name()}' does not call a user function it could "
            "supervise; supervision applies to map, filter, filter_not, map_concat, collect, take_while, "
            "drop_while, scan, fold, reduce, map_async and map_async_unordered"
        )
    stages = module.stages[:index] + (_wrap(target, fn),) + module.stages[index + 1 :]
    return Module(stages, module.edges, module.inlet, module.outlet, module.mat)


def with_default_supervision(module: Module, decider: Decider | Directive | str) -> Module:
    """``module`` with every supervisable stage that has no decider of its own supervised."""
    fn = as_decider(decider)
    if fn is _stop:
        return module
    stages = tuple(
        s if isinstance(s, SupervisedStage) or not _supervisable(s) else _wrap(s, fn) for s in module.stages
    )
    return Module(stages, module.edges, module.inlet, module.outlet, module.mat)


class SupervisedStage(Stage):
    """``inner`` with a decider for the exceptions its user function raises."""

    def __init__(self, inner: Stage, decider: Decider) -> None:
        self.inner = inner
        self.decider = decider
        self.name = inner.stage_name()

    @property
    def inputs(self) -> int:  # type: ignore[override]
        return self.inner.inputs

    @property
    def outputs(self) -> int:  # type: ignore[override]
        return self.inner.outputs

    def materialize(self, ctx: RunContext) -> tuple[StageLogic | AsyncLogic, Any]:
        from .concurrent import MapAsync

        inner = self.inner
        if self.decider is _stop:
            return inner.materialize(ctx)  # stop is what the stage does anyway: keep it fusable
        if isinstance(inner, _chain.ChainStage):
            return SupervisedChainLogic(inner.kind, inner.fn, inner.arg, self.name, self.decider), None
        if isinstance(inner, MapAsync):
            wrapped = MapAsync(inner.parallelism, _supervised_call(inner.f, self.decider, self.name), inner.ordered)
            logic, mat = wrapped.materialize(ctx)
            return _DropMarkedLogic(logic, ctx), mat
        logic, mat = inner.materialize(ctx)
        return SupervisedStepLogic(inner, ctx, logic, self.decider), mat

    def __repr__(self) -> str:
        return f"{self.inner!r} [{_decider_label(self.decider)}]"


def _decide(decider: Decider, error: Exception, stage: str) -> Directive:
    directive = decider(error)
    if directive not in _DIRECTIVES:
        raise ValueError(
            f"the supervision decider of stage '{stage}' returned {directive!r} for {type(error).__name__}; "
            "expected 'stop', 'resume' or 'restart'"
        )
    return directive


def _log_dropped(stage: str, element: Any, error: Exception, directive: str) -> None:
    log.warning(
        "stage '%s' dropped element %s after %s: %s (%s)",
        stage,
        reprlib.repr(element),
        type(error).__name__,
        error,
        directive,
    )


class SupervisedChainLogic(StageLogic):
    """One element-wise op evaluated element by element under a decider.

    Outputs for the elements before a failing one are kept; on ``stop`` they are
    handed to the island through ``take_partial`` and the error propagates,
    annotated with the stage name (the same contract as the fused chain).
    """

    def __init__(self, kind: int, fn: Any, arg: Any, name: str, decider: Decider) -> None:
        self.kind = kind
        self.fn = fn
        self.arg = arg
        self.stage_name = name
        self.decider = decider
        self.state: Any = self._initial()
        self.partial: list[Any] = []

    def _initial(self) -> Any:
        if self.kind == _chain.SCAN:
            return self.arg
        if self.kind == _chain.DROP_WHILE:
            return True
        return None

    def take_partial(self) -> list[Any]:
        partial, self.partial = self.partial, []
        return partial

    def on_start(self) -> list[Any]:
        return [self.state] if self.kind == _chain.SCAN else []

    def _failed(self, error: Exception, element: Any, out: list[Any]) -> None:
        """Apply the decider; returns for resume/restart, raises for stop."""
        name = self.stage_name
        directive = _decide(self.decider, error, name)
        if directive == "stop":
            annotate(error, name)
            self.partial = out
            raise error
        _log_dropped(name, element, error, directive)
        if directive == "restart":
            self.state = self._initial()
            if self.kind == _chain.SCAN:
                out.append(self.state)

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        kind, fn = self.kind, self.fn
        out: list[Any] = []
        append = out.append
        if kind == _chain.MAP:
            for x in chunk:
                try:
                    append(fn(x))
                except Exception as error:
                    self._failed(error, x, out)
        elif kind == _chain.FILTER:
            for x in chunk:
                try:
                    if fn(x):
                        append(x)
                except Exception as error:
                    self._failed(error, x, out)
        elif kind == _chain.FILTER_NOT:
            for x in chunk:
                try:
                    if not fn(x):
                        append(x)
                except Exception as error:
                    self._failed(error, x, out)
        elif kind == _chain.MAP_CONCAT:
            for x in chunk:
                try:
                    ys = list(fn(x))  # all of an element's outputs, or none of them
                except Exception as error:
                    self._failed(error, x, out)
                else:
                    out.extend(ys)
        elif kind == _chain.COLLECT:
            for x in chunk:
                try:
                    y = fn(x)
                except Exception as error:
                    self._failed(error, x, out)
                else:
                    if y is not None:
                        append(y)
        elif kind == _chain.TAKE_WHILE:
            for x in chunk:
                try:
                    keep = fn(x)
                except Exception as error:
                    self._failed(error, x, out)
                    continue
                if not keep:
                    self.completed = True
                    break
                append(x)
        elif kind == _chain.DROP_WHILE:
            for x in chunk:
                if not self.state:
                    append(x)
                    continue
                try:
                    dropping = fn(x)
                except Exception as error:
                    self._failed(error, x, out)
                    continue
                if not dropping:
                    self.state = False
                    append(x)
        elif kind == _chain.SCAN:
            for x in chunk:
                try:
                    self.state = fn(self.state, x)
                except Exception as error:
                    self._failed(error, x, out)
                else:
                    append(self.state)
        else:  # pragma: no cover - excluded when wrapping
            raise AssertionError(f"op kind {kind} calls no user function")
        return out


class SupervisedStepLogic(StageLogic):
    """A synchronous logic fed one element at a time under a decider (``fold``, ``reduce``).

    ``restart`` replaces the logic by a fresh materialization of the stage, which
    resets whatever state it holds.
    """

    def __init__(self, stage: Stage, ctx: RunContext, logic: StageLogic, decider: Decider) -> None:
        self.stage = stage
        self.ctx = ctx
        self.inner = logic
        self.decider = decider
        self.partial: list[Any] = []

    def take_partial(self) -> list[Any]:
        partial, self.partial = self.partial, []
        return partial

    def _fresh(self) -> StageLogic:
        logic, _mat = self.stage.materialize(self.ctx)
        logic.stage_name = self.stage_name
        return cast(StageLogic, logic)

    def on_start(self) -> list[Any]:
        self.inner.stage_name = self.stage_name
        return self.inner.on_start()

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out: list[Any] = []
        inner = self.inner
        for x in chunk:
            try:
                ys = inner.on_chunk([x])
            except Exception as error:
                inner.take_partial()
                directive = _decide(self.decider, error, self.stage_name)
                if directive == "stop":
                    annotate(error, self.stage_name)
                    self.partial = out
                    raise
                _log_dropped(self.stage_name, x, error, directive)
                if directive == "restart":
                    inner = self.inner = self._fresh()
                    out.extend(inner.on_start())
                continue
            if ys:
                out.extend(ys)
            if inner.completed:
                self.completed = True
                break
        return out

    def on_signal(self, signal: Any) -> list[Any] | None:
        return self.inner.on_signal(signal)

    def on_finish(self) -> list[Any]:
        return self.inner.on_finish()

    def on_failure(self, error: BaseException) -> None:
        self.inner.on_failure(error)

    def on_cancel(self) -> None:
        self.inner.on_cancel()


# -- map_async -------------------------------------------------------------------------

#: What a supervised asynchronous call returns for an element it dropped.
_DROPPED: Any = object()


def _supervised_call(f: Callable[[Any], Any], decider: Decider, name: str) -> Callable[[Any], Any]:
    async def call(x: Any) -> Any:
        aw = f(x)
        if not inspect.isawaitable(aw):
            raise TypeError(f"{name}: f must return an awaitable (use an async def), got {type(aw).__name__}")
        try:
            return await aw
        except Exception as error:
            directive = _decide(decider, error, name)
            if directive == "stop":
                raise
            _log_dropped(name, x, error, directive)  # no state to reset: restart is resume
            return _DROPPED

    return call


class _DropMarkedLogic(AsyncLogic):
    """Runs an async logic into a channel of its own and forwards its output without dropped marks."""

    def __init__(self, inner: AsyncLogic, ctx: RunContext) -> None:
        self.inner = inner
        self.ctx = ctx

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        from .._runtime.graph_run import drive_async

        (out,) = outlets
        self.inner.stage_name = self.stage_name
        mid = Channel(self.ctx.channel_capacity, f"{self.stage_name}.supervised")
        task = self.ctx.loop.create_task(drive_async(self.inner, inlets, [mid]))
        try:
            while True:
                item = await mid.get()
                if type(item) is list:
                    kept = [x for x in item if x is not _DROPPED]
                    if kept:
                        await out.put(kept)
                elif item is END:
                    return
                elif isinstance(item, Failure):
                    raise item.error
                else:
                    await out.put(item)
        finally:
            mid.cancel()
            task.cancel()
            await asyncio.wait([task])


# -- recover -------------------------------------------------------------------------


class Recover(Stage):
    """Turns an upstream failure into one last element ``fn(error)`` (None: not recovered)."""

    name = "recover"

    def __init__(self, fn: Callable[[Exception], Any]) -> None:
        self.fn = fn

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _RecoverLogic(self.fn), None


class _RecoverLogic(AsyncLogic):
    def __init__(self, fn: Callable[[Exception], Any]) -> None:
        self.fn = fn

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        while True:
            item = await inlet.get()
            if item is END:
                return
            if isinstance(item, Failure):
                error = item.error
                if not isinstance(error, Exception):
                    raise error
                value = self.fn(error)
                if value is None:
                    raise error
                await out.put([value])
                return
            await out.put(item)


class RecoverWith(Stage):
    """On an upstream failure, switch to the Source ``fn(error)`` returns, up to ``attempts`` times."""

    name = "recover_with_retries"

    def __init__(self, attempts: int, fn: Callable[[Exception], Any]) -> None:
        if not isinstance(attempts, int):
            raise TypeError(f"recover_with_retries(attempts, fn) needs an int, got {attempts!r}")
        self.attempts = attempts
        self.fn = fn

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _RecoverWithLogic(self.attempts, self.fn, ctx), None


class _RecoverWithLogic(AsyncLogic):
    def __init__(self, attempts: int, fn: Callable[[Exception], Any], ctx: RunContext) -> None:
        self.attempts = attempts
        self.fn = fn
        self.ctx = ctx

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        source: Channel = inlet
        left = self.attempts
        runs = SubRuns()
        try:
            while True:
                item = await source.get()
                if type(item) is list:
                    await out.put(item)
                    continue
                if item is END:
                    return
                if not isinstance(item, Failure):
                    await out.put(item)
                    continue
                error = item.error
                if left == 0 or not isinstance(error, Exception):
                    raise error
                replacement = self.fn(error)
                if replacement is None:
                    raise error
                module = getattr(replacement, "_module", None)
                if not isinstance(module, Module) or module.inlet is not None or module.outlet is None:
                    raise TypeError(
                        f"{self.stage_name}: fn must return a Source (or None), got {replacement!r}"
                    ) from error
                if left > 0:
                    left -= 1
                log.warning(
                    "stage '%s' switches to a replacement source after %s: %s",
                    self.stage_name,
                    type(error).__name__,
                    error,
                )
                source = Channel(self.ctx.channel_capacity, f"{self.stage_name}.replacement")
                runs.start(close_source(module, source), self.ctx, f"{self.stage_name}:replacement")
        finally:
            if source is not inlet:
                source.cancel()
            await runs.aclose()


__all__ = [
    "Decider",
    "Directive",
    "Recover",
    "RecoverWith",
    "Supervision",
    "SupervisedStage",
    "as_decider",
    "supervise_outlet",
    "with_default_supervision",
]

