"""Per-element latency at a steady offered rate: streamlib against one asyncio.Queue per stage.

Elements are offered at 1k, 10k and 100k elements/s (``--rates``) for
``--seconds`` each, on an absolute schedule: element ``i`` is due at
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
``--repeat`` times per rate and the run with the lowest p99 is reported (other
load only ever adds to the tail). The first ``--warmup`` seconds of each run are
left out. Reported: p50, p99, p99.9 and max in microseconds.

    python benchmarks/bench_latency.py [--seconds 3] [--repeat 3] [--rates 1000,10000,100000] [--json]
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable
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


async def pace(offer: Callable[[int], Awaitable[Any]], rate: float, seconds: float) -> int:
    """Offer ``rate * seconds`` due times on an absolute schedule; returns how many."""
    period = 1e9 / rate
    count = int(rate * seconds)
    start = now_ns() + 2_000_000
    sleep = asyncio.sleep
    for i in range(count):
        due = start + int(i * period)
        while True:
            t = now_ns()
            if t >= due:
                break
            if due - t > 2_000_000:
                await sleep((due - t - 1_000_000) / 1e9)
            else:
                await sleep(0)
        await offer(due)
    return count


async def run_streamlib(rate: float, seconds: float) -> list[int]:
    latencies: list[int] = []
    record = latencies.append

    def sink(due: int) -> None:
        record(now_ns() - due)

    src: Any = Source.queue(CAPACITY)
    for k in range(STAGES):
        src = src.map(stage_function(k))
    queue, done = src.to_mat(Sink.foreach(sink), Keep.both).run()
    await pace(queue.offer, rate, seconds)
    queue.complete()
    await done
    return latencies


async def run_naive(rate: float, seconds: float) -> list[int]:
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
    await pace(queues[0].put, rate, seconds)
    await queues[0].put(None)
    await asyncio.gather(*tasks)
    return latencies


async def run_floor(rate: float, seconds: float) -> list[int]:
    """No pipeline: how late the producer itself gets to each due time (the noise floor)."""
    latencies: list[int] = []

    async def offer(due: int) -> None:
        latencies.append(now_ns() - due)

    await pace(offer, rate, seconds)
    return latencies


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e3


FLOOR = "producer alone (noise floor)"
PIPELINES: dict[str, Callable[[float, float], Awaitable[list[int]]]] = {
    FLOOR: run_floor,
    "streamlib": run_streamlib,
    "naive asyncio.Queue per stage": run_naive,
}


def measure(name: str, rate: float, seconds: float, warmup: float, repeat: int) -> Result:
    """The run (of ``repeat``) with the lowest p99: the machine's other load only adds to tails."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        latencies = asyncio.run(PIPELINES[name](rate, seconds + warmup))
        runs.append(sorted(latencies[int(rate * warmup) :]))
    kept = min(runs, key=lambda r: percentile(r, 0.99))
    return Result(
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


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per rate and pipeline (default 3)")
    p.add_argument("--warmup", type=float, default=0.3, help="seconds left out at the start of each run (default 0.3)")
    p.add_argument("--rates", default="1000,10000,100000", help="offered rates, comma separated (elements/s)")
    p.add_argument("--repeat", type=int, default=3, help="runs per pipeline and rate; the lowest p99 counts (default 3)")
    args = p.parse_args()
    kernels = "compiled" if switch.native_enabled() else "pure Python"
    for rate in (float(r) for r in args.rates.split(",")):
        rows = [measure(name, rate, args.seconds, args.warmup, args.repeat) for name in PIPELINES]
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
