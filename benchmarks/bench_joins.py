"""Join throughput next to a plain-dict loop, and bounded join state on an endless stream.

Windowed (stream-stream) join: ``--events`` orders (1,000,000) ``(order_id,
ts, amount)``, one every 100 ms of event time, and as many payments
``(order_id, ts, paid)``, each 0 to 5 minutes after its order, both in
timestamp order. ``orders.join(payments, key=0, within=JoinWindows(before=0,
after=10 minutes))``: every order meets its payment, 1,000,000 results.
Contestants, one after the other in this one process, each checked to give
exactly the loop's results:

* a plain-Python loop over both streams merged in timestamp order, keeping each
  side's unmatched elements in dicts by key, matching on arrival and dropping
  elements whose window is over (the baseline);
* streamlib with no store (buffers in memory only);
* streamlib with ``RocksDBStore``, both inputs checkpointed every
  ``--checkpoint-every`` elements (100,000): every checkpoint writes the
  buffered elements and deletes the expired ones, atomically.

Inputs and the expected results are built first and then moved out of the
garbage collector's way (``gc.freeze()``), and no contestant's results stay
alive during the next run: a pipeline reading Kafka holds no such lists.
``--gc plain`` collects once instead of freezing: the input tuples (ints and
strings only) drop out of the collector, and the imported modules stay in its
oldest generation, as in any long-running program, which makes full collections
rarer (CPython starts one only when the objects promoted since the last one
exceed a quarter of the long-lived ones, and a frozen heap leaves almost none
long-lived).
Rates are medians of ``--repeat`` rounds (3) in events per second (orders plus
payments) of CPU time: the process's CPU seconds, all threads (RocksDB's
included), so other work on a shared machine weighs less than on a wall clock.
The ratio column is against the loop of the same round.

Stream-table join: ``--events`` purchases ``(order_id, ts, customer_id)`` joined
(inner) with a table of 10,000 customers ``(customer_id, ts, name)``; one
purchase in eleven names no customer and is dropped. The baseline loads the
customers into a dict and looks each purchase up; streamlib builds
``customers.key_by(0).to_table(value=2)`` and runs ``purchases.join(table,
key=2, combine=enrich)``, with no store and with ``RocksDBStore`` (both inputs
checkpointed every ``--checkpoint-every``). ``--only windowed|table`` runs one.

``--rows``: an endless orders/payments stream (``--rows-events`` of each,
2,000,000) through a 10-minute join with RocksDB, checkpointed every 100,000;
prints the rows in the join's table at every second checkpoint: flat, bounded by
the open windows, not by history.

    python benchmarks/bench_joins.py [--events N] [--repeat R] [--only windowed|table] [--gc freeze|plain]
                                     [--rows] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamlib import JoinWindows, RocksDBStore, Sink, Source  # noqa: E402

STEP = 100  # ms between orders
AFTER = 600_000  # 10 minutes
PAY_DELAY = 300_000  # payments 0..5 minutes after their order

Order = tuple[int, int, int]
Payment = tuple[int, int, int]


def make_events(n: int, seed: int = 1) -> tuple[list[Order], list[Payment]]:
    rnd = random.Random(seed)
    orders = [(i, i * STEP, i % 97) for i in range(n)]
    payments = sorted(((i, i * STEP + rnd.randrange(PAY_DELAY), 1) for i in range(n)), key=lambda p: p[1])
    return orders, payments


def combine(o: Order, p: Payment) -> tuple[int, int]:
    return (o[0], o[2] + p[2])


# -- the baseline ------------------------------------------------------------------


def dict_loop(orders: list[Order], payments: list[Payment]) -> list[tuple[int, int]]:
    """Both streams merged by timestamp; unmatched elements in dicts by key, expired by time."""
    out: list[tuple[int, int]] = []
    append = out.append
    open_orders: dict[int, list[Order]] = {}
    open_payments: dict[int, list[Payment]] = {}
    order_q: list[Order] = []  # arrival (= timestamp) order, for expiry
    pay_q: list[Payment] = []
    oi = pi = 0
    oq = pq = 0
    n_o, n_p = len(orders), len(payments)
    while oi < n_o or pi < n_p:
        if pi >= n_p or (oi < n_o and orders[oi][1] <= payments[pi][1]):
            o = orders[oi]
            oi += 1
            now = o[1]
            ps = open_payments.get(o[0])
            if ps:
                for p in ps:
                    if 0 <= p[1] - now <= AFTER:
                        append(combine(o, p))
            bucket = open_orders.get(o[0])
            if bucket is None:
                open_orders[o[0]] = [o]
            else:
                bucket.append(o)
            order_q.append(o)
        else:
            p = payments[pi]
            pi += 1
            now = p[1]
            os_ = open_orders.get(p[0])
            if os_:
                for o in os_:
                    if 0 <= now - o[1] <= AFTER:
                        append(combine(o, p))
            bucket = open_payments.get(p[0])
            if bucket is None:
                open_payments[p[0]] = [p]
            else:
                bucket.append(p)
            pay_q.append(p)
        # expire: an order can meet no later payment once now > ts + AFTER; a payment no later order once now > ts
        while oq < len(order_q) and order_q[oq][1] + AFTER < now:
            o = order_q[oq]
            oq += 1
            lst = open_orders[o[0]]
            lst.remove(o)
            if not lst:
                del open_orders[o[0]]
        while pq < len(pay_q) and pay_q[pq][1] < now:
            p = pay_q[pq]
            pq += 1
            lst = open_payments[p[0]]
            lst.remove(p)
            if not lst:
                del open_payments[p[0]]
        if oq > 65536:
            del order_q[:oq]
            oq = 0
        if pq > 65536:
            del pay_q[:pq]
            pq = 0
    return out


# -- streamlib ---------------------------------------------------------------------


async def streamlib_join(orders: list[Order], payments: list[Payment], store: Any, every: int) -> list[Any]:
    o = Source.from_iterable(orders)
    p = Source.from_iterable(payments)
    if store is not None:
        o = o.checkpointed(store, every=every, name="orders")
        p = p.checkpointed(store, every=every, name="payments")
    joined = o.with_timestamps(1).join(
        p.with_timestamps(1), key=0, within=JoinWindows(before=0, after=AFTER), combine=combine, name="pay"
    )
    return await joined.run_with(Sink.collect())


#: ``--gc plain``: leave the inputs in the collector's generations instead of freezing them.
FREEZE = True


def _freeze() -> None:
    """Move everything alive now (inputs, expected results, modules) out of the collector's way.

    ``--gc plain`` collects instead: the modules then count as long-lived objects, as in any
    program, and full collections come as rarely as in such a program.
    """
    if FREEZE:
        gc.freeze()
    else:
        gc.collect()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds of this process (all its threads, RocksDB's included) spent in ``fn()``, and its result."""
    gc.collect()
    t0 = time.process_time()
    r = fn()
    return time.process_time() - t0, r


