"""The graph builder: fan-out and fan-in graphs wired with ``>>``.

>>> b = GraphBuilder()
>>> src = b.add(Source.from_iterable(range(10)))
>>> bcast, merge = b.add(Broadcast(2)), b.add(Merge(2))
>>> sink = b.add(Sink.fold(0, operator.add))
>>> src >> bcast
>>> bcast.out(0) >> Flow.map(lambda x: x * 2) >> merge.inp(0)
>>> bcast.out(1) >> merge.inp(1)
>>> merge >> sink
>>> total = await b.to_runnable(sink).run()

Every port must be connected exactly once, except the ones handed to
``to_source``/``to_flow``/``to_sink``; violations are errors at build time
naming the port.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._runtime.materializer import Edge
from ..stage import Stage
from .flow import Flow
from .module import Module
from .runnable import RunnableGraph
from .sink import Sink
from .source import Source


class GraphError(ValueError):
    """A graph was wired wrongly: a port left open, connected twice, or of the wrong kind."""


class OutPort:
    """An output port of a node in a :class:`GraphBuilder`."""

    __slots__ = ("builder", "node", "port", "label")

    def __init__(self, builder: GraphBuilder, node: int, port: int, label: str) -> None:
        self.builder, self.node, self.port, self.label = builder, node, port, label

    def __rshift__(self, other: Any) -> Any:
        return self.builder._connect(self, other)

    def __repr__(self) -> str:
        return self.label


class InPort:
    """An input port of a node in a :class:`GraphBuilder`."""

    __slots__ = ("builder", "node", "port", "label")

    def __init__(self, builder: GraphBuilder, node: int, port: int, label: str) -> None:
        self.builder, self.node, self.port, self.label = builder, node, port, label

    def __repr__(self) -> str:
        return self.label


class Node:
    """What ``GraphBuilder.add`` returns: the added piece's open ports."""

    def __init__(self, builder: GraphBuilder, label: str, ins: list[InPort], outs: list[OutPort], index: int) -> None:
        self.builder = builder
        self.label = label
        self.ins = ins
        self.outs = outs
        self.index = index

    def out(self, i: int = 0) -> OutPort:
        """Output port ``i``."""
        if not 0 <= i < len(self.outs):
            raise GraphError(f"{self.label} has {len(self.outs)} output(s); there is no output {i}")
        return self.outs[i]

    def inp(self, i: int = 0) -> InPort:
        """Input port ``i``."""
        if not 0 <= i < len(self.ins):
            raise GraphError(f"{self.label} has {len(self.ins)} input(s); there is no input {i}")
        return self.ins[i]

    def __rshift__(self, other: Any) -> Any:
        if len(self.outs) != 1:
            raise GraphError(f"{self.label} has {len(self.outs)} outputs: pick one with .out(i)")
        return self.builder._connect(self.outs[0], other)

    def __repr__(self) -> str:
        return self.label


