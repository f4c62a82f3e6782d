"""Turning a blueprint into running tasks.

0. Every stage with a ``check_blueprint(stages, edges, index)`` checks the
   graph around it (``checkpointed`` needs replayable sources upstream, a
   stateful stage with a store needs a barrier source upstream).
1. Every stage materializes a fresh logic and its materialized value.
2. Edges whose both ends are synchronous (a pull source or a fusable stage
   upstream, a fusable stage or sink downstream) are *fused*; every other edge
   gets one bounded :class:`~streamlib._runtime.channel.Channel` (or the
   channel a queue source or queue sink already owns).
3. Maximal paths of fused edges become islands; async stages become tasks.
   An island fed by a ``Source.queue`` channel and without timers takes that
   queue's offers inline while it is idle (``Island.offer_inline``), unless
   ``STREAMLIB_QUEUE_FAST_PATH=0`` is set when the graph materializes.
4. A :class:`RunningGraph` starts them all under one TaskGroup.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from ..stage import AsyncLogic, PullSourceLogic, SinkLogic, Stage, StageLogic
from .channel import Channel
from .context import RunContext
from .graph_run import RunningGraph, drive_async
from .island import Island


class ChannelSourceLogic:
    """A source whose elements arrive on a channel it owns (``Source.queue``).

    With ``inline``, the producer calls ``channel.inline`` first (the queue fast
    path), so the island it feeds registers it there.
    """

    stage_name: str = ""

    def __init__(self, channel: Channel, inline: bool = False) -> None:
        self.channel = channel
        self.inline = inline


class ChannelSinkLogic:
    """A sink that hands its channel to someone outside the graph (``Sink.queue``)."""

    stage_name: str = ""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel


@dataclass(frozen=True, slots=True)
class Edge:
    src: int
    src_port: int
    dst: int
    dst_port: int


#: Set to ``0`` to turn the queue fast path off (read each time a graph materializes).
FAST_PATH_ENV = "STREAMLIB_QUEUE_FAST_PATH"


def queue_fast_path_enabled() -> bool:
    """Whether islands fed by a ``Source.queue`` take its offers inline (``STREAMLIB_QUEUE_FAST_PATH``)."""
    return os.environ.get(FAST_PATH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _add_island(graph: RunningGraph, island: Island, fed_by_queue: bool, fast_path: bool) -> None:
    if fed_by_queue and fast_path and not island.timed and island.inlet is not None:
        island.inlet.inline = island.offer_inline
    graph.add(island.run)


def _fusable_out(logic: Any) -> bool:
    if isinstance(logic, PullSourceLogic):
        return True
    return isinstance(logic, StageLogic) and not isinstance(logic, SinkLogic) and logic.fuse_output


def _fusable_in(logic: Any) -> bool:
    return isinstance(logic, StageLogic)


def materialize(
    stages: tuple[Stage, ...], edges: tuple[Edge, ...], ctx: RunContext, name: str = "graph"
) -> tuple[list[Any], RunningGraph]:
    """Materialize ``stages`` joined by ``edges``; returns per-stage values and the run."""
    for i, stage in enumerate(stages):
        check = getattr(stage, "check_blueprint", None)
        if check is not None:  # a check that needs the whole graph (checkpointed: a replayable source)
            check(stages, edges, i)
    graph = RunningGraph(ctx.loop, name)
    ctx.graph = graph
    logics: list[Any] = []
    mats: list[Any] = []
    for stage in stages:
        logic, mat = stage.materialize(ctx)
        logic.stage_name = stage.stage_name()
        logics.append(logic)
        mats.append(mat)

    n = len(stages)
    out_edge: list[list[Edge | None]] = [[None] * s.outputs for s in stages]
    in_edge: list[list[Edge | None]] = [[None] * s.inputs for s in stages]
    for e in edges:
        out_edge[e.src][e.src_port] = e
        in_edge[e.dst][e.dst_port] = e

    fused: set[Edge] = set()
    channel_of: dict[Edge, Channel] = {}
    for e in edges:
        src, dst = logics[e.src], logics[e.dst]
        if isinstance(src, ChannelSourceLogic):
            channel_of[e] = src.channel
        elif isinstance(dst, ChannelSinkLogic):
            channel_of[e] = dst.channel
        elif _fusable_out(src) and _fusable_in(dst):
            fused.add(e)
        else:
            channel_of[e] = Channel(
                ctx.channel_capacity, f"{stages[e.src].port_name('out', e.src_port)}"
            )

    fast_path = queue_fast_path_enabled()
    # A queue source wired straight to a queue sink needs a pump between the two channels.
    for e in edges:
        if isinstance(logics[e.src], ChannelSourceLogic) and isinstance(logics[e.dst], ChannelSinkLogic):
            island = Island(None, logics[e.src].channel, [], logics[e.dst].channel, ctx)
            _add_island(graph, island, logics[e.src].inline, fast_path)

    for i in range(n):
        logic = logics[i]
        if isinstance(logic, AsyncLogic):
            inlets = [channel_of[e] for e in in_edge[i] if e is not None]
            outlets = [channel_of[e] for e in out_edge[i] if e is not None]
            graph.add(_bind_async(logic, inlets, outlets))
            continue
        head: PullSourceLogic | None = None
        inlet: Channel | None = None
        fed_by_queue = False
        if isinstance(logic, PullSourceLogic):
            head = logic
        elif isinstance(logic, StageLogic):
            e_in = in_edge[i][0]
            if e_in is None or e_in in fused:
                continue  # not the start of an island
            inlet = channel_of[e_in]
            source = logics[e_in.src]
            fed_by_queue = isinstance(source, ChannelSourceLogic) and source.inline
        else:
            continue
        chain: list[StageLogic] = []
        tail: Channel | None = None
        j = i if head is None else None
        if j is None:
            e_out = out_edge[i][0]
            if e_out is None:
                raise ValueError(f"output of {stages[i].stage_name()} is not connected")
            if e_out not in fused:
                tail = channel_of[e_out]
                j = -1
            else:
                j = e_out.dst
        while j >= 0:
            chain.append(logics[j])
            if isinstance(logics[j], SinkLogic):
                break
            e_out = out_edge[j][0]
            if e_out is None:
                raise ValueError(f"output of {stages[j].stage_name()} is not connected")
            if e_out in fused:
                j = e_out.dst
            else:
                tail = channel_of[e_out]
                break
        _add_island(graph, Island(head, inlet, _fuse_chains(chain), tail, ctx), fed_by_queue, fast_path)
    return mats, graph


def _fuse_chains(chain: list[StageLogic]) -> list[StageLogic]:
    """Merge runs of adjacent element-wise operators into one chain logic."""
    out: list[StageLogic] = []
    for lg in chain:
        prev = out[-1] if out else None
        merge = getattr(prev, "merge_with", None)
        if merge is not None and merge(lg):
            continue
        out.append(lg)
    return out


def _bind_async(logic: AsyncLogic, inlets: list[Channel], outlets: list[Channel]) -> Any:
    async def runner() -> None:
        await drive_async(logic, inlets, outlets)

    return runner


def start(graph: RunningGraph) -> None:
    """Start a materialized run on the current loop."""
    graph.start()


def current_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "a graph runs on an asyncio event loop: call run()/run_with() from async code "
            "(e.g. inside asyncio.run(main()))"
        ) from None
