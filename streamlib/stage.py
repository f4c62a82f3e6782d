"""Stages (immutable blueprints) and the per-run logic they create.

A :class:`Stage` holds only what the user gave it (functions, sizes). Each run
calls :meth:`Stage.materialize`, which returns a fresh logic object holding all
mutable state, and the stage's materialized value. So one blueprint can run any
number of times, concurrently.

There are three kinds of logic, and they are driven in exactly two ways:

* :class:`StageLogic` (one input, one output) and :class:`SinkLogic` (one input)
  are synchronous chunk transforms. A run of them is fused into one *island*
  and driven by one task (``_runtime/island.py``).
* :class:`PullSourceLogic` is a synchronous source that can head an island.
* :class:`AsyncLogic` is a coroutine over input and output channels: I/O,
  timers, junctions, ``map_async``. Each runs as its own task.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ._runtime.signals import Signal

if TYPE_CHECKING:
    from ._runtime.channel import Channel
    from ._runtime.context import RunContext


class Stage:
    """An immutable blueprint of one processing step with fixed input/output counts."""

    inputs: ClassVar[int] = 1
    outputs: ClassVar[int] = 1
    name: str = ""

    def stage_name(self) -> str:
        return self.name or type(self).__name__

    def materialize(self, ctx: RunContext) -> tuple[Any, Any]:
        """Create this run's logic and materialized value."""
        raise NotImplementedError

    def port_name(self, kind: str, index: int) -> str:
        return f"{self.stage_name()}.{kind}{index}"

    def __repr__(self) -> str:
        return self.stage_name()


class StageLogic:
    """Per-run logic of a synchronous one-in one-out stage.

    ``on_chunk`` returns the elements to emit for one input chunk (possibly
    none). A stage that is finished (``take``) sets ``completed``; the island then
    cancels upstream and finishes everything downstream. Signals to emit after
    the current output go to ``emit_signal``. A logic with ``uses_timers`` sets
    ``timer_at`` (clock time) and gets ``on_timer`` when it passes, even while no
    input arrives. Logics never mutate the chunk they are given.
    """

    completed: bool = False
    pending_signals: list[Signal] | None = None
    #: False makes the output edge an async boundary (a channel, another task).
    fuse_output: ClassVar[bool] = True
    #: True for logics that set ``timer_at``; the island then watches their timers.
    uses_timers: ClassVar[bool] = False
    #: When (in ``ctx.clock.now()`` time) ``on_timer`` should next be called; None for never.
    timer_at: float | None = None
    stage_name: str = ""

    def on_start(self) -> list[Any]:
        """Elements to emit before any input arrives."""
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        raise NotImplementedError

    def on_signal(self, signal: Signal) -> list[Any] | None:
        """Elements to emit before ``signal`` is forwarded downstream."""
        return None

    def on_timer(self, now: float) -> list[Any]:
        """``timer_at`` has passed (``timer_at`` is reset to None before the call)."""
        return []

    def on_finish(self) -> list[Any]:
        """Upstream completed: the last elements to emit."""
        return []

    def on_failure(self, error: BaseException) -> None:
        """The stream failed upstream of (or in) this stage."""

    def on_cancel(self) -> None:
        """Downstream no longer wants elements."""

    def take_partial(self) -> list[Any]:
        """After ``on_chunk`` raised: the elements produced before the failure."""
        return []

    def complete(self) -> None:
        self.completed = True

    def emit_signal(self, signal: Signal) -> None:
        if self.pending_signals is None:
            self.pending_signals = []
        self.pending_signals.append(signal)


class SinkLogic(StageLogic):
    """Per-run logic of a synchronous sink: consumes chunks, emits nothing.

    Setting ``completed`` (``Sink.head``) cancels upstream.
    """

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        self.consume(chunk)
        return []

    def consume(self, chunk: list[Any]) -> None:
        raise NotImplementedError


class PullSourceLogic:
    """Per-run logic of a synchronous source that heads an island.

    ``pull(n)`` returns up to ``n`` elements available now; ``done`` is set once
    the source has nothing more (it may be set together with a last chunk).
    """

    done: bool = False
    stage_name: str = ""

    def pull(self, n: int) -> list[Any]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Downstream cancelled: release resources (close files, iterators)."""


class AsyncLogic:
    """Per-run logic driven as its own task over channels.

    ``run`` reads input chunks and signals from ``inlets`` and writes to
    ``outlets``. Returning normally means done: the driver sends end-of-stream
    on outlets not yet ended and cancels unfinished inlets. Raising fails the
    stream: the failure goes to every outlet and inlets are cancelled.
    """

    stage_name: str = ""

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        raise NotImplementedError

    def on_failure(self, error: BaseException) -> None:
        """Called when ``run`` raised or the graph was cancelled."""


def annotate(error: BaseException, stage_name: str) -> BaseException:
    """Add the stage name to an exception once (as a note, keeping type and traceback)."""
    notes = getattr(error, "__notes__", ())
    if isinstance(error, asyncio.CancelledError):
        return error
    if not any(n.startswith("in stage '") for n in notes):
        error.add_note(f"in stage '{stage_name}'")
    return error


def fail_future(fut: asyncio.Future[Any], error: BaseException) -> None:
    """Settle ``fut`` with ``error`` (a cancellation cancels it); no-op when already done."""
    if fut.done():
        return
    if isinstance(error, asyncio.CancelledError):
        fut.cancel()
    else:
        fut.set_exception(error)