class GraphBuilder:
    """Collects blueprints and junctions and the connections between their ports."""

    def __init__(self) -> None:
        self._stages: list[Stage] = []
        self._edges: list[Edge] = []
        self._mats: list[tuple[int, int, Any]] = []  # (start, stop, mat fn) per added piece
        self._nodes: list[Node] = []
        self._connected_out: set[tuple[int, int]] = set()
        self._connected_in: set[tuple[int, int]] = set()

    def add(self, piece: Source[Any, Any] | Flow[Any, Any, Any] | Sink[Any, Any] | Stage) -> Node:
        """Add a Source, Flow, Sink or junction; returns its :class:`Node`."""
        if isinstance(piece, Stage):
            module = Module.of(piece)
            ins_idx = [(0, i) for i in range(piece.inputs)]
            outs_idx = [(0, i) for i in range(piece.outputs)]
            name = repr(piece)
        elif isinstance(piece, (Source, Flow, Sink)):
            module = piece._module
            ins_idx = [module.inlet] if module.inlet is not None else []
            outs_idx = [module.outlet] if module.outlet is not None else []
            name = type(piece).__name__
        else:
            raise GraphError(f"cannot add {piece!r}: expected a Source, Flow, Sink or junction")
        base = len(self._stages)
        index = len(self._nodes)
        label = f"{name}#{index}"
        self._stages.extend(module.stages)
        self._edges.extend(Edge(e.src + base, e.src_port, e.dst + base, e.dst_port) for e in module.edges)
        self._mats.append((base, base + len(module.stages), module.mat))
        ins = [
            InPort(self, base + n, p, f"{label}.in{k}" if len(ins_idx) > 1 else f"{label}.in")
            for k, (n, p) in enumerate(ins_idx)
        ]
        outs = [
            OutPort(self, base + n, p, f"{label}.out{k}" if len(outs_idx) > 1 else f"{label}.out")
            for k, (n, p) in enumerate(outs_idx)
        ]
        node = Node(self, label, ins, outs, index)
        self._nodes.append(node)
        return node

    def _connect(self, src: OutPort, dst: Any) -> Any:
        if src.builder is not self:
            raise GraphError(f"{src.label} belongs to another GraphBuilder")
        result: Any = None
        if isinstance(dst, (Flow, Sink, Stage)):
            dst = self.add(dst)
        if isinstance(dst, Source):
            raise GraphError(f"cannot connect {src.label} to a Source: a Source has no input")
        if isinstance(dst, Node):
            if len(dst.ins) != 1:
                raise GraphError(f"{dst.label} has {len(dst.ins)} inputs: pick one with .inp(i)")
            result = dst if dst.outs else None
            dst = dst.ins[0]
        if not isinstance(dst, InPort):
            raise GraphError(f"cannot connect {src.label} to {dst!r}")
        if dst.builder is not self:
            raise GraphError(f"{dst.label} belongs to another GraphBuilder")
        if (src.node, src.port) in self._connected_out:
            raise GraphError(f"{src.label} is already connected")
        if (dst.node, dst.port) in self._connected_in:
            raise GraphError(f"{dst.label} is already connected")
        self._connected_out.add((src.node, src.port))
        self._connected_in.add((dst.node, dst.port))
        self._edges.append(Edge(src.node, src.port, dst.node, dst.port))
        return result

    def _module(self, inlet: InPort | None, outlet: OutPort | None, mat: Any) -> Module:
        for port in (inlet, outlet):
            if port is not None and port.builder is not self:
                raise GraphError(f"{port.label} belongs to another GraphBuilder")
        if inlet is not None and (inlet.node, inlet.port) in self._connected_in:
            raise GraphError(f"{inlet.label} is already connected: it cannot be the open input")
        if outlet is not None and (outlet.node, outlet.port) in self._connected_out:
            raise GraphError(f"{outlet.label} is already connected: it cannot be the open output")
        mat_nodes = () if mat is None else (mat,) if isinstance(mat, Node) else tuple(mat)
        for node in mat_nodes:
            if not isinstance(node, Node) or node.builder is not self:
                raise GraphError(f"the materialized value must come from nodes of this GraphBuilder, got {node!r}")
        for node in self._nodes:
            for ip in node.ins:
                if ip is not inlet and (ip.node, ip.port) not in self._connected_in:
                    raise GraphError(f"{ip.label} is not connected")
            for op in node.outs:
                if op is not outlet and (op.node, op.port) not in self._connected_out:
                    raise GraphError(f"{op.label} is not connected")
        spans = self._mats

        def value_of(node: Node, mats: Sequence[Any]) -> Any:
            start, stop, fn = spans[node.index]
            return fn(mats[start:stop])

        if mat is None:
            mat_fn: Any = lambda mats: None  # noqa: E731
        elif isinstance(mat, Node):
            mat_fn = lambda mats: value_of(mat, mats)  # noqa: E731
        else:
            nodes = tuple(mat)
            mat_fn = lambda mats: tuple(value_of(n, mats) for n in nodes)  # noqa: E731
        in_port = None if inlet is None else (inlet.node, inlet.port)
        out_port = None if outlet is None else (outlet.node, outlet.port)
        return Module(tuple(self._stages), tuple(self._edges), in_port, out_port, mat_fn)

    def to_runnable(self, mat: Node | Sequence[Node] | None = None) -> RunnableGraph[Any]:
        """Close the graph; its materialized value is ``mat``'s (a node, a tuple of nodes, or None)."""
        return RunnableGraph(self._module(None, None, mat))

    def to_source(self, outlet: OutPort | Node, mat: Node | Sequence[Node] | None = None) -> Source[Any, Any]:
        """A Source whose output is ``outlet`` (the only port left open)."""
        return Source(self._module(None, _out(outlet), mat))

    def to_flow(
        self, inlet: InPort | Node, outlet: OutPort | Node, mat: Node | Sequence[Node] | None = None
    ) -> Flow[Any, Any, Any]:
        """A Flow from ``inlet`` to ``outlet`` (the only ports left open)."""
        return Flow(self._module(_in(inlet), _out(outlet), mat))

    def to_sink(self, inlet: InPort | Node, mat: Node | Sequence[Node] | None = None) -> Sink[Any, Any]:
        """A Sink whose input is ``inlet`` (the only port left open)."""
        return Sink(self._module(_in(inlet), None, mat))


def _out(p: OutPort | Node) -> OutPort:
    if isinstance(p, Node) and len(p.outs) != 1:
        raise GraphError(f"{p.label} has {len(p.outs)} outputs: pick one with .out(i)")
    return p if isinstance(p, OutPort) else p.out(0)


def _in(p: InPort | Node) -> InPort:
    if isinstance(p, Node) and len(p.ins) != 1:
        raise GraphError(f"{p.label} has {len(p.ins)} inputs: pick one with .inp(i)")
    return p if isinstance(p, InPort) else p.inp(0)
