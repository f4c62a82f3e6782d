"""Render a blueprint as Mermaid or DOT text, for docs and debugging.

One node per stage, one arrow per connection. Junctions (stages with several
inputs or outputs) are drawn as hexagons and the arrows at them name the ports
(``out1 → in0``), so a fan-out/fan-in graph reads the way it was wired. Sources
and sinks are rounded; pass-through ``identity`` stages (what ``Flow()`` starts
with) are left out.
"""

from __future__ import annotations

from .._runtime.materializer import Edge
from ..stage import Stage
from .module import Module


def _is_identity(stage: Stage) -> bool:
    return stage.stage_name() == "identity" and stage.inputs == 1 and stage.outputs == 1


def _edges(module: Module) -> tuple[list[Edge], dict[int, int]]:
    """Edges with identity stages bypassed, and where each bypassed stage's traffic goes."""
    stages = module.stages
    out_of: dict[int, Edge] = {e.src: e for e in module.edges if _is_identity(stages[e.src])}
    forward: dict[int, int] = {}
    for i, s in enumerate(stages):
        if _is_identity(s):
            j = i
            while _is_identity(stages[j]) and j in out_of:
                j = out_of[j].dst
            forward[i] = j
    edges = []
    for e in module.edges:
        if _is_identity(stages[e.src]):
            continue
        dst, port = e.dst, e.dst_port
        while _is_identity(stages[dst]) and dst in out_of:
            nxt = out_of[dst]
            dst, port = nxt.dst, nxt.dst_port
        edges.append(Edge(e.src, e.src_port, dst, port))
    return edges, forward


def _port_label(stages: tuple[Stage, ...], e: Edge) -> str:
    parts = []
    if stages[e.src].outputs > 1:
        parts.append(f"out{e.src_port}")
    if stages[e.dst].inputs > 1:
        parts.append(f"in{e.dst_port}")
    return " → ".join(parts)


def describe(module: Module, format: str = "mermaid") -> str:
    """The graph of ``module``: one node per stage, one arrow per connection."""
    stages = module.stages
    edges, forward = _edges(module)
    shown = [i for i, s in enumerate(stages) if not _is_identity(s) or i not in forward or forward[i] == i]
    inlet = module.inlet[0] if module.inlet is not None else None
    if inlet is not None and inlet in forward:
        inlet = forward[inlet]
    outlet = module.outlet[0] if module.outlet is not None else None
    if format == "mermaid":
        lines = ["graph LR"]
        for i in shown:
            s = stages[i]
            label = repr(s).replace('"', "#quot;")
            if s.inputs > 1 or s.outputs > 1:
                lines.append(f'    s{i}{{{{"{label}"}}}}')
            elif s.inputs == 0 or s.outputs == 0:
                lines.append(f'    s{i}(["{label}"])')
            else:
                lines.append(f'    s{i}["{label}"]')
        for e in edges:
            port = _port_label(stages, e)
            arrow = f"-->|{port}|" if port else "-->"
            lines.append(f"    s{e.src} {arrow} s{e.dst}")
        if inlet is not None:
            lines += ["    in((in))", f"    in --> s{inlet}"]
        if outlet is not None:
            lines += ["    out((out))", f"    s{outlet} --> out"]
        return "\n".join(lines)
    if format == "dot":
        lines = ["digraph streamlib {", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
        for i in shown:
            s = stages[i]
            label = repr(s).replace('"', '\\"')
            shape = ", shape=hexagon" if s.inputs > 1 or s.outputs > 1 else ""
            lines.append(f'    s{i} [label="{label}"{shape}];')
        for e in edges:
            attrs = []
            if stages[e.src].outputs > 1:
                attrs.append(f'taillabel="out{e.src_port}"')
            if stages[e.dst].inputs > 1:
                attrs.append(f'headlabel="in{e.dst_port}"')
            suffix = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f"    s{e.src} -> s{e.dst}{suffix};")
        if inlet is not None:
            lines += ["    in [shape=circle];", f"    in -> s{inlet};"]
        if outlet is not None:
            lines += ["    out [shape=circle];", f"    s{outlet} -> out;"]
        lines.append("}")
        return "\n".join(lines)
    raise ValueError(f"unknown format {format!r}: use 'mermaid' or 'dot'")
