"""Per-element latency at a steady offered rate: streamlib against one asyncio.Queue per stage.

Elements are offered at 1k, 10k and 100k elements/s (``--rates``), ``--seconds``
per run, on an absolute schedule: element ``i`` is due at
``start + i / rate``; the producer waits for that moment yielding to the event
loop (``asyncio.sleep(0)`` when it is near, a real sleep when it is far), so the
pipeline runs while the producer waits. Each element *is* its due time in
``perf_counter_ns``; the sink records ``perf_counter_ns() - element``. Latency
is counted from the due time, not from the moment the producer got to offer it,
so a producer held up by a busy pipeline shows up as latency (no coordinated
omission).

* streamlib: ``Source.queue`` -> five ``map`` (fused into one chain) ->
  ``Sink.foreach`` recording the latency;
* naive: five tasks joined by ``asyncio.Queue`` s (one per stage), the same
  five functions, a last task recording the latency.

A third row, the producer alone (recording its own lateness, no pipeline), is
the noise floor: on a machine shared with other work, descheduling shows up
there first, and no pipeline can do better than it. Each pipeline runs
``--repeat`` times per rate, interleaved with the others, and its run with the
lowest p99 is reported (other load only ever adds to the tail). The first
``--warmup`` seconds of each run are left out. Reported: p50, p99, p99.9 and
max in microseconds.

Before the latency tables, a cost table: the wall time per element when
``--cost-n`` elements are pushed through as fast as they are accepted, with
one event-loop turn per element (what each element of a slow stream pays) and
back to back. It does not depend on the schedule, so it is the stable part of
the comparison.

    python benchmarks/bench_latency.py [--seconds 2] [--repeat 5] [--rates 1000,10000,100000] [--json]
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Result, parser, report  # noqa: E402

import streamlib._native as switch  # noqa: E402
from streamlib import Keep, Sink, Source  # noqa: E402

STAGES = 5
CAPACITY = 1024
now_ns = time.perf_counter_ns


def stage_function(k: int) -> Callable[[int], int]:
    """The k-th stage's function: cheap and distinct (a real call each time)."""
    return lambda x: x + 0 * k


Offer = Callable[[int], Awaitable[Any]]
Feed = Callable[[Offer], Awaitable[Any]]


def paced(rate: float, seconds: float) -> Feed:
    """Offer ``rate * seconds`` due times on an absolute schedule."""

    async def feed(offer: Offer) -> None:
        period = 1e9 / rate
        start = now_ns() + 2_000_000
        sleep = asyncio.sleep
        for i in range(int(rate * seconds)):
            due = start + int(i * period)
            while True:
                t = now_ns()
                if t >= due:
                    break
                if due - t > 2_000_000:
                    await sleep((due - t - 1_000_000) / 1e9)
                else:
                    await sleep(0)  # the pipeline runs while the producer waits
            await offer(due)

    return feed


def flood(n: int, yield_each: bool) -> Feed:
    """Offer ``n`` elements as fast as accepted, yielding to the loop after each one or never."""

    async def feed(offer: Offer) -> None:
        sleep = asyncio.sleep
        for _ in range(n):
            await offer(now_ns())
            if yield_each:
                await sleep(0)

    return feed


async def run_streamlib(feed: Feed) -> list[int]:
    latencies: list[int] = []
    record = latencies.append

    def sink(due: int) -> None:
        record(now_ns() - due)

    src: Any = Source.queue(CAPACITY)
    for k in range(STAGES):
        src = src.map(stage_function(k))
    queue, done = src.to_mat(Sink.foreach(sink), Keep.both).run()
    await feed(queue.offer)
    queue.complete()
    await done
    return latencies


