"""Windowed aggregation throughput, and bounded state for an endless session workload.

Tumbling (default): ``--events`` events (1,000,000) ``(ts, key, value)`` with
key ``k{i % 100}``, value 1 and timestamp ``i`` ms; 10-second tumbling windows;
sum per key. Every contestant must produce the 10,000 results ``(key, window,
100)``. Contestants, measured one after the other in this one process:

* the plain-Python dict loop doing the same grouping (the baseline);
* streamlib with no store (state in memory, no checkpoints);
* streamlib with ``MemoryStore`` and with ``RocksDBStore``, both checkpointed
  every ``--checkpoint-every`` events (100,000): each checkpoint writes the
  changed windows and deletes the expired ones, atomically;
* each of those three with the compiled kernels and with the pure-Python ones
  (the ``STREAMLIB_PURE`` switch flipped in this process), and with the
  timestamp, key and value given as lambdas (``lambda e: e[0]``) or as fields
  (the indexes ``0``, ``1``, ``2``: read by the compiled kernels with no
  Python call, like ``itemgetter`` or a field name);
* bytewax (``fold_window``, in-memory state) when it is installed.

``--session``: also sessions with 60-second gaps over 100,000 keys (a
pseudo-random key per event, one event per ms), ``--session-events`` events
(1,000,000; ``--full`` for 10,000,000), count per key. Contestants: a plain
Python loop keeping each key's last session in a dict (the baseline), and
streamlib with the compiled and the pure kernels, with no store, ``MemoryStore``
and ``RocksDBStore`` (checkpointed every ``--checkpoint-every`` events). Every
contestant's sessions are checked against the loop's. Also prints the rows left
in the store at the end: bounded by the keys with an open (or just closed)
session, not by history.

``--sliding``: also sliding windows of 10 seconds over the tumbling workload's
events (100 keys, one event per ms, ``--sliding-events``, 1,000,000), sum per
key: about two windows per event, each over about 100 events. Contestants: a
plain Python two-pointer loop over each key's events with running sums (the
baseline), and streamlib compiled and pure with no store, ``MemoryStore`` and
``RocksDBStore``; every window checked against the loop's.

Rates are medians of ``--repeat`` rounds (3), each round running every
contestant of the table once, so load that drifts on a shared machine weighs on
all of them alike. ``--no-pure`` leaves out the pure-Python rows. Each input list is built before any timing and then moved out
of the garbage collector's way (``gc.freeze()``): a pipeline reading Kafka holds
no such list, and the collector would otherwise re-scan its millions of tuples
during every contestant's run.

    python benchmarks/bench_windows.py [--events N] [--no-pure] [--session [--full]] [--sliding] [--json]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Result, parser, report, skipped  # noqa: E402

import streamlib._native as switch  # noqa: E402
from streamlib import (  # noqa: E402
    MemoryStore,
    RocksDBStore,
    SessionWindows,
    Sink,
    SlidingWindows,
    Source,
    TumblingWindows,
    native_enabled,
)

WINDOW_MS = 10_000
KEYS = 100
SESSION_KEYS = 100_000
SESSION_GAP_MS = 60_000

Event = tuple[int, Any, int]  # (ts ms, key, value)

ts_of = lambda e: e[0]  # noqa: E731 - the same functions for every contestant
key_of = lambda e: e[1]  # noqa: E731
value_of = lambda e: e[2]  # noqa: E731
LAMBDAS = (ts_of, key_of, value_of)
FIELDS = (0, 1, 2)  # the same, as fields: e[0], e[1], e[2]

_LOOP = asyncio.new_event_loop()
_STORES = (("none", "no store"), ("memory", "MemoryStore"), ("rocksdb", "RocksDBStore"))


@dataclass
class Contestant:
    """One row of a table: ``run()`` is timed; ``check(its result)`` (untimed, after the first run)
    raises when it is wrong and returns the row's extra columns."""

    name: str
    events: int
    run: Callable[[], Any]
    check: Callable[[Any], dict[str, Any]]


def race(contestants: list[Contestant], repeat: int) -> list[Result]:
    """Each contestant's median wall time over ``repeat`` rounds, every contestant running once per round.

    Round after round rather than one contestant's runs in a row: on a shared
    machine the load drifts during a table, and this way it drifts under all of
    them alike, so their ratios hold.
    """
    times: list[list[float]] = [[] for _ in contestants]
    extras: list[dict[str, Any]] = [{} for _ in contestants]
    for round_ in range(repeat):
        for i, c in enumerate(contestants):
            gc.collect()
            start = time.perf_counter()
            got = c.run()
            times[i].append(time.perf_counter() - start)
            if round_ == 0:
                extras[i] = c.check(got)
    return [Result(c.name, c.events, statistics.median(times[i]), extras[i]) for i, c in enumerate(contestants)]


