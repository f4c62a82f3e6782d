"""RunnableGraph: a closed blueprint, ready to run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._runtime.context import RunContext
from .._runtime.graph_run import RunningGraph
from .._runtime.materializer import current_loop
from .module import Module

Mat = TypeVar("Mat")
M2 = TypeVar("M2")


class RunnableGraph(Generic[Mat]):
    """A source connected to a sink (or a closed graph). ``run()`` starts it.

    >>> queue, done = Source.queue(100).map(f).to_mat(Sink.foreach(g), Keep.both).run()
    """

    __slots__ = ("_module",)

    def __init__(self, module: Module) -> None:
        self._module = module

    def run(
        self,
        *,
        max_chunk: int | None = None,
        channel_capacity: int | None = None,
        clock: Any = None,
        supervision: Any = None,
        metrics: Any = None,
    ) -> Mat:
        """Start the graph on the running event loop and return its materialized value at once.

        Cancelling a materialized future (or the task awaiting it) cancels the run, and so
        does the task that called ``run()`` ending cancelled while the run goes on.
        ``supervision`` is the default decider (``Supervision.resume``, ...) for every
        stage that honours supervision and has none of its own. ``metrics`` (a
        ``MetricsRegistry``) counts the elements each synchronous operator takes in.
        """
        return self.run_graph(
            max_chunk=max_chunk, channel_capacity=channel_capacity, clock=clock, supervision=supervision,
            metrics=metrics,
        )[0]

    def run_graph(
        self,
        *,
        max_chunk: int | None = None,
        channel_capacity: int | None = None,
        clock: Any = None,
        supervision: Any = None,
        metrics: Any = None,
    ) -> tuple[Mat, RunningGraph]:
        """Like ``run`` but also returns the :class:`RunningGraph` (to wait for or cancel the run)."""
        module = self._module
        if supervision is not None:
            from .._ops.supervision import as_decider, with_default_supervision

            supervision = as_decider(supervision)
            module = with_default_supervision(module, supervision)
        for option, value in (("max_chunk", max_chunk), ("channel_capacity", channel_capacity)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{option} must be a positive int, got {value!r}")
        ctx = RunContext(current_loop(), supervision=supervision)
        if max_chunk is not None:
            ctx.max_chunk = max_chunk
        if channel_capacity is not None:
            ctx.channel_capacity = channel_capacity
        if clock is not None:
            ctx.clock = clock
        if metrics is not None:
            meters = getattr(metrics, "operators", None)
            if meters is None:
                raise TypeError(f"metrics must be a streamlib.MetricsRegistry, got {metrics!r}")
            ctx.meters = meters
        value, graph = module.run(ctx)
        graph.tie_to(asyncio.current_task())
        return value, graph

    def map_materialized_value(self, f: Callable[[Mat], M2]) -> RunnableGraph[M2]:
        """Transform the materialized value with ``f`` at each run."""
        return RunnableGraph(self._module.map_mat(f))

    def describe(self, format: str = "mermaid") -> str:
        """This graph as Mermaid (or ``"dot"``) text."""
        from .describe import describe

        return describe(self._module, format)
