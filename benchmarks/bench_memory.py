"""Bounded memory: an endless fast source into a sink that takes 1 ms per element.

The source makes a fresh 100-byte payload per element as fast as it is asked;
the pipeline maps it, crosses an async boundary, maps again, and ends in an
async ``Sink.foreach`` that sleeps 1 ms per element. Backpressure must hold the
source back: every channel is bounded, so the resident memory (from
``/proc/self/statm``) has to stay flat however long it runs. Sampled every
second for ``--seconds``; the growth is the highest sample after the first
second minus the first-second sample. PASS when it is under ``--limit-mb``
(20 MB). Elements produced minus consumed (in flight) is reported too.

    python benchmarks/bench_memory.py [--seconds 10] [--limit-mb 20] [--json]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Result, parser, report  # noqa: E402

from streamlib import Keep, Sink, Source, native_enabled  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process, from the second field of /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def measure(seconds: int) -> tuple[list[tuple[float, int, int, int]], int, float]:
    """Run the pipeline for ``seconds``; samples of (t, rss, consumed, in flight) each second."""
    produced = consumed = 0

    def make(i: int) -> tuple[int, tuple[int, bytes]]:
        nonlocal produced
        produced += 1
        return i + 1, (i, bytes(100))

    async def slow(element: tuple[int, int]) -> None:
        nonlocal consumed
        await asyncio.sleep(0.001)
        consumed += 1

    done, graph = (
        Source.unfold(0, make)
        .map(lambda e: (e[0], len(e[1])))
        .async_boundary()
        .map(lambda e: (e[0] * 2, e[1]))
        .to_mat(Sink.foreach(slow), Keep.right)
        .run_graph()
    )
    samples: list[tuple[float, int, int, int]] = []
    start = time.perf_counter()
    for second in range(1, seconds + 1):
        await asyncio.sleep(max(0.0, start + second - time.perf_counter()))
        t = time.perf_counter() - start
        samples.append((t, rss_bytes(), consumed, produced - consumed))
    done.cancel()  # cancels the whole run at once
    await graph.wait()
    return samples, samples[-1][2], samples[-1][0]


def main() -> int:
    p = parser("Resident memory of an endless fast source into a 1 ms/element sink")
    p.add_argument("--seconds", type=int, default=10, help="how long to run (default 10)")
    p.add_argument("--limit-mb", type=float, default=20.0, help="the largest growth that passes (default 20)")
    args = p.parse_args()
    if args.seconds < 2:
        p.error("--seconds must be at least 2 (the first second is the reference)")

    samples, consumed, elapsed = asyncio.run(measure(args.seconds))  # consumed by the last sample
    base = samples[0][1]
    growth = max(s[1] for s in samples[1:]) - base
    passed = growth < args.limit_mb * MB
    verdict = "PASS" if passed else "FAIL"

    if not args.json:
        kernels = "compiled" if native_enabled() else "pure Python"
        print(f"endless source -> map -> async boundary -> map -> 1 ms/element sink ({kernels} kernels)")
        print(f"{'t (s)':>6}  {'RSS (MB)':>9}  {'consumed':>9}  {'in flight':>9}")
        for t, rss, done, in_flight in samples:
            print(f"{t:6.1f}  {rss / MB:9.1f}  {done:9,}  {in_flight:9,}")
        print(f"growth after the first second: {growth / MB:+.2f} MB (limit {args.limit_mb:g} MB): {verdict}")

    row = Result(
        "streamlib, 1 ms/element sink",
        consumed,
        elapsed,
        {
            "rss_first_mb": base / MB,
            "rss_max_mb": max(s[1] for s in samples) / MB,
            "growth_mb": growth / MB,
            "max_in_flight": max(s[3] for s in samples),
            "verdict": verdict,
        },
    )
    report("bounded memory", [row], as_json=args.json)
    if args.json:
        print(json.dumps({"title": "bounded memory samples", "samples": [
            {"t": t, "rss_mb": rss / MB, "consumed": done, "in_flight": in_flight}
            for t, rss, done, in_flight in samples
        ]}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