def windowed(n: int, repeat: int, every: int) -> dict[str, Any]:
    orders, payments = make_events(n)
    expected = sorted(dict_loop(orders, payments))
    assert len(expected) == n, len(expected)
    _freeze()  # inputs and expected results: out of the collector's way for every contestant
    rates: dict[str, list[float]] = {"dict loop": [], "streamlib, no store": [], "streamlib, RocksDB": []}
    ratios: dict[str, list[float]] = {k: [] for k in rates}
    for _ in range(repeat):
        base, got = timed(lambda: dict_loop(orders, payments))
        del got  # no contestant's results stay alive during the next one's run
        round_rates = {"dict loop": 2 * n / base}
        for label, use_store in (("streamlib, no store", False), ("streamlib, RocksDB", True)):
            tmp = tempfile.mkdtemp(prefix="bench_joins_")
            try:
                store = RocksDBStore(os.path.join(tmp, "db"), sync=False) if use_store else None
                secs, got = timed(lambda: asyncio.run(streamlib_join(orders, payments, store, every)))
                if sorted(got) != expected:
                    raise AssertionError(f"{label}: results differ from the dict loop")
                del got
                round_rates[label] = 2 * n / secs
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        for k, v in round_rates.items():
            rates[k].append(v)
            ratios[k].append(v / round_rates["dict loop"])
    gc.unfreeze()
    rows = {k: (statistics.median(rates[k]), statistics.median(ratios[k])) for k in rates}
    print(f"\nWindowed join: {n:,} orders x {n:,} payments, 10-minute window, {repeat} round(s), median")
    print(f"{'contestant':<24}{'events/s':>14}{'x dict loop':>14}")
    for k, (rate, ratio) in rows.items():
        print(f"{k:<24}{rate:>14,.0f}{ratio:>14.2f}")
    return {k: {"events_per_s": r, "ratio": q} for k, (r, q) in rows.items()}


# -- stream-table join ------------------------------------------------------------------

CUSTOMERS = 10_000

Customer = tuple[int, int, str]  # (customer_id, ts, name)
Purchase = tuple[int, int, int]  # (order_id, ts, customer_id)


