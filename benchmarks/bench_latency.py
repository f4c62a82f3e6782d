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

Last, the trickle table (``--trickle``: only it runs): a producer that sleeps
between events, as a real one does. It wakes every millisecond
(``asyncio.sleep(0.001)``) and offers two events with ``offer_nowait``, so about
2,000 events/s, into ``Source.queue(4096) -> map -> filter -> Sink.foreach``; each
event is the ``perf_counter_ns`` taken just before its offer, and the latency is
offer-to-sink. Side by side in one run, on the default event loop and on uvloop
(when installed): streamlib with the queue fast path on and off
(``STREAMLIB_QUEUE_FAST_PATH=0``), a naive chain of ``asyncio.Queue`` s (one task
per stage), reactivex's ``Subject`` (when installed) and a direct function call.
Each row is the median over ``--repeat`` runs of each percentile, runs
interleaved across contestants; events/s is the rate really offered (a loaded
machine oversleeps, so it is below 2,000).

    python benchmarks/bench_latency.py [--seconds 2] [--repeat 5] [--rates 1000,10000,100000] [--json]
    python benchmarks/bench_latency.py --trickle [--seconds 2] [--repeat 3]
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Result, parser, report, skipped  # noqa: E402

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


# -- trickle: a producer that sleeps between events ---------------------------------------------

TRICKLE_CAPACITY = 4096
TRICKLE_WAKE_S = 0.001  # the producer's sleep between wake-ups
TRICKLE_BURST = 2  # events offered per wake-up


def trickle_map(t: int) -> int:
    return t


def trickle_keep(t: int) -> bool:
    return t > 0


Push = Callable[[int], Any]


async def trickle_feed(push: Push, seconds: float) -> None:
    """Wake every ``TRICKLE_WAKE_S`` and push ``TRICKLE_BURST`` events, each stamped just before its push."""
    sleep = asyncio.sleep
    for _ in range(int(seconds / TRICKLE_WAKE_S)):
        await sleep(TRICKLE_WAKE_S)
        for _ in range(TRICKLE_BURST):
            push(now_ns())


async def trickle_streamlib(seconds: float, fast_path: bool) -> list[int]:
    latencies: list[int] = []
    record = latencies.append

    def sink(t: int) -> None:
        record(now_ns() - t)

    previous = os.environ.get(FAST_PATH_ENV)
    os.environ[FAST_PATH_ENV] = "1" if fast_path else "0"  # read when the graph materializes
    try:
        queue, done = (
            Source.queue(TRICKLE_CAPACITY).map(trickle_map).filter(trickle_keep).to_mat(Sink.foreach(sink), Keep.both).run()
        )
    finally:
        if previous is None:
            del os.environ[FAST_PATH_ENV]
        else:
            os.environ[FAST_PATH_ENV] = previous
    offer = queue.offer_nowait

    def push(t: int) -> None:
        if not offer(t):
            raise RuntimeError("the queue refused an event: the benchmark's pipeline fell behind")

    await trickle_feed(push, seconds)
    queue.complete()
    await done
    return latencies


async def trickle_fast(seconds: float) -> list[int]:
    return await trickle_streamlib(seconds, True)


async def trickle_slow(seconds: float) -> list[int]:
    return await trickle_streamlib(seconds, False)


async def trickle_naive(seconds: float) -> list[int]:
    latencies: list[int] = []
    q_in: asyncio.Queue[Any] = asyncio.Queue(TRICKLE_CAPACITY)
    q_mid: asyncio.Queue[Any] = asyncio.Queue(TRICKLE_CAPACITY)
    q_out: asyncio.Queue[Any] = asyncio.Queue(TRICKLE_CAPACITY)

    async def mapper() -> None:
        while (t := await q_in.get()) is not None:
            q_mid.put_nowait(trickle_map(t))
        q_mid.put_nowait(None)

    async def filterer() -> None:
        while (t := await q_mid.get()) is not None:
            if trickle_keep(t):
                q_out.put_nowait(t)
        q_out.put_nowait(None)

    async def sink() -> None:
        while (t := await q_out.get()) is not None:
            latencies.append(now_ns() - t)

    tasks = [asyncio.create_task(c()) for c in (mapper, filterer, sink)]
    await trickle_feed(q_in.put_nowait, seconds)
    q_in.put_nowait(None)
    await asyncio.gather(*tasks)
    return latencies


