"""Render a blueprint as Mermaid or DOT text, for docs and debugging."""

from __future__ import annotations

from .module import Module


def describe(module: Module, format: str = "mermaid") -> str:
    """The graph of ``module``: one node per stage, one arrow per connection."""
    labels = [repr(s) for s in module.stages]
    if format == "mermaid":
        lines = ["graph LR"]
        lines += [f'    s{i}["{label}"]' for i, label in enumerate(labels)]
        lines += [f"    s{e.src} --> s{e.dst}" for e in module.edges]
        if module.inlet is not None:
            lines += ["    in((in))", f"    in --> s{module.inlet[0]}"]
        if module.outlet is not None:
            lines += ["    out((out))", f"    s{module.outlet[0]} --> out"]
        return "\n".join(lines)
    if format == "dot":
        lines = ["digraph streamlib {", "    rankdir=LR;"]
        lines += [f'    s{i} [label="{label}"];' for i, label in enumerate(labels)]
        lines += [f"    s{e.src} -> s{e.dst};" for e in module.edges]
        lines.append("}")
        return "\n".join(lines)
    raise ValueError(f"unknown format {format!r}: use 'mermaid' or 'dot'")
