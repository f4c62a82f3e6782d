"""The immutable graph behind every blueprint.

A :class:`Module` is a tuple of stages, the edges between their ports, at most
one open inlet and one open outlet, and a function computing the
materialized value from the per-stage values (in stage order). Composition
concatenates stage tuples (shifting indices), so the same stage object may
appear twice and still materializes twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._runtime.context import RunContext
from .._runtime.graph_run import RunningGraph
from .._runtime.materializer import Edge, current_loop, materialize
from ..stage import Stage

MatFn = Callable[[Sequence[Any]], Any]
Port = tuple[int, int]


def _mat_of_single(mats: Sequence[Any]) -> Any:
    return mats[0]


def _mat_none(mats: Sequence[Any]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Module:
    stages: tuple[Stage, ...]
    edges: tuple[Edge, ...]
    inlet: Port | None
    outlet: Port | None
    mat: MatFn

    @staticmethod
    def of(stage: Stage) -> Module:
        inlet = (0, 0) if stage.inputs == 1 else None
        outlet = (0, 0) if stage.outputs == 1 else None
        return Module((stage,), (), inlet, outlet, _mat_of_single)

    @staticmethod
    def empty() -> Module:
        return Module((), (), None, None, _mat_none)

    def compose(self, other: Module, combine: Callable[[Any, Any], Any]) -> Module:
        """Connect this module's outlet to ``other``'s inlet."""
        if self.outlet is None:
            raise ValueError("cannot connect: the upstream blueprint has no open output")
        if other.inlet is None:
            raise ValueError("cannot connect: the downstream blueprint has no open input")
        n = len(self.stages)
        shifted = tuple(Edge(e.src + n, e.src_port, e.dst + n, e.dst_port) for e in other.edges)
        link = Edge(self.outlet[0], self.outlet[1], other.inlet[0] + n, other.inlet[1])
        left_mat, right_mat = self.mat, other.mat

        def mat(mats: Sequence[Any]) -> Any:
            return combine(left_mat(mats[:n]), right_mat(mats[n:]))

        outlet = None if other.outlet is None else (other.outlet[0] + n, other.outlet[1])
        return Module(self.stages + other.stages, self.edges + shifted + (link,), self.inlet, outlet, mat)

    def map_mat(self, f: Callable[[Any], Any]) -> Module:
        inner = self.mat
        return Module(self.stages, self.edges, self.inlet, self.outlet, lambda mats: f(inner(mats)))

    def run(self, ctx: RunContext | None = None, name: str = "graph") -> tuple[Any, RunningGraph]:
        """Materialize and start; returns the materialized value and the run."""
        if self.inlet is not None or self.outlet is not None:
            raise ValueError("only a closed graph (a source connected to a sink) can run")
        if ctx is None:
            ctx = RunContext(current_loop())
        mats, graph = materialize(self.stages, self.edges, ctx, name)
        value = self.mat(mats)
        graph.start()
        return value, graph