def make_purchases(n: int, seed: int = 3) -> tuple[list[Customer], list[Purchase]]:
    rnd = random.Random(seed)
    customers = [(c, 0, f"customer-{c}") for c in range(CUSTOMERS)]
    purchases = [(i, 1 + i * STEP, rnd.randrange(CUSTOMERS + CUSTOMERS // 10)) for i in range(n)]
    return customers, purchases  # one purchase in eleven has no customer: dropped by the inner join


def enrich(p: Purchase, name: str) -> tuple[int, str]:
    return (p[0], name)


def dict_enrich(customers: list[Customer], purchases: list[Purchase]) -> list[tuple[int, str]]:
    """The customers into a dict (latest name per id), then each purchase looked up in it."""
    table: dict[int, str] = {}
    for c, _ts, name in customers:
        table[c] = name
    out: list[tuple[int, str]] = []
    append, get = out.append, table.get
    for p in purchases:
        name = get(p[2])
        if name is not None:
            append(enrich(p, name))
    return out


async def streamlib_enrich(customers: list[Customer], purchases: list[Purchase], store: Any, every: int) -> list[Any]:
    c = Source.from_iterable(customers)
    p = Source.from_iterable(purchases)
    if store is not None:
        c = c.checkpointed(store, every=every, name="customers")
        p = p.checkpointed(store, every=every, name="purchases")
    table = c.with_timestamps(1).key_by(0).to_table(value=2, name="customers")
    joined = p.with_timestamps(1).join(table, key=2, combine=enrich, name="enrich")
    return await joined.run_with(Sink.collect())


def stream_table(n: int, repeat: int, every: int) -> dict[str, Any]:
    customers, purchases = make_purchases(n)
    expected = sorted(dict_enrich(customers, purchases))
    _freeze()
    labels = ("dict loop", "streamlib, no store", "streamlib, RocksDB")
    rates: dict[str, list[float]] = {k: [] for k in labels}
    ratios: dict[str, list[float]] = {k: [] for k in labels}
    for _ in range(repeat):
        base, got = timed(lambda: dict_enrich(customers, purchases))
        del got
        round_rates = {"dict loop": n / base}
        for label, use_store in (("streamlib, no store", False), ("streamlib, RocksDB", True)):
            tmp = tempfile.mkdtemp(prefix="bench_joins_table_")
            try:
                store = RocksDBStore(os.path.join(tmp, "db"), sync=False) if use_store else None
                secs, got = timed(lambda: asyncio.run(streamlib_enrich(customers, purchases, store, every)))
                if sorted(got) != expected:
                    raise AssertionError(f"{label}: results differ from the dict loop")
                del got
                round_rates[label] = n / secs
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        for k, v in round_rates.items():
            rates[k].append(v)
            ratios[k].append(v / round_rates["dict loop"])
    gc.unfreeze()
    rows = {k: (statistics.median(rates[k]), statistics.median(ratios[k])) for k in labels}
    print(f"\nStream-table join: {n:,} purchases x {CUSTOMERS:,} customers (inner), {repeat} round(s), median")
    print(f"{'contestant':<24}{'events/s':>14}{'x dict loop':>14}")
    for k, (rate, ratio) in rows.items():
        print(f"{k:<24}{rate:>14,.0f}{ratio:>14.2f}")
    return {k: {"events_per_s": r, "ratio": q} for k, (r, q) in rows.items()}


# -- bounded state -------------------------------------------------------------------


def endless(n: int) -> Iterator[Any]:
    rnd = random.Random(7)
    for i in range(n):
        yield i, i * STEP + rnd.randrange(PAY_DELAY // 10), 1


async def rows_over_time(n: int, every: int) -> list[tuple[int, int, int]]:
    tmp = tempfile.mkdtemp(prefix="bench_joins_rows_")
    try:
        store = RocksDBStore(os.path.join(tmp, "db"), sync=False)
        samples: list[tuple[int, int, int]] = []
        commits = [0]

        def sample(commit: Any) -> None:
            commits[0] += 1
            if commits[0] % 2 == 0:
                pos = commit.meta.get("position:orders", 0)
                samples.append((pos, pos * STEP // 60_000, store.table("pay").count()))

        store.add_commit_hook(sample)
        orders = Source.from_iterator(lambda: ((i, i * STEP, 1) for i in range(n)))
        payments = Source.from_iterator(lambda: endless(n))
        joined = (
            orders.checkpointed(store, every=every, name="orders")
            .with_timestamps(1)
            .join(
                payments.checkpointed(store, every=every, name="payments").with_timestamps(
                    1, max_out_of_orderness=PAY_DELAY // 10
                ),
                key=0,
                within=JoinWindows(before=0, after=timedelta(minutes=10)),
                combine=combine,
                name="pay",
            )
        )
        count = await joined.run_with(Sink.fold(0, lambda n, _: n + 1))
        assert count == n, count
        return samples
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=100_000)
    ap.add_argument("--rows", action="store_true", help="also print store rows over an endless join stream")
    ap.add_argument("--rows-events", type=int, default=2_000_000)
    ap.add_argument("--only", choices=["windowed", "table"], help="run one of the two join benchmarks")
    ap.add_argument("--gc", choices=["freeze", "plain"], default="freeze",
                    help="freeze the inputs out of the garbage collector (default) or leave them in it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global FREEZE
    FREEZE = args.gc == "freeze"
    result: dict[str, Any] = {}
    if args.only in (None, "windowed"):
        result["windowed"] = windowed(args.events, args.repeat, args.checkpoint_every)
    if args.only in (None, "table"):
        result["stream_table"] = stream_table(args.events, args.repeat, args.checkpoint_every)
    if args.rows:
        samples = asyncio.run(rows_over_time(args.rows_events, args.checkpoint_every))
        print(f"\nRows in the join's RocksDB table, endless stream ({args.rows_events:,} orders and payments)")
        print(f"{'orders read':>14}{'event minutes':>16}{'rows':>10}")
        for pos, minutes, rows in samples:
            print(f"{pos:>14,}{minutes:>16,}{rows:>10,}")
        result["rows"] = samples
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