def tumbling_events(n: int) -> list[Event]:
    return [(i, f"k{i % KEYS}", 1) for i in range(n)]


def session_events(n: int) -> list[Event]:
    """One event per ms, each for a pseudo-random one of 100,000 keys (a fixed LCG)."""
    out: list[Event] = []
    x = 12345
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append((i, (x >> 33) % SESSION_KEYS, 1))
    return out


def expected_tumbling(n: int) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for i in range(n):
        w = (f"k{i % KEYS}", i - i % WINDOW_MS)
        out[w] = out.get(w, 0) + 1
    return out


# -- contestants -----------------------------------------------------------------------


def dict_loop(events: list[Event]) -> dict[tuple[str, int], int]:
    """The baseline: group by (key, window start) in a dict, emitting nothing until the end."""
    acc: dict[tuple[str, int], int] = {}
    get = acc.get
    for ts, k, v in events:
        w = (k, ts - ts % WINDOW_MS)
        acc[w] = get(w, 0) + v
    return acc


def _run(make: Any) -> Any:
    """Run the graph ``make()`` builds and starts, on this script's event loop."""

    async def go() -> Any:
        return await make()

    return _LOOP.run_until_complete(go())


@contextlib.contextmanager
def kernels(pure: bool) -> Iterator[None]:
    """Run the body with the pure-Python kernels (``STREAMLIB_PURE=1``) or the compiled ones."""
    before = os.environ.get("STREAMLIB_PURE")
    os.environ["STREAMLIB_PURE"] = "1" if pure else "0"
    switch.reset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["STREAMLIB_PURE"]
        else:
            os.environ["STREAMLIB_PURE"] = before
        switch.reset()


def streamlib_tumbling(
    events: list[Event], store: Any, every: int, extract: tuple[Any, Any, Any] = LAMBDAS
) -> dict[tuple[str, int], int]:
    ts, key, value = extract
    src = Source.from_iterable(events)
    if store is not None:
        src = src.checkpointed(store, every=every)
    blueprint = src.with_timestamps(ts).key_by(key).window(TumblingWindows(WINDOW_MS), store=store).sum(value)
    results = _run(lambda: blueprint.run_with(Sink.collect()))
    return {(r.key, r.start): r.value for r in results}


def bytewax_tumbling(events: list[Event]) -> dict[tuple[str, int], int]:
    from datetime import datetime, timedelta, timezone

    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    align = datetime(1970, 1, 1, tzinfo=timezone.utc)
    flow = Dataflow("windows")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(events, batch_size=1024)), key_of)
    clock = win.EventClock(lambda e: align + timedelta(milliseconds=e[0]), wait_for_system_duration=timedelta(0))
    windower = win.TumblingWindower(length=timedelta(milliseconds=WINDOW_MS), align_to=align)
    summed = win.fold_window("sum", keyed, clock, windower, lambda: 0, lambda acc, e: acc + e[2], lambda a, b: a + b)
    out: list[Any] = []
    op.output("out", summed.down, TestingSink(out))
    run_main(flow)
    return {(k, wid * WINDOW_MS): v for k, (wid, v) in out}


def _with_store(kind: str, run: Any) -> Any:
    """Call ``run(store)`` with a fresh store of ``kind`` (a RocksDB directory is removed after)."""
    if kind == "none":
        return run(None)
    if kind == "memory":
        return run(MemoryStore())
    tmp = tempfile.mkdtemp(prefix="bench_windows_")
    try:
        store = RocksDBStore(os.path.join(tmp, "db"))
        try:
            return run(store)
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tumbling_table(n: int, every: int, repeat: int, as_json: bool, with_pure: bool = True) -> None:
    events = tumbling_events(n)
    gc.freeze()
    expected = expected_tumbling(n)
    assert len(expected) == n // WINDOW_MS * KEYS or n % WINDOW_MS

    def checker(name: str, want: dict[tuple[str, int], int], **extra: Any) -> Callable[[Any], dict[str, Any]]:
        def check(got: Any) -> dict[str, Any]:
            if got != want:
                raise AssertionError(f"{name}: wrong results ({len(got)} windows, {len(want)} expected)")
            return {"results": f"{len(want):,} ok", **extra}

        return check

    contestants = [Contestant("plain dict loop", n, lambda: dict_loop(events), checker("loop", expected, checkpoints="-"))]
    native = switch.window_kernel("update_fixed", None) is not None
    modes = ([False] if native else []) + ([True] if with_pure or not native else [])
    for pure in modes:
        for extract, ex_name in ((LAMBDAS, "lambdas"), (FIELDS, "fields")):
            for kind, label in _STORES:
                name = f"streamlib {'pure' if pure else 'native'}, {ex_name}, {label}"

                def run(pure: bool = pure, kind: str = kind, extract: Any = extract) -> Any:
                    with kernels(pure):
                        return _with_store(kind, lambda store: streamlib_tumbling(events, store, every, extract))

                note = "-" if kind == "none" else f"every {every:,}"
                contestants.append(Contestant(name, n, run, checker(name, expected, checkpoints=note)))
    rows = race(contestants, repeat)
    if importlib.util.find_spec("bytewax") is not None:
        peer_n = min(n, 200_000)  # bytewax is slower: a smaller run, rates stay per event
        peer_events = events if peer_n == n else tumbling_events(peer_n)
        gc.freeze()
        want = expected if peer_n == n else expected_tumbling(peer_n)
        peer = Contestant("bytewax fold_window", peer_n, lambda: bytewax_tumbling(peer_events), checker("bytewax", want))
        rows += race([peer], repeat)
    else:
        rows.append(skipped("bytewax fold_window", "not installed"))
    title = (
        f"10-second tumbling windows, sum per key: {n:,} events, {KEYS} keys "
        f"(compiled window kernels: {'built' if native else 'not built'}; compiled chain: "
        f"{'on' if native_enabled() else 'off'}); median of {repeat} rounds"
    )
    report(title, rows, baseline_name="plain dict loop", as_json=as_json)


