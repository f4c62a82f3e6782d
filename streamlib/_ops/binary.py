"""The two-input stateful stage: two inputs, one output, one task.

A :class:`BinaryStage` materializes a :class:`BinaryLogic` (the operator: a
join) and runs it as an async stage over its two input channels and one
output channel. The driver owns every signal, so operators only see data and
the events they need:

* ``on_chunk(side, chunk, out)``: a chunk from input ``side`` (0 or 1).
* ``on_watermark(time_ms, out)``: the *combined* watermark rose. It is the
  minimum of the two inputs' latest watermarks; an input that has sent none
  yet holds it back, an input that ended no longer does. It is forwarded
  downstream after what the call emitted.
* ``on_barrier(checkpoint_id)``: barriers are *aligned* (Chandy-Lamport, as in
  Flink's aligned checkpoints): after ``Barrier(id)`` on one input the driver
  stops reading that input until ``Barrier(id)`` arrived on the other one (or
  the other input ended). Then the state holds exactly the elements before the
  barrier on both inputs; the operator stages it and the barrier is forwarded
  once. Barriers with different ids on the two inputs fail the stream. A held
  input is read one item ahead: a watermark or the end of that input right
  after its barrier is handled at once (they carry no elements), so an input
  whose last barrier comes just before its end (a finished ``checkpointed``
  source, a table that was read completely) does not hold the other input's
  elements back until the other reaches that barrier.
* ``on_input_end(side, out)``, then ``on_finish(out)`` once both ended.
* ``on_failure(error)`` (an input failed, a callback raised, the run was
  cancelled or aborted) and ``on_cancel()`` (downstream cancelled).

Callbacks append what they emit to ``out``; when one raises, what it appended
before the error is still delivered, then the stream fails (results never
depend on chunk boundaries). A failure on either input is raised after what
came before it was emitted; completion, cancellation and kill switches behave
as for every async stage (``drive_async``). A logic sets ``completed`` to end
the stage early (inputs are cancelled, downstream gets end-of-stream).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.context import RunContext
from .._runtime.signals import END, Barrier, Failure, Signal, Watermark
from .._state.checkpoint import StatefulStage, _upstream
from ..stage import AsyncLogic, Stage
from .junctions import _wait

#: Side numbers of the two inputs.
LEFT = 0
RIGHT = 1


class BinaryLogic:
    """Per-run logic of a two-input, one-output stage (see the module docstring for the contract)."""

    stage_name: str = ""
    #: Set to end the stage early: inputs are cancelled, downstream completes.
    completed: bool = False

    def on_start(self, out: list[Any]) -> None:
        """Before any input: load state (restored from the last checkpoint)."""

    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        raise NotImplementedError

    def on_watermark(self, time_ms: int, out: list[Any]) -> None:
        """The combined watermark (minimum over live inputs) rose to ``time_ms``."""

    def on_barrier(self, checkpoint_id: int) -> None:
        """Both inputs reached ``Barrier(checkpoint_id)``: stage the state."""

    def on_input_end(self, side: int, out: list[Any]) -> None:
        """Input ``side`` completed; the other may go on."""

    def on_finish(self, out: list[Any]) -> None:
        """Both inputs completed: the last elements to emit."""

    def on_failure(self, error: BaseException) -> None:
        """The stage failed or the run was cancelled."""

    def on_cancel(self) -> None:
        """Downstream cancelled."""


class BinaryStage(StatefulStage):
    """Blueprint of a two-input, one-output stage; subclasses return their logic from ``make_logic``.

    Input 0 is the stream the operator was called on (``a`` in ``a.join(b)``),
    input 1 the other one. ``store`` (or None) is where the logic checkpoints.
    """

    inputs: ClassVar[int] = 2  # type: ignore[misc]
    outputs: ClassVar[int] = 1

    def make_logic(self, ctx: RunContext) -> BinaryLogic:
        raise NotImplementedError

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        logic = self.make_logic(ctx)
        logic.stage_name = self.stage_name()
        return BinaryDriver(logic), None

    def check_blueprint(self, stages: Sequence[Stage], edges: Sequence[Any], index: int) -> None:
        """A store needs barriers upstream; barriers on one input need barriers on the other.

        With aligned barriers, an input without a barrier source would hold the
        other input at its first barrier until it ends: an endless one, forever.
        """
        super().check_blueprint(stages, edges, index)
        sides: list[bool | None] = []
        for port in (0, 1):
            feeders = [e.src for e in edges if e.dst == index and e.dst_port == port]
            if not feeders:
                sides.append(None)  # open input (a Flow's inlet): decided when it is attached
                continue
            src = feeders[0]
            upstream, open_input = _upstream(stages, edges, src)
            has = any(getattr(stages[j], "emits_barriers", False) for j in [src, *upstream])
            sides.append(None if open_input and not has else has)
        if None in sides or sides[0] == sides[1]:
            return
        with_b, without = ("left", "right") if sides[0] else ("right", "left")
        raise ValueError(
            f"{self.stage_name()}: the {with_b} input carries checkpoint barriers but the {without} input "
            "has none. Barriers are aligned across both inputs, so the left one would stop at its first "
            "barrier until the right one ends. Add .checkpointed(store, ...) (the same store) after the "
            f"{without} input's source too, or checkpoint neither input"
        )


class BinaryDriver(AsyncLogic):
    """Drives a :class:`BinaryLogic`: reads both inputs, combines watermarks, aligns barriers."""

    def __init__(self, logic: BinaryLogic) -> None:
        self.logic = logic

    def on_failure(self, error: BaseException) -> None:
        self.logic.on_failure(error)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        try:
            await self._run(inlets, out)
        except DownstreamCancelled:
            self.logic.on_cancel()
            raise

    async def _emit(self, out: Channel, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args, buf)``; deliver what it appended, even when it raised."""
        buf: list[Any] = []
        try:
            fn(*args, buf)
        finally:
            if buf:
                await out.put(buf)

    async def _run(self, inlets: Sequence[Channel], out: Channel) -> None:
        logic = self.logic
        stage_name = logic.stage_name
        await self._emit(out, logic.on_start)
        ended = [False, False]
        marks: list[int | None] = [None, None]
        emitted: int | None = None
        waiting: list[int | None] = [None, None]  # the barrier id an input is held at
        # The item read after a held input's barrier, kept until the barrier is aligned. A held input
        # is read one item ahead: a watermark or its end is handled at once (neither carries
        # state: an input that only ends after its barrier must not hold the other's elements
        # back until the other reaches that barrier), a failure is raised, anything else waits here.
        ahead: list[Any] = [None, None]
        turn = 0

        async def forward_watermark() -> None:
            nonlocal emitted
            live = [marks[i] for i in (0, 1) if not ended[i]]
            if not live or any(m is None for m in live):
                return
            low: int = min(live)  # type: ignore[type-var, assignment]
            if emitted is None or low > emitted:
                emitted = low
                await self._emit(out, logic.on_watermark, low)
                await out.put(Watermark(low))

        async def complete_barrier(cid: int) -> None:
            logic.on_barrier(cid)
            waiting[0] = waiting[1] = None
            await out.put(Barrier(cid))

        while not (ended[0] and ended[1]):
            if logic.completed:
                return
            if out.cancelled:
                raise DownstreamCancelled(out.name)
            readable = [i for i in (turn, 1 - turn) if not ended[i] and (waiting[i] is None or ahead[i] is None)]
            side = -1
            item: list[Any] | Signal | None = None
            for i in readable:
                if ahead[i] is not None:  # its barrier is aligned now: the item read ahead comes first
                    item, ahead[i] = ahead[i], None
                else:
                    item = inlets[i].get_nowait()
                if item is not None:
                    side = i
                    break
            if side < 0:
                await _wait([inlets[i] for i in readable], (out,))
                continue
            turn = 1 - side
            other = 1 - side
            if waiting[side] is not None and not (type(item) is Watermark or item is END or isinstance(item, Failure)):
                ahead[side] = item  # after the barrier: waits for the other input to reach it
                continue
            if type(item) is list:
                await self._emit(out, logic.on_chunk, side, item)
            elif type(item) is Watermark:
                if marks[side] is None or item.time_ms > marks[side]:  # type: ignore[operator]
                    marks[side] = item.time_ms
                    await forward_watermark()
            elif type(item) is Barrier:
                cid = item.checkpoint_id
                if ended[other] or waiting[other] == cid:
                    await complete_barrier(cid)
                elif waiting[other] is not None:
                    raise RuntimeError(
                        f"{stage_name}: barrier {cid} on one input while the other waits at barrier "
                        f"{waiting[other]}; both inputs must be checkpointed into the same store, in step"
                    )
                else:
                    waiting[side] = cid
            elif item is END:
                ended[side] = True
                await self._emit(out, logic.on_input_end, side)
                if waiting[other] is not None:
                    await complete_barrier(waiting[other])  # type: ignore[arg-type]
                await forward_watermark()
            elif isinstance(item, Failure):
                raise item.error
            else:
                await out.put(item)  # type: ignore[arg-type]
        await self._emit(out, logic.on_finish)


def with_other(blueprint: Any, stage: BinaryStage, other: Any) -> Any:
    """``blueprint`` (a Source or Flow) feeding input 0 of ``stage``, the Source ``other`` input 1.

    Returns the same kind of blueprint, its output the stage's output; the
    materialized value is ``blueprint``'s. ``stage.check_blueprint`` runs on the
    result (on a Flow, what is not known yet is checked when it materializes).
    """
    from .._dsl.keep import Keep
    from .._dsl.source import Source
    from .fan import fan_in_with

    if not isinstance(other, Source):
        raise TypeError(f"{stage.stage_name()}: the other input must be a Source, got {other!r}")
    out = blueprint._via_module(fan_in_with(stage, other._module), Keep.left)
    module = out._module
    stage.check_blueprint(module.stages, module.edges, module.outlet[0])
    return out
