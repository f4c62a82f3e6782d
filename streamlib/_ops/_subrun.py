"""Running a blueprint inside a running stage: the mechanism behind substreams and restarts.

A stage such as ``group_by``, ``recover_with_retries`` or ``RestartSource``
materializes a user's blueprint while it runs, once per key, per retry or per
restart. :class:`SubRun` does that with the ordinary materializer and wires the
blueprint's open ports to channels the owning stage holds:

* a Source is closed with a sink that hands its channel to the owner,
* a Flow gets a source channel the owner feeds and a sink channel it drains,
* a Sink gets a source channel the owner feeds.

A sub-run gets its own :class:`RunContext` copy (the same clock, loop and
supervision default; its own graph) and its tasks run under one task the owning
stage created, so cancelling the owner (and with it the parent run) cancels the
sub-run. :class:`SubRuns` keeps a stage's sub-runs and ends them all on close.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from .._dsl.keep import Keep
from .._dsl.module import Module
from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.materializer import ChannelSinkLogic, ChannelSourceLogic, materialize
from ..stage import Stage


class ChannelSourceStage(Stage):
    """A source whose elements are what the owner puts on ``channel``."""

    inputs = 0
    outputs = 1
    name = "substream_in"

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def materialize(self, ctx: RunContext) -> tuple[ChannelSourceLogic, None]:
        return ChannelSourceLogic(self.channel), None


class ChannelSinkStage(Stage):
    """A sink whose channel the owner drains."""

    inputs = 1
    outputs = 0
    name = "substream_out"

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def materialize(self, ctx: RunContext) -> tuple[ChannelSinkLogic, None]:
        return ChannelSinkLogic(self.channel), None


def close_source(source: Module, out: Channel) -> Module:
    """``source`` emitting into ``out``; the module's value is the source's."""
    return source.compose(Module.of(ChannelSinkStage(out)), Keep.left)


def close_flow(inlet: Channel, flow: Module, out: Channel) -> Module:
    """``flow`` fed from ``inlet``, emitting into ``out``; the value is the flow's."""
    head = Module.of(ChannelSourceStage(inlet)).compose(flow, Keep.right)
    return head.compose(Module.of(ChannelSinkStage(out)), Keep.left)


def close_sink(inlet: Channel, sink: Module) -> Module:
    """``sink`` fed from ``inlet``; the value is the sink's."""
    return Module.of(ChannelSourceStage(inlet)).compose(sink, Keep.right)


class SubRun:
    """One materialization of a closed module, started at once as a task of the caller's task."""

    __slots__ = ("value", "task", "graph")

    def __init__(self, module: Module, ctx: RunContext, name: str, channel_capacity: int | None = None) -> None:
        sub_ctx = replace(ctx, graph=None)
        if channel_capacity is not None:
            sub_ctx.channel_capacity = channel_capacity
        mats, graph = materialize(module.stages, module.edges, sub_ctx, name)
        self.graph = graph
        self.value: Any = module.mat(mats)
        self.task: asyncio.Task[None] = ctx.loop.create_task(graph._supervise(), name=f"streamlib:{name}")
        graph.task = self.task

    @property
    def done(self) -> bool:
        return self.task.done()

    def cancel(self) -> None:
        self.task.cancel()

    async def wait(self) -> None:
        """Wait until every task of the sub-run has ended (a cancelled sub-run counts as ended)."""
        await _wait_ended([self.task])


class SubRuns:
    """The sub-runs one stage owns; ``aclose`` cancels and awaits what is left."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: set[SubRun] = set()

    def start(self, module: Module, ctx: RunContext, name: str, channel_capacity: int | None = None) -> SubRun:
        run = SubRun(module, ctx, name, channel_capacity)
        self.runs.add(run)
        run.task.add_done_callback(lambda _t: self.runs.discard(run))
        return run

    async def aclose(self) -> None:
        runs = list(self.runs)
        for run in runs:
            run.cancel()
        await _wait_ended([r.task for r in runs])


async def _wait_ended(tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for ``tasks`` to end even if the waiter is cancelled meanwhile (then re-raise)."""
    pending = [t for t in tasks if not t.done()]
    cancelled = False
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
            for t in pending:
                t.cancel()
        pending = [t for t in pending if not t.done()]
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: a sub-run reports failures as signals, not exceptions
    if cancelled:
        raise asyncio.CancelledError()


async def run_tasks_until_first_error(*tasks: asyncio.Task[Any]) -> None:
    """Wait for all ``tasks``; when one raises, cancel the others and re-raise its error."""
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
    finally:
        for t in pending:
            t.cancel()
        await _wait_ended(list(pending))