Sessions = dict[tuple[Any, int], tuple[int, int]]  # (key, start) -> (end, count)


def session_loop(events: list[Event], done: Sessions | None = None) -> int:
    """The baseline: each key's last session in a dict, closed when an event comes a gap or more after it.

    Returns how many sessions there are; ``done`` (when given) gets each of them.
    """
    gap = SESSION_GAP_MS
    last: dict[Any, list[int]] = {}
    get = last.get
    closed = 0
    for ts, k, _v in events:
        s = get(k)
        if s is None or ts >= s[1]:
            if s is not None:
                closed += 1
                if done is not None:
                    done[(k, s[0])] = (s[1], s[2])
            last[k] = [ts, ts + gap, 1]
        else:
            s[1] = ts + gap
            s[2] += 1
    if done is not None:
        for k, s in last.items():
            done[(k, s[0])] = (s[1], s[2])
    return closed + len(last)


def _store_rows(store: Any, extra: dict[str, Any]) -> None:
    """The rows left in ``store`` (and its size on disk for RocksDB, closing it) into ``extra``."""
    extra["store rows at end"] = f"{sum(store.stats().values()):,}"
    if isinstance(store, RocksDBStore):
        store.close()
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store.path) for f in fs)
        extra["on disk"] = f"{size / 1e6:.1f} MB"


def _count(n: int, r: Any) -> int:
    return n + 1


def _streamlib_contestants(
    events: list[Event],
    window: Any,
    aggregate: Any,
    expected: dict[tuple[Any, int], Any],
    result_of: Any,
    every: int,
    with_pure: bool,
    what: str,
) -> list[Contestant]:
    """streamlib with the compiled and the pure kernels, with each store. A timed run counts the
    results; its check runs the pipeline once more (untimed) collecting them, and compares every one
    with ``expected``."""
    native = switch.window_kernel("update_sessions", None) is not None
    modes = ([False] if native else []) + ([True] if with_pure or not native else [])
    out = []
    for pure in modes:
        for kind, label in _STORES:

            def build(store: Any) -> Any:
                src = Source.from_iterable(events)
                if store is not None:
                    src = src.checkpointed(store, every=every)
                return aggregate(src.with_timestamps(ts_of).key_by(key_of).window(window))

            def run(pure: bool = pure, kind: str = kind) -> Any:
                with kernels(pure):
                    return _with_store(kind, lambda store: _run(lambda: build(store).run_with(Sink.fold(0, _count))))

            def check(count: Any, pure: bool = pure, kind: str = kind, label: str = label) -> dict[str, Any]:
                if count != len(expected):
                    raise AssertionError(f"{label}: {count:,} {what}, {len(expected):,} expected")
                extra: dict[str, Any] = {}

                def verify(store: Any) -> None:
                    results = _run(lambda: build(store).run_with(Sink.collect()))
                    found = {(r.key, r.start): result_of(r) for r in results}
                    if found != expected or len(results) != len(found):
                        raise AssertionError(f"{label}: wrong {what}")
                    extra[what] = f"{len(found):,} ok"
                    if store is not None:
                        _store_rows(store, extra)

                with kernels(pure):
                    _with_store(kind, verify)
                return extra

            out.append(Contestant(f"streamlib {'pure' if pure else 'compiled'}, {label}", len(events), run, check))
    return out


