"""Pattern matching (streamlib.cep): offer-to-alert latency, saturation throughput, bounded state.

The pattern, over login events ``(user, ts_ms, kind, sent_ns)`` keyed by user:
two failed logins in a row, then a success, within one minute::

    Pattern.begin("f1").where(is_fail).next("f2").where(is_fail).next("ok").where(is_ok).within(60_000)

It runs in event time (``with_timestamps``, no disorder) after a
``Source.queue``, as a service receiving events would.

1. Latency: a producer wakes every millisecond and offers events one at a time
   with ``offer_nowait`` (as ``bench_latency.py --trickle`` does), at 2,000/s
   and at 100,000/s, over 10,000 users (half of the events from 50 of them,
   so alerts come often); each event carries the
   ``perf_counter_ns`` taken just before its offer, and the alert sink records
   ``now - sent_ns`` of the event that completed the match. p50/p99/max in us.
2. Saturation: the same pattern over ``--events`` pre-built events pushed as
   fast as the stream takes them (``Source.from_iterable``), with the fast path
   for chains of single-event steps and with the general NFA, next to a
   hand-written dict matcher for the same pattern, run as a plain loop, as a
   ``map`` in a stream and as a ``stateful_map`` after ``with_timestamps`` and
   ``key_by`` (the same kind of stream). Every contestant ends with the same
   alert tuples ``(user, ts_f1, ts_f2, ts_ok)`` (the pattern's ``Match`` goes
   through ``map(alert_of)``), all kept until the end, and they are checked to be
   the same; best of 3, the variants interleaved in each round.
3. State (``--state``): ``--state-events`` events over ``--state-keys``
   distinct users, one event per ms of event time; the users come in waves of
   ``--state-wave`` at a time, each user sending ``events / keys`` events spread
   over one minute, then never again. Pattern ``fail followed_by success
   within 1 min`` (70% fails, no success: every partial match lives until its
   window closes, the worst case), checkpointed to a MemoryStore every 10,000
   events. Printed as the stream goes: the store rows of the match operator
   next to the users with an event in the last minute (and the users seen so
   far): the rows follow the active users, not the users seen.

    python benchmarks/bench_cep.py [--seconds 10] [--events 1000000] [--json]
    python benchmarks/bench_cep.py --state [--state-events 10000000] [--state-keys 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any

from streamlib import Keep, MemoryStore, Sink, Source
import streamlib.cep._stage as cep_stage
from streamlib.cep import Pattern, skip_past_last_event

now_ns = time.perf_counter_ns
FAIL, OK, OTHER = 0, 1, 2
USERS = 10_000
WITHIN = 60_000


def is_fail(e: tuple[int, int, int, int]) -> bool:
    return e[2] == FAIL


def is_ok(e: tuple[int, int, int, int]) -> bool:
    return e[2] == OK


PATTERN = (
    Pattern.begin("f1", skip=skip_past_last_event())
    .where(is_fail)
    .next("f2")
    .where(is_fail)
    .next("ok")
    .where(is_ok)
    .within(WITHIN)
)


def kind_of(r: float) -> int:
    return FAIL if r < 0.4 else (OK if r < 0.8 else OTHER)


def make_events(n: int, users: int, seed: int = 1) -> list[tuple[int, int, int, int]]:
    rnd = random.Random(seed)
    # A few hot users get bursts, so matches happen; most users trickle.
    return [(rnd.randrange(users), i, kind_of(rnd.random()), 0) for i in range(n)]


# -- the hand-written matcher ---------------------------------------------------------------


class DictMatcher:
    """Per user, the last two events (kind, ts); a success after two fails within the window alerts."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[int, int, int, int]] = {}

    def feed(self, e: tuple[int, int, int, int]) -> tuple[Any, ...] | None:
        user, ts, kind, _ = e
        prev = self.last.get(user)
        if kind == OK and prev is not None and prev[0] == FAIL and prev[2] == FAIL and ts - prev[3] < WITHIN:
            del self.last[user]  # skip past the match: the next one starts after it
            return (user, prev[3], prev[1], ts)
        if prev is None:
            self.last[user] = (kind, ts, -1, -1)
        else:
            self.last[user] = (kind, ts, prev[0], prev[1])
        return None


def alert_of(m: Any) -> tuple[Any, ...]:
    return (m.key, m.events["f1"][0][1], m.events["f2"][0][1], m.events["ok"][0][1])


# -- latency ---------------------------------------------------------------------------------


