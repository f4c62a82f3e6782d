"""streamlib quickstart: a fan-out graph over a million synthetic orders, no Kafka needed.

    python examples/quickstart.py [--orders 1000000]

The graph::

                       +-> grouped(4096) -> per-batch totals -> scan (running totals) -+
                       |                                                               |
    orders -> Broadcast +-> filter(high value) -> map(Alert) -----------------------------+-> Merge -> report
                       |                                                               |
                       +-> event time -> key_by(category) -> 1-minute windows (RocksDB) -+

One branch keeps a running revenue total per category, one picks out the
high-value orders, and one sums revenue per category per minute of event time,
its window state in a RocksDB store written at a checkpoint every 100,000
orders; all three meet again in one stream that a
single sink folds into a report. Broadcast is as fast as its slowest branch and
every channel is bounded, so memory stays flat however many orders flow through.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from streamlib import (
    Broadcast,
    Flow,
    GraphBuilder,
    Merge,
    RocksDBStore,
    Sink,
    Source,
    TumblingWindows,
    WindowResult,
    native_enabled,
)

CATEGORIES = ("books", "electronics", "garden", "grocery", "toys")
HIGH_VALUE_CENTS = 95_000
BATCH = 4096
MINUTE_MS = 60_000
CHECKPOINT_EVERY = 100_000  # the window branch writes its RocksDB state every 100,000 orders
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z; one order every 10 ms of event time


@dataclass(frozen=True, slots=True)
class Order:
    order_id: int
    category: str
    amount_cents: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Revenue per category (cents) over every order seen so far."""

    orders: int
    cents: dict[str, int]


@dataclass(frozen=True, slots=True)
class Alert:
    order: Order


def synthetic_orders(n: int, seed: int = 7) -> Iterator[Order]:
    """``n`` orders with random categories and amounts between 1.00 and 999.99."""
    rng = random.Random(seed)
    pick, amount = rng.randrange, rng.randrange
    for i in range(n):
        yield Order(i, CATEGORIES[pick(5)], amount(100, 100_000), START_MS + 10 * i)


def batch_totals(batch: list[Order]) -> Totals:
    cents = dict.fromkeys(CATEGORIES, 0)
    for order in batch:
        cents[order.category] += order.amount_cents
    return Totals(len(batch), cents)


def add_totals(running: Totals, batch: Totals) -> Totals:
    return Totals(
        running.orders + batch.orders,
        {c: running.cents.get(c, 0) + batch.cents[c] for c in batch.cents},
    )


class Report:
    """What the single sink builds from the merged stream of totals and alerts."""

    def __init__(self) -> None:
        self.totals = Totals(0, {})
        self.alerts = 0
        self.largest: list[tuple[int, int, str]] = []  # a min-heap of (cents, id, category)
        self.per_minute: dict[tuple[str, int], int] = {}

    def add(self, event: Totals | Alert | WindowResult[str, int]) -> None:
        if isinstance(event, Totals):
            self.totals = event  # running totals only grow: the latest is the newest
            return
        if isinstance(event, WindowResult):
            self.per_minute[(event.key, event.start)] = event.value
            return
        self.alerts += 1
        order = event.order
        entry = (order.amount_cents, order.order_id, order.category)
        if len(self.largest) < 3:
            heapq.heappush(self.largest, entry)
        else:
            heapq.heappushpop(self.largest, entry)


async def run_pipeline(n: int, state_dir: str) -> Report:
    report = Report()
    b = GraphBuilder()
    orders = b.add(Source.from_iterator(lambda: synthetic_orders(n)))
    fan_out, fan_in = b.add(Broadcast(3)), b.add(Merge(3))
    sink = b.add(Sink.foreach(report.add))

    running_totals = Flow[Order, Order, None]().grouped(BATCH).map(batch_totals).scan(Totals(0, {}), add_totals)
    high_value = Flow[Order, Order, None]().filter(lambda o: o.amount_cents >= HIGH_VALUE_CENTS).map(Alert)
    store = RocksDBStore(state_dir)
    per_minute = (
        Flow[Order, Order, None]()
        .with_timestamps(lambda o: o.ts_ms)
        .checkpointed(store, every=CHECKPOINT_EVERY)
        .key_by(lambda o: o.category)
        .window(TumblingWindows(timedelta(minutes=1)), store=store)
        .sum(lambda o: o.amount_cents)
    )

    orders >> fan_out
    fan_out.out(0) >> running_totals >> fan_in.inp(0)
    fan_out.out(1) >> high_value >> fan_in.inp(1)
    fan_out.out(2) >> per_minute >> fan_in.inp(2)
    fan_in >> sink
    await b.to_runnable(sink).run()
    return report


def plain_loop(n: int) -> tuple[dict[str, int], int, dict[tuple[str, int], int]]:
    """The same results computed without streamlib, to check the pipeline's."""
    cents = dict.fromkeys(CATEGORIES, 0)
    alerts = 0
    per_minute: dict[tuple[str, int], int] = {}
    for order in synthetic_orders(n):
        cents[order.category] += order.amount_cents
        alerts += order.amount_cents >= HIGH_VALUE_CENTS
        window = (order.category, order.ts_ms - order.ts_ms % MINUTE_MS)
        per_minute[window] = per_minute.get(window, 0) + order.amount_cents
    return cents, alerts, per_minute


def money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=1_000_000, help="how many orders to generate")
    n = parser.parse_args().orders

    kernels = "compiled" if native_enabled() else "pure Python"
    print(f"streamlib quickstart: {n:,} synthetic orders ({kernels} kernels)")
    with tempfile.TemporaryDirectory(prefix="streamlib-quickstart-") as state_dir:
        start = time.perf_counter()
        report = await run_pipeline(n, state_dir)
        elapsed = time.perf_counter() - start

    print("\nRevenue by category:")
    for category in CATEGORIES:
        print(f"  {category:<12} {money(report.totals.cents.get(category, 0)):>18}")
    print(f"  {'total':<12} {money(sum(report.totals.cents.values())):>18}  ({report.totals.orders:,} orders)")
    print(f"\nHigh-value orders (>= {money(HIGH_VALUE_CENTS)}): {report.alerts:,}; the largest:")
    for cents, order_id, category in sorted(report.largest, reverse=True):
        print(f"  #{order_id:<9} {money(cents):>10}  {category}")

    if report.per_minute:
        (best_category, best_start), best = max(report.per_minute.items(), key=lambda kv: kv[1])
        minute = time.strftime("%Y-%m-%d %H:%M", time.gmtime(best_start / 1000))
        print(
            f"\nRevenue per category per minute (event time, state in RocksDB): {len(report.per_minute):,} windows;"
            f" the best: {best_category} at {minute} UTC, {money(best)}"
        )

    expected_cents, expected_alerts, expected_minutes = plain_loop(n)
    ok = (
        report.totals.cents == expected_cents
        and report.alerts == expected_alerts
        and report.totals.orders == n
        and report.per_minute == expected_minutes
    )
    print(f"\nCheck against a plain Python loop: {'same results' if ok else 'MISMATCH'}")
    print(f"{n:,} orders in {elapsed:.2f} s: {n / elapsed:,.0f} orders/s through the graph")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