def session_table(n: int, every: int, repeat: int, as_json: bool, with_pure: bool = True) -> None:
    events = session_events(n)
    gc.freeze()
    expected: Sessions = {}
    session_loop(events, expected)

    def check_loop(count: int) -> dict[str, Any]:
        if count != len(expected):
            raise AssertionError(f"plain dict loop: {count:,} sessions, {len(expected):,} expected")
        return {}

    contestants = [Contestant("plain dict loop", n, lambda: session_loop(events), check_loop)]
    contestants += _streamlib_contestants(
        events, SessionWindows(SESSION_GAP_MS), lambda w: w.count(), expected, lambda r: (r.end, r.value),
        every, with_pure, "sessions",
    )  # fmt: skip
    title = (
        f"session windows (gap {SESSION_GAP_MS // 1000} s), count per key: {n:,} events, {SESSION_KEYS:,} keys, "
        f"checkpoint every {every:,}; median of {repeat} rounds"
    )
    report(title, race(contestants, repeat), baseline_name="plain dict loop", as_json=as_json)


Windows = dict[tuple[Any, int], int]  # (key, start) -> sum


def sliding_loop(events: list[Event], out: Windows | None = None) -> int:
    """The baseline: per key, two pointers with a running sum over its events (in time order) for each window.

    Returns how many windows there are; ``out`` (when given) gets each of them.
    """
    size = WINDOW_MS
    by_key: dict[Any, list[tuple[int, int]]] = {}
    for ts, k, v in events:
        recs = by_key.get(k)
        if recs is None:
            by_key[k] = [(ts, v)]
        else:
            recs.append((ts, v))
    if out is None:
        out = {}
    for k, recs in by_key.items():
        n = len(recs)
        # Windows ending just after each event: [t - size + 1, t + 1).
        lo, total = 0, 0
        for i in range(n):
            t, v = recs[i]
            total += v
            while recs[lo][0] < t - size + 1:
                total -= recs[lo][1]
                lo += 1
            out[(k, t - size + 1)] = total
        # Windows starting just after an event with a later one within size: [t + 1, t + 1 + size),
        # over the events in recs[j:hi] (t < time <= t + size).
        j, hi, total = 0, 0, 0
        for i in range(n):
            t = recs[i][0]
            while hi < n and recs[hi][0] <= t + size:
                total += recs[hi][1]
                hi += 1
            while recs[j][0] <= t:
                total -= recs[j][1]
                j += 1
                if j == n:
                    break
            if j < hi:
                out[(k, t + 1)] = total
    return len(out)


def sliding_table(n: int, every: int, repeat: int, as_json: bool, with_pure: bool = True) -> None:
    events = tumbling_events(n)
    gc.freeze()
    expected: Windows = {}
    sliding_loop(events, expected)

    def check_loop(count: int) -> dict[str, Any]:
        if count != len(expected):
            raise AssertionError(f"plain two-pointer loop: {count:,} windows, {len(expected):,} expected")
        return {}

    contestants = [Contestant("plain two-pointer loop", n, lambda: sliding_loop(events), check_loop)]
    contestants += _streamlib_contestants(
        events, SlidingWindows(WINDOW_MS), lambda w: w.sum(value_of), expected, lambda r: r.value,
        every, with_pure, "windows",
    )  # fmt: skip
    title = (
        f"sliding windows ({WINDOW_MS // 1000} s), sum per key: {n:,} events, {KEYS} keys, "
        f"checkpoint every {every:,}; median of {repeat} rounds"
    )
    report(title, race(contestants, repeat), baseline_name="plain two-pointer loop", as_json=as_json)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events in the tumbling workload")
    p.add_argument("--checkpoint-every", type=int, default=100_000, help="events between checkpoints")
    p.add_argument("--repeat", type=int, default=3, help="the median of this many rounds")
    p.add_argument("--no-pure", action="store_true", help="leave out the pure-Python kernels' rows")
    p.add_argument("--session", action="store_true", help="also run the session-window workload")
    p.add_argument("--session-events", type=int, default=1_000_000, help="events in the session workload")
    p.add_argument("--full", action="store_true", help="the session workload at 10,000,000 events")
    p.add_argument("--sliding", action="store_true", help="also run the sliding-window workload")
    p.add_argument("--sliding-events", type=int, default=1_000_000, help="events in the sliding workload")
    p.add_argument("--no-tumbling", action="store_true", help="leave out the tumbling workload")
    args = p.parse_args()
    if not args.no_tumbling:
        tumbling_table(args.events, args.checkpoint_every, args.repeat, args.json, not args.no_pure)
    if args.session:
        n = 10_000_000 if args.full else args.session_events
        session_table(n, args.checkpoint_every, args.repeat, args.json, not args.no_pure)
    if args.sliding:
        sliding_table(args.sliding_events, args.checkpoint_every, args.repeat, args.json, not args.no_pure)


if __name__ == "__main__":
    main()