async def latency(rate: int, seconds: float) -> dict[str, float]:
    lat: list[int] = []

    def sink(m: Any) -> None:
        lat.append(now_ns() - m.events["ok"][0][3])

    queue, done = (
        Source.queue(1 << 16)
        .with_timestamps(lambda e: e[1])
        .key_by(lambda e: e[0])
        .match(PATTERN)
        .to_mat(Sink.foreach(sink), Keep.both)
        .run()
    )
    offer = queue.offer_nowait
    rnd = random.Random(7)
    per_wake = max(1, rate // 1000)
    wakes = int(seconds * 1000)
    start = time.monotonic()
    i = 0
    for w in range(wakes):
        await asyncio.sleep(max(0.0, start + (w + 1) / 1000 - time.monotonic()))
        for _ in range(per_wake):
            i += 1
            # Half of the events come from 50 users hammering the login, so alerts come regularly.
            user = rnd.randrange(50) if rnd.random() < 0.5 else rnd.randrange(USERS)
            kind = kind_of(rnd.random())
            if not offer((user, i, kind, now_ns())):
                raise RuntimeError("the queue refused an event: the pipeline fell behind")
    elapsed = time.monotonic() - start
    queue.complete()
    await done
    lat.sort()
    us = [x / 1000 for x in lat]
    return {
        "rate": rate,
        "offered_per_s": round(i / elapsed),
        "alerts": len(us),
        "p50_us": round(statistics.median(us), 1) if us else float("nan"),
        "p99_us": round(us[int(len(us) * 0.99)], 1) if us else float("nan"),
        "max_us": round(us[-1], 1) if us else float("nan"),
    }


# -- saturation --------------------------------------------------------------------------------


def in_stateful_map(e: tuple[int, int, int, int], state: Any) -> tuple[Any, ...] | None:
    """The hand-written matcher as a user writes it in a keyed stream today: the state is the last two events."""
    user, ts, kind, _ = e
    prev = state.get(None)
    if kind == OK and prev is not None and prev[0] == FAIL and prev[2] == FAIL and ts - prev[3] < WITHIN:
        state.delete()
        return (user, prev[3], prev[1], ts)
    state.set((kind, ts, -1, -1) if prev is None else (kind, ts, prev[0], prev[1]))
    return None


async def saturation(n: int) -> dict[str, Any]:
    events = make_events(n, USERS)
    best: dict[str, float] = {}
    results: dict[str, list[Any]] = {}
    for _ in range(3):
        for name, fast in (("cep", True), ("cep_general", False)):
            cep_stage.FAST_PATH = fast
            t0 = time.perf_counter()
            out = await (
                Source.from_iterable(events).with_timestamps(lambda e: e[1]).key_by(lambda e: e[0]).match(PATTERN)
                .map(alert_of).run_with(Sink.collect())
            )  # fmt: skip
            best[name] = min(best.get(name, 1e9), time.perf_counter() - t0)
            results[name] = out
        cep_stage.FAST_PATH = True

        t0 = time.perf_counter()
        out3 = await (
            Source.from_iterable(events).with_timestamps(lambda e: e[1]).key_by(lambda e: e[0])
            .stateful_map(in_stateful_map).run_with(Sink.collect())
        )  # fmt: skip
        best["dict_keyed"] = min(best.get("dict_keyed", 1e9), time.perf_counter() - t0)
        results["dict_keyed"] = out3

        t0 = time.perf_counter()
        dm = DictMatcher()
        feed = dm.feed
        alerts = [a for a in map(feed, events) if a is not None]
        best["dict_loop"] = min(best.get("dict_loop", 1e9), time.perf_counter() - t0)
        results["dict_loop"] = alerts

        dm2 = DictMatcher()
        t0 = time.perf_counter()
        out2 = await Source.from_iterable(events).map(dm2.feed).filter(lambda a: a is not None).run_with(Sink.collect())
        best["dict_stream"] = min(best.get("dict_stream", 1e9), time.perf_counter() - t0)
        results["dict_stream"] = out2
    same = all(sorted(r) == sorted(results["dict_loop"]) for r in results.values())
    if not same:
        raise AssertionError("the pattern and the hand-written matcher disagree")
    return {
        "events": n,
        "alerts": len(results["cep"]),
        "cep_events_per_s": round(n / best["cep"]),
        "cep_general_events_per_s": round(n / best["cep_general"]),
        "dict_keyed_events_per_s": round(n / best["dict_keyed"]),
        "cep_vs_dict_keyed": round(best["dict_keyed"] / best["cep"], 2),
        "dict_loop_events_per_s": round(n / best["dict_loop"]),
        "dict_stream_events_per_s": round(n / best["dict_stream"]),
        "cep_vs_dict_loop": round(best["dict_loop"] / best["cep"], 2),
        "cep_vs_dict_stream": round(best["dict_stream"] / best["cep"], 2),
    }


# -- bounded state ----------------------------------------------------------------------------


async def state_rows(n: int, keys: int, wave: int) -> dict[str, Any]:
    store = MemoryStore()
    pattern = Pattern.begin("fail").where(is_fail).followed_by("ok").where(is_ok).within(WITHIN)
    per_key = max(1, n // keys)
    block = wave * per_key  # events of one wave: `wave` users, `per_key` events each, interleaved
    gap = max(1, WITHIN // block)  # event-time ms between events: a wave spans about a minute
    rnd = random.Random(3)
    last_seen: dict[int, int] = {}
    samples: list[dict[str, int]] = []
    every = max(1, n // 20)

    def rows() -> int:
        return sum(store.table(t).count() for t in store.table_names() if "match" in t)

    def events() -> Any:
        for i in range(n):
            b, r = divmod(i, block)
            user = b * wave + r % wave
            ts = i * gap
            last_seen[user] = ts
            yield (user, ts, FAIL if rnd.random() < 0.7 else OTHER, 0)
            if i % every == 0 and i:
                active = sum(1 for t in last_seen.values() if t > ts - WITHIN)
                # The store holds what the last checkpoint wrote: up to one checkpoint interval behind.
                lag = sum(1 for t in last_seen.values() if t > ts - WITHIN - 10_000 * gap)
                samples.append(
                    {"events": i, "users_seen": len(last_seen), "active_last_minute": active,
                     "active_last_minute_and_checkpoint": lag, "rows": rows()}
                )  # fmt: skip

    t0 = time.perf_counter()
    await (
        Source.from_iterable(events()).checkpointed(store, every=10_000, replayable=True)
        .with_timestamps(lambda e: e[1]).key_by(lambda e: e[0]).match(pattern).run_with(Sink.ignore())
    )  # fmt: skip
    return {
        "events": n,
        "keys": keys,
        "wave": wave,
        "event_ms_apart": gap,
        "seconds": round(time.perf_counter() - t0, 1),
        "samples": samples,
        "max_rows": max((x["rows"] for x in samples), default=0),
        "max_active_last_minute": max((x["active_last_minute"] for x in samples), default=0),
        "rows_within_bound": all(x["rows"] <= x["active_last_minute_and_checkpoint"] for x in samples),
        "rows_at_end": rows(),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per latency run (10: about 740 alerts at 2,000/s, enough for a p99)")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--state", action="store_true", help="measure only the state bound (rows over time)")
    ap.add_argument("--state-events", type=int, default=10_000_000)
    ap.add_argument("--state-keys", type=int, default=1_000_000)
    ap.add_argument("--state-wave", type=int, default=10_000, help="users active at a time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report: dict[str, Any] = {"python": sys.version.split()[0]}
    if args.state:
        report["state"] = await state_rows(args.state_events, args.state_keys, args.state_wave)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_state(report["state"])
        return
    report["latency"] = [await latency(rate, args.seconds) for rate in (2_000, 100_000)]
    report["saturation"] = await saturation(args.events)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("offer-to-alert latency, 3-step pattern, 10,000 users (event time, queue + offer_nowait)")
    print(f"{'rate/s':>9} {'offered/s':>10} {'alerts':>7} {'p50 us':>8} {'p99 us':>8} {'max us':>9}")
    for r in report["latency"]:
        print(f"{r['rate']:>9,} {r['offered_per_s']:>10,} {r['alerts']:>7,} {r['p50_us']:>8} {r['p99_us']:>8} {r['max_us']:>9}")
    s = report["saturation"]
    print(f"\nsaturation, {s['events']:,} events, {s['alerts']:,} alerts (the same alerts from every contestant)")
    print(f"  match(pattern)                 {s['cep_events_per_s']:>12,} events/s")
    print(f"  match(pattern), general NFA    {s['cep_general_events_per_s']:>12,} events/s   (fast path off)")
    print(f"  hand-written dict, plain loop  {s['dict_loop_events_per_s']:>12,} events/s   (match is {s['cep_vs_dict_loop']}x)")
    print(f"  hand-written dict, in a stream {s['dict_stream_events_per_s']:>12,} events/s   (match is {s['cep_vs_dict_stream']}x)")
    print(f"  hand-written, keyed stateful_map {s['dict_keyed_events_per_s']:>10,} events/s   (match is {s['cep_vs_dict_keyed']}x)")


def print_state(st: dict[str, Any]) -> None:
    print(
        f"state rows, {st['events']:,} events over {st['keys']:,} users ({st['wave']:,} at a time, "
        f"{st['event_ms_apart']} ms apart), within 1 min, {st['seconds']} s"
    )
    print(f"{'events':>12} {'users seen':>11} {'active last min':>16} {'+ ckpt interval':>16} {'store rows':>11}")
    for x in st["samples"]:
        print(
            f"{x['events']:>12,} {x['users_seen']:>11,} {x['active_last_minute']:>16,} "
            f"{x['active_last_minute_and_checkpoint']:>16,} {x['rows']:>11,}"
        )
    print(
        f"  max rows {st['max_rows']:,}, max active in the last minute {st['max_active_last_minute']:,}, "
        f"rows at the end {st['rows_at_end']:,}; rows <= users active in the last minute and checkpoint "
        f"interval at every sample: {st['rows_within_bound']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
