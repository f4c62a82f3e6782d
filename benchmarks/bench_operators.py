"""Throughput of element-wise pipelines: streamlib (compiled and pure) against a plain loop and peers.

Workloads, each over ``--n`` integers (2,000,000 by default):

* ``map/filter/fold``: ``map(x * 3)``, ``filter(even)``, fold with ``operator.add``;
* ``map_concat``: each element becomes ``(x, x + 1)``, fold with ``operator.add``;
* ``scan``: running sum with a lambda, keep the last value;
* ``grouped(100)``: lists of 100, fold their lengths.

Contestants: streamlib with the compiled kernels, streamlib in pure Python (the
``STREAMLIB_PURE`` switch flipped in this process), a plain Python loop calling
the same lambdas (the baseline), and reactivex, streamz, aiostream and bytewax
when they are installed (a missing one is listed as skipped). Slow peers run on
fewer elements, sized so one run takes about ``--peer-seconds``; rates are per
element so they stay comparable. Every contestant's result is checked against
the plain loop's. Each number is the best of ``--repeat`` runs, all contestants
of a workload measured one after the other in this one process.

    python benchmarks/bench_operators.py [--n 2000000] [--json]
"""

from __future__ import annotations

import asyncio
import importlib.util
import operator
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Result, best_of, parser, report, skipped  # noqa: E402

import streamlib._native as switch  # noqa: E402
from streamlib import Sink, Source  # noqa: E402

Runner = Callable[[int], Any]

f_map = lambda x: x * 3  # noqa: E731 - the same lambdas for every contestant
p_even = lambda x: x % 2 == 0  # noqa: E731
g_pair = lambda x: (x, x + 1)  # noqa: E731
s_add = lambda acc, x: acc + x  # noqa: E731
c_len = lambda acc, group: acc + len(group)  # noqa: E731
GROUP = 100

_LOOP = asyncio.new_event_loop()


def _run(coro: Any) -> Any:
    return _LOOP.run_until_complete(coro)


# -- plain Python loops (the baseline) --------------------------------------------------


def loop_map_filter_fold(n: int) -> Any:
    acc = 0
    for x in range(n):
        y = f_map(x)
        if p_even(y):
            acc += y
    return acc


def loop_map_concat(n: int) -> Any:
    acc = 0
    for x in range(n):
        for y in g_pair(x):
            acc += y
    return acc


def loop_scan(n: int) -> Any:
    acc = 0
    for x in range(n):
        acc = s_add(acc, x)
    return acc


def loop_grouped(n: int) -> Any:
    acc = 0
    group: list[int] = []
    for x in range(n):
        group.append(x)
        if len(group) == GROUP:
            acc = c_len(acc, group)
            group = []
    if group:
        acc = c_len(acc, group)
    return acc


# -- streamlib ----------------------------------------------------------------------------


def _sl(run: Callable[[], Any]) -> Any:
    """Run a graph (``run`` starts it and returns its awaitable result) on the benchmark loop."""

    async def main() -> Any:
        return await run()

    return _run(main())


def sl_map_filter_fold(n: int) -> Any:
    return _sl(lambda: Source.from_iterable(range(n)).map(f_map).filter(p_even).run_with(Sink.fold(0, operator.add)))


def sl_map_concat(n: int) -> Any:
    return _sl(lambda: Source.from_iterable(range(n)).map_concat(g_pair).run_with(Sink.fold(0, operator.add)))


def sl_scan(n: int) -> Any:
    return _sl(lambda: Source.from_iterable(range(n)).scan(0, s_add).run_with(Sink.last()))


def sl_grouped(n: int) -> Any:
    return _sl(lambda: Source.from_iterable(range(n)).grouped(GROUP).run_with(Sink.fold(0, c_len)))


# -- peers ----------------------------------------------------------------------------------


def _rx(n: int, *steps: Any) -> Any:
    import reactivex as rx

    out: list[Any] = []
    rx.from_iterable(range(n)).pipe(*steps).subscribe(out.append)
    return out[-1]


def rx_runners() -> dict[str, Runner]:
    from reactivex import operators as ops

    return {
        "map/filter/fold": lambda n: _rx(n, ops.map(f_map), ops.filter(p_even), ops.reduce(operator.add, 0)),
        "map_concat": lambda n: _rx(n, ops.flat_map(g_pair), ops.reduce(operator.add, 0)),
        "scan": lambda n: _rx(n, ops.scan(s_add, 0), ops.last()),
        "grouped(100)": lambda n: _rx(n, ops.buffer_with_count(GROUP), ops.reduce(c_len, 0)),
    }


def _streamz(n: int, build: Callable[[Any], Any]) -> Any:
    from streamz import Stream  # type: ignore[import-untyped]

    source = Stream()
    last: list[Any] = [None]
    build(source).sink(lambda v: last.__setitem__(0, v))
    emit = source.emit
    for x in range(n):
        emit(x)
    return last[0]


def streamz_runners() -> dict[str, Runner]:
    return {
        "map/filter/fold": lambda n: _streamz(n, lambda s: s.map(f_map).filter(p_even).accumulate(operator.add, start=0)),
        "map_concat": lambda n: _streamz(n, lambda s: s.map(g_pair).flatten().accumulate(operator.add, start=0)),
        "scan": lambda n: _streamz(n, lambda s: s.accumulate(s_add, start=0)),
        # partition(n) holds back a last short group: sizes are multiples of 100 here.
        "grouped(100)": lambda n: _streamz(n, lambda s: s.partition(GROUP).accumulate(c_len, start=0)),
    }