async def run_naive(feed: Feed) -> list[int]:
    latencies: list[int] = []
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(CAPACITY) for _ in range(STAGES + 1)]

    async def stage(inlet: asyncio.Queue[Any], outlet: asyncio.Queue[Any], f: Callable[[int], int]) -> None:
        while True:
            x = await inlet.get()
            if x is None:
                await outlet.put(None)
                return
            await outlet.put(f(x))

    async def sink(inlet: asyncio.Queue[Any]) -> None:
        while True:
            x = await inlet.get()
            if x is None:
                return
            latencies.append(now_ns() - x)

    tasks = [asyncio.create_task(stage(queues[k], queues[k + 1], stage_function(k))) for k in range(STAGES)]
    tasks.append(asyncio.create_task(sink(queues[STAGES])))
    await feed(queues[0].put)
    await queues[0].put(None)
    await asyncio.gather(*tasks)
    return latencies


async def run_floor(feed: Feed) -> list[int]:
    """No pipeline: how late the producer itself gets to each due time (the noise floor)."""
    latencies: list[int] = []

    async def offer(due: int) -> None:
        latencies.append(now_ns() - due)

    await feed(offer)
    return latencies


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e3


FLOOR = "producer alone (noise floor)"
NAIVE = "naive asyncio.Queue per stage"
PIPELINES: dict[str, Callable[[Feed], Coroutine[Any, Any, list[int]]]] = {
    FLOOR: run_floor,
    "streamlib": run_streamlib,
    NAIVE: run_naive,
}


def latency_rows(rate: float, seconds: float, warmup: float, repeat: int) -> list[Result]:
    """Each pipeline's run with the lowest p99 of ``repeat``, runs interleaved across pipelines.

    Interleaving gives every pipeline the same share of whatever else the machine
    is doing; keeping the best run per pipeline drops the runs it hit hardest.
    """
    runs: dict[str, list[list[int]]] = {name: [] for name in PIPELINES}
    for _ in range(repeat):
        for name, pipeline in PIPELINES.items():
            gc.collect()
            latencies = asyncio.run(pipeline(paced(rate, seconds + warmup)))
            runs[name].append(sorted(latencies[int(rate * warmup) :]))
    rows = []
    for name, candidates in runs.items():
        kept = min(candidates, key=lambda r: percentile(r, 0.99))
        rows.append(
            Result(
                name,
                len(kept),
                len(kept) / rate,
                {
                    "p50 us": percentile(kept, 0.50),
                    "p99 us": percentile(kept, 0.99),
                    "p99.9 us": percentile(kept, 0.999),
                    "max us": kept[-1] / 1e3 if kept else float("nan"),
                },
            )
        )
    return rows


def measure_cost(name: str, n: int, yield_each: bool, repeat: int) -> Result:
    """Wall time per element pushing ``n`` elements through (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        asyncio.run(PIPELINES[name](flood(n, yield_each)))
        best = min(best, time.perf_counter() - start)
    return Result(name, n, best, {"us/element": best / n * 1e6})


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run (default 2)")
    p.add_argument("--warmup", type=float, default=0.3, help="seconds left out at the start of each run (default 0.3)")
    p.add_argument("--rates", default="1000,10000,100000", help="offered rates, comma separated (elements/s)")
    p.add_argument("--repeat", type=int, default=5, help="runs per pipeline and rate; the lowest p99 counts (default 5)")
    p.add_argument("--cost-n", type=int, default=100_000, help="elements for the cost-per-element runs (default 100,000)")
    args = p.parse_args()
    kernels = "compiled" if switch.native_enabled() else "pure Python"
    for yield_each, how in ((True, "one element per event-loop turn"), (False, "back to back")):
        rows = [measure_cost(name, args.cost_n, yield_each, args.repeat) for name in PIPELINES]
        report(
            f"cost per element, {how} ({STAGES} map stages, streamlib kernels: {kernels}; best of {args.repeat})",
            rows,
            NAIVE,
            args.json,
        )
    for rate in (float(r) for r in args.rates.split(",")):
        rows = latency_rows(rate, args.seconds, args.warmup, args.repeat)
        naive_p99 = rows[-1].extra["p99 us"]
        for row in rows:
            row.extra["p99 / naive"] = row.extra["p99 us"] / naive_p99 if naive_p99 else float("nan")
        report(
            f"latency at {rate:,.0f} elements/s offered, {STAGES} map stages (streamlib kernels: {kernels})",
            rows,
            None,
            args.json,
        )


if __name__ == "__main__":
    main()
