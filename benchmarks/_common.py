"""Shared helpers for the benchmark scripts: timing, one result table, ``--json``.

A script measures its contestants side by side in one process and hands the
rows to :func:`report`::

    from _common import Result, best_of, parser, report

    args = parser("what this measures").parse_args()
    seconds = best_of(lambda: run_it(n))
    rows = [Result("streamlib", n, seconds), Result("plain loop", n, loop_seconds)]
    report("map/filter/fold", rows, baseline_name="plain loop", as_json=args.json)

The table gives events per second and the ratio to the baseline row (higher is
faster). ``extra`` holds more columns (latency percentiles, notes); a row with
``seconds=None`` is a contestant that did not run (``extra["skipped"]`` says why).
With ``as_json`` each report prints one JSON object per line instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """One contestant on one workload: ``events`` processed in ``seconds``."""

    name: str
    events: int
    seconds: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        """Events per second (None when the contestant did not run)."""
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.events / self.seconds


def skipped(name: str, why: str) -> Result:
    """A row for a contestant that could not run (a peer library not installed...)."""
    return Result(name, 0, None, {"skipped": why})


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every script takes (``--json``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object per table instead of text")
    return p


def best_of(run: Callable[[], Any], repeat: int = 3) -> float:
    """The best wall time in seconds of ``repeat`` calls (garbage collected before each)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k/s"
    return f"{rate:.0f} /s"


def _format_extra(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def report(title: str, rows: Sequence[Result], baseline_name: str | None = None, as_json: bool = False) -> None:
    """Print ``rows`` as a table (or one JSON line) with each rate's ratio to the baseline's.

    Without ``baseline_name`` the ratio column is left out.
    """
    base = next((r.rate for r in rows if r.name == baseline_name), None)

    def ratio(r: Result) -> float | None:
        return None if base is None or r.rate is None else r.rate / base

    if as_json:
        print(
            json.dumps(
                {
                    "title": title,
                    "baseline": baseline_name,
                    "rows": [
                        {
                            "name": r.name,
                            "events": r.events,
                            "seconds": r.seconds,
                            "events_per_s": r.rate,
                            "ratio": ratio(r),
                            **r.extra,
                        }
                        for r in rows
                    ],
                }
            ),
            flush=True,
        )
        return
    extra_keys = [k for k in dict.fromkeys(k for r in rows for k in r.extra) if k != "skipped"]
    ratio_header = [f"x {baseline_name}"] if baseline_name else []
    header = ["contestant", "events", "events/s", *ratio_header, *extra_keys]
    lines = []
    for r in rows:
        if r.seconds is None:
            dashes = ["-"] * (2 + len(ratio_header) + len(extra_keys))
            lines.append([r.name, *dashes, f"skipped: {r.extra.get('skipped', '')}"])
            continue
        q = ratio(r)
        lines.append(
            [
                r.name,
                f"{r.events:,}",
                _format_rate(r.rate),
                *(["-" if q is None else f"{q:.2f}"] if ratio_header else []),
                *(_format_extra(r.extra[k]) if k in r.extra else "-" for k in extra_keys),
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)] if lines else []
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for line in lines:
        cells = [c.ljust(w) for c, w in zip(line, widths)] + line[len(widths) :]
        print("  ".join(cells).rstrip())
    sys.stdout.flush()