def aiostream_runners() -> dict[str, Runner]:
    import aiostream

    pipe: Any = aiostream.pipe  # its overloads do not type-check these uses
    stream: Any = aiostream.stream

    def go(xs: Any) -> Any:
        async def main() -> Any:
            return await xs

        return _run(main())

    return {
        "map/filter/fold": lambda n: go(
            stream.iterate(range(n)) | pipe.map(f_map) | pipe.filter(p_even) | pipe.reduce(operator.add, initializer=0)
        ),
        "map_concat": lambda n: go(
            stream.iterate(range(n))
            | pipe.flatmap(lambda x: stream.iterate(g_pair(x)))
            | pipe.reduce(operator.add, initializer=0)
        ),
        "scan": lambda n: go(stream.iterate(range(n)) | pipe.accumulate(s_add, initializer=0)),
        "grouped(100)": lambda n: go(stream.iterate(range(n)) | pipe.chunks(GROUP) | pipe.reduce(c_len, initializer=0)),
    }


def bytewax_runners() -> dict[str, Runner]:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    def go(n: int, build: Callable[[Any], Any]) -> Any:
        flow = Dataflow("bench")
        out: list[Any] = []
        op.output("out", build(op.input("in", flow, TestingSource(range(n), batch_size=1024))), TestingSink(out))
        run_main(flow)
        return out[-1]

    def keyed(s: Any) -> Any:
        return op.key_on("key", s, lambda _x: "k")

    def scan_step(acc: Any, x: int) -> tuple[Any, Any]:
        acc = s_add(0 if acc is None else acc, x)
        return acc, acc

    return {
        "map/filter/fold": lambda n: go(
            n, lambda s: op.fold_final("sum", keyed(op.filter("f", op.map("m", s, f_map), p_even)), lambda: 0, operator.add)
        )[1],
        "map_concat": lambda n: go(
            n, lambda s: op.fold_final("sum", keyed(op.flat_map("c", s, g_pair)), lambda: 0, operator.add)
        )[1],
        "scan": lambda n: go(n, lambda s: op.stateful_map("scan", keyed(s), scan_step))[1],
        "grouped(100)": lambda n: go(
            n,
            lambda s: op.fold_final(
                "len", op.collect("grp", keyed(s), timedelta(seconds=60), GROUP), lambda: 0, c_len
            ),
        )[1],
    }


PEERS: dict[str, tuple[str, Callable[[], dict[str, Runner]]]] = {
    "reactivex": ("reactivex", rx_runners),
    "streamz": ("streamz", streamz_runners),
    "aiostream": ("aiostream", aiostream_runners),
    "bytewax": ("bytewax", bytewax_runners),
}

WORKLOADS: dict[str, tuple[Runner, Runner]] = {
    "map/filter/fold": (sl_map_filter_fold, loop_map_filter_fold),
    "map_concat": (sl_map_concat, loop_map_concat),
    "scan": (sl_scan, loop_scan),
    "grouped(100)": (sl_grouped, loop_grouped),
}


# -- measuring ------------------------------------------------------------------------------


def set_pure(pure: bool) -> None:
    if pure:
        os.environ["STREAMLIB_PURE"] = "1"
    else:
        os.environ.pop("STREAMLIB_PURE", None)
    switch.reset()


def sized(run: Runner, n_max: int, target_seconds: float) -> int:
    """Elements for one run of about ``target_seconds`` (at most ``n_max``, a multiple of 100)."""
    probe = min(n_max, 10_000)
    start = time.perf_counter()
    run(probe)
    per_element = max((time.perf_counter() - start) / probe, 1e-9)
    n = int(target_seconds / per_element)
    return max(probe, min(n_max, n)) // GROUP * GROUP


def measure(name: str, run: Runner, n: int, expected: Callable[[int], Any], repeat: int) -> Result:
    want = expected(n)
    got = run(n)
    if got != want:
        raise AssertionError(f"{name}: wrong result {got!r}, expected {want!r}")
    return Result(name, n, best_of(lambda: run(n), repeat))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000, help="elements per run (default 2,000,000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per contestant; the best counts (default 3)")
    p.add_argument("--peer-seconds", type=float, default=0.5, help="target time of one peer run (default 0.5)")
    p.add_argument("--workload", action="append", choices=list(WORKLOADS), help="only these workloads")
    args = p.parse_args()
    n = max(args.n // GROUP * GROUP, GROUP)
    originally_pure = os.environ.get("STREAMLIB_PURE", "")

    set_pure(False)
    native = switch.native_enabled()
    peers: dict[str, dict[str, Runner] | str] = {}
    for peer, (module, make) in PEERS.items():
        if importlib.util.find_spec(module) is None:
            peers[peer] = f"not installed (pip install {module})"
        else:
            peers[peer] = make()

    for workload in args.workload or list(WORKLOADS):
        sl_run, loop_run = WORKLOADS[workload]
        rows = [measure("plain Python loop", loop_run, n, loop_run, args.repeat)]
        if native and not originally_pure:
            set_pure(False)
            rows.append(measure("streamlib (compiled)", sl_run, n, loop_run, args.repeat))
        else:
            rows.append(skipped("streamlib (compiled)", "compiled kernels not built or STREAMLIB_PURE set"))
        set_pure(True)
        rows.append(measure("streamlib (pure Python)", sl_run, n, loop_run, args.repeat))
        set_pure(False)
        for peer, runners in peers.items():
            if isinstance(runners, str):
                rows.append(skipped(peer, runners))
                continue
            run = runners[workload]
            rows.append(measure(peer, run, sized(run, n, args.peer_seconds), loop_run, args.repeat))
        report(f"{workload}: events/s (best of {args.repeat}), ratio to the plain loop", rows, "plain Python loop", args.json)
    set_pure(bool(originally_pure))


if __name__ == "__main__":
    main()