async def trickle_reactivex(seconds: float) -> list[int]:
    from reactivex import operators as ops
    from reactivex.subject import Subject

    latencies: list[int] = []
    subject: Subject[int] = Subject()
    subject.pipe(ops.map(trickle_map), ops.filter(trickle_keep)).subscribe(lambda t: latencies.append(now_ns() - t))
    await trickle_feed(subject.on_next, seconds)
    subject.on_completed()
    return latencies


async def trickle_direct(seconds: float) -> list[int]:
    latencies: list[int] = []

    def push(t: int) -> None:
        t = trickle_map(t)
        if trickle_keep(t):
            latencies.append(now_ns() - t)

    await trickle_feed(push, seconds)
    return latencies


FAST_PATH_ENV = "STREAMLIB_QUEUE_FAST_PATH"
TRICKLE: dict[str, tuple[Callable[[float], Coroutine[Any, Any, list[int]]], str | None]] = {
    "streamlib, queue fast path on": (trickle_fast, None),
    "streamlib, queue fast path off": (trickle_slow, None),
    "naive asyncio.Queue chain": (trickle_naive, None),
    "reactivex Subject (synchronous)": (trickle_reactivex, "reactivex"),
    "direct function call": (trickle_direct, None),
}


def loop_factories() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]]:
    """The default event loop, and uvloop's when it is installed."""
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]] = [("asyncio", None)]
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        loops.append(("uvloop", uvloop.new_event_loop))
    return loops


def trickle_rows(seconds: float, warmup: float, repeat: int, loop: Callable[[], asyncio.AbstractEventLoop] | None) -> list[Result]:
    """Median over ``repeat`` interleaved runs of each percentile, per contestant."""
    runs: dict[str, list[list[int]]] = {name: [] for name in TRICKLE}
    elapsed: dict[str, list[float]] = {name: [] for name in TRICKLE}
    skip = int(warmup / TRICKLE_WAKE_S) * TRICKLE_BURST
    for _ in range(repeat):
        for name, (pipeline, module) in TRICKLE.items():
            if module is not None and importlib.util.find_spec(module) is None:
                continue
            gc.collect()
            with asyncio.Runner(loop_factory=loop) as runner:
                start = time.perf_counter()
                latencies = runner.run(pipeline(seconds + warmup))
                elapsed[name].append((time.perf_counter() - start) * len(latencies[skip:]) / max(len(latencies), 1))
            runs[name].append(sorted(latencies[skip:]))
    rows = []
    for name, candidates in runs.items():
        module = TRICKLE[name][1]
        if not candidates:
            rows.append(skipped(name, f"not installed (pip install {module})"))
            continue
        events = len(candidates[0])
        rows.append(
            Result(
                name,
                events,
                statistics.median(elapsed[name]),  # a loaded machine oversleeps: the real offered rate
                {
                    f"p{q} us": statistics.median(percentile(r, q / 100) for r in candidates)
                    for q in (50, 90, 99)
                }
                | {"p99.9 us": statistics.median(percentile(r, 0.999) for r in candidates)},
            )
        )
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run (default 2)")
    p.add_argument("--warmup", type=float, default=0.3, help="seconds left out at the start of each run (default 0.3)")
    p.add_argument("--rates", default="1000,10000,100000", help="offered rates, comma separated (elements/s)")
    p.add_argument("--repeat", type=int, default=5, help="runs per pipeline and rate; the lowest p99 counts (default 5)")
    p.add_argument("--cost-n", type=int, default=100_000, help="elements for the cost-per-element runs (default 100,000)")
    p.add_argument("--trickle", action="store_true", help="only the trickle table: a producer sleeping between events")
    args = p.parse_args()
    kernels = "compiled" if switch.native_enabled() else "pure Python"
    if args.trickle:
        for loop_name, loop in loop_factories():
            report(
                f"trickle: offer-to-sink latency, 2 events per 1 ms wake-up, queue -> map -> filter -> foreach, "
                f"{loop_name} loop (streamlib kernels: {kernels}; median of {args.repeat})",
                trickle_rows(args.seconds, args.warmup, args.repeat, loop),
                None,
                args.json,
            )
        return
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
