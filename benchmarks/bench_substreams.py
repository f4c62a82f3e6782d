"""group_by with 10,000 keys and one slow substream: memory stays bounded, backpressure holds.

Each row runs in a fresh process (so peak RSS belongs to that run alone):
a source of N elements, one in ten for a slow key, the rest spread over 9,999
keys, so 10,000 substreams stay open to the end. Every substream runs
``throttle(SLOW_RATE, 1 s)``: far above what the other keys get, far below the
slow key's share of what the pipeline could do. The slow substream fills its
buffer, the router blocks on it, and the source is pulled no faster than the
slow key drains: about ``10 * SLOW_RATE`` elements a second.

Printed per N: elapsed time, elements per second, peak RSS, and the largest
number of elements pulled from the source but not yet counted by the sink
(sampled every 5 ms). Bounded means peak RSS and that gap stay flat while N
grows; the ratio columns compare each row with the first. The last row runs the
same pipeline with no slow key, for the speed the source would have without the
backpressure.

A second table runs ``group_by(10,000 keys).fold(...)`` over 1M elements two
ways: inline (a synchronous substream Flow, driven by the stage itself) and with
an ``async_boundary()`` in the substream, which makes each substream a run with
tasks and channels of its own (what any async substream stage needs).

    python benchmarks/bench_substreams.py            # N = 50k and 250k, and 50k without a slow key
    python benchmarks/bench_substreams.py --json     # the same, machine-readable
    python benchmarks/bench_substreams.py --sizes 50000 500000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KEYS = 10_000
SLOW = -1
SLOW_RATE = 1_000


async def scenario(n: int, slow: bool) -> dict[str, Any]:
    from streamlib import Keep, Sink, Source

    pulled = 0
    counted = 0

    def numbers() -> Any:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    def key(x: int) -> int:
        return SLOW if slow and x % 10 == 0 else x % KEYS

    def count(acc: int, _x: int) -> int:
        nonlocal counted
        counted += 1
        return acc + 1

    max_gap = 0
    started = time.perf_counter()
    done = (
        Source.from_iterator(numbers)
        .group_by(KEYS, key)
        .throttle(SLOW_RATE, 1.0)
        .merge_substreams()
        .to_mat(Sink.fold(0, count), Keep.right)
        .run()
    )
    while not done.done():
        max_gap = max(max_gap, pulled - counted)
        await asyncio.wait([done], timeout=0.005)
    total = await done
    elapsed = time.perf_counter() - started
    assert total == n, (total, n)
    return {
        "slow_key": slow,
        "elements": n,
        "keys": KEYS,
        "seconds": round(elapsed, 3),
        "elements_per_s": round(n / elapsed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "max_in_flight": max_gap,
    }


async def fold_scenario(n: int, tasks: bool) -> dict[str, Any]:
    from streamlib import Sink, Source

    started = time.perf_counter()
    sub = Source.from_iterable(range(n)).group_by(KEYS, lambda x: x % KEYS)
    if tasks:
        sub = sub.async_boundary()
    total = await sub.fold(0, lambda acc, _x: acc + 1).merge_substreams().run_with(Sink.fold(0, lambda a, c: a + c))
    elapsed = time.perf_counter() - started
    assert total == n
    return {
        "substreams": "tasks" if tasks else "inline",
        "elements": n,
        "keys": KEYS,
        "seconds": round(elapsed, 3),
        "elements_per_s": round(n / elapsed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_fold_child(n: int, tasks: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--fold-child", str(n)] + (["--tasks"] if tasks else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def run_child(n: int, slow: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(n)] + ([] if slow else ["--no-slow"])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 250_000])
    parser.add_argument("--no-slow", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fold-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tasks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fold-size", type=int, default=1_000_000, help="elements for the inline/tasks table")
    args = parser.parse_args()
    if args.fold_child is not None:
        print(json.dumps(asyncio.run(fold_scenario(args.fold_child, args.tasks))))
        return
    if args.child is not None:
        print(json.dumps(asyncio.run(scenario(args.child, not args.no_slow))))
        return
    rows = [run_child(n, True) for n in args.sizes] + [run_child(args.sizes[0], False)]
    base = rows[0]
    for r in rows:
        r["rss_ratio"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 2)
        r["in_flight_ratio"] = round(r["max_in_flight"] / max(base["max_in_flight"], 1), 2)
        r["size_ratio"] = round(r["elements"] / base["elements"], 1)
    folds = [run_fold_child(args.fold_size, False), run_fold_child(args.fold_size, True)]
    for r in folds:
        r["time_ratio"] = round(r["seconds"] / folds[0]["seconds"], 2)
        r["rss_ratio"] = round(r["peak_rss_mb"] / folds[0]["peak_rss_mb"], 2)
    if args.json:
        print(json.dumps({"benchmark": "substreams", "slow_key": rows, "fold": folds}, indent=2))
        return
    print(f"group_by({KEYS} keys), throttle({SLOW_RATE}/s) per substream, one slow key with 1 in 10 elements")
    header = f"{'slow key':>8} {'elements':>10} {'x':>5} {'seconds':>8} {'elem/s':>9} {'peak RSS MB':>12} {'x':>5} {'max in flight':>14} {'x':>5}"
    print(header)
    for r in rows:
        print(
            f"{'yes' if r['slow_key'] else 'no':>8} "
            f"{r['elements']:>10} {r['size_ratio']:>5} {r['seconds']:>8} {r['elements_per_s']:>9} "
            f"{r['peak_rss_mb']:>12} {r['rss_ratio']:>5} {r['max_in_flight']:>14} {r['in_flight_ratio']:>5}"
        )
    print()
    print(f"group_by({KEYS} keys).fold(...).merge_substreams(), {args.fold_size} elements")
    print(f"{'substreams':>10} {'seconds':>8} {'x':>6} {'elem/s':>9} {'peak RSS MB':>12} {'x':>5}")
    for r in folds:
        print(
            f"{r['substreams']:>10} {r['seconds']:>8} {r['time_ratio']:>6} {r['elements_per_s']:>9} "
            f"{r['peak_rss_mb']:>12} {r['rss_ratio']:>5}"
        )


if __name__ == "__main__":
    main()
