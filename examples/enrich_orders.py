"""Orders enriched with their payment (within 10 minutes) and their customer's name, exactly-once on Kafka.

    python examples/enrich_orders.py [--bootstrap HOST:PORT] [--orders 4000]

Without ``--bootstrap`` it starts a local single-node broker (needs Java 17+;
the first run downloads Kafka's jars with Maven); ``python -m
streamlib.testing.kafka`` starts one by hand.

* ``customers`` (compacted, keyed by customer id, value the name): a
  :class:`GlobalTable`, read whole by every instance before anything else;
* ``orders`` and ``payments`` (4 partitions each, keyed by order id, record time
  = event time): co-partitioned, so partition n of both is one task with one
  state store;
* ``enriched``: per order paid within 10 minutes of it, ``Enriched(order,
  customer, name, cents, paid)``.

The topology joins ``context.source(orders)`` with ``context.source(payments)``
in a stream-stream join (inner, ``JoinWindows(before=0, after=10 min)``, both
buffers in the task's RocksDB store, changelogged) and then with the customer
table (left: an unknown customer gives ``name=None``). Each task commits its
outputs, changelog writes and the offsets of both partitions in one transaction
every 100 ms. Half-way the app is stopped and started again (a deploy); at the
end a ``read_committed`` reader checks the output against plain Python.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import uuid
from datetime import timedelta
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamlib import JoinWindows, Source
from streamlib.kafka import (
    ConsumerSettings,
    GlobalTable,
    JsonSerde,
    KafkaApp,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
    TopicPartition,
)
from streamlib.kafka.testing import end_offsets, read_topic
from streamlib.testing.kafka import broker_or_local

MINUTE = 60_000
WINDOW = timedelta(minutes=10)
CUSTOMERS = 50  # customer-0 .. customer-49 ordering; the table knows all but every tenth


class Order(msgspec.Struct):
    id: str
    customer: str
    cents: int
    ts: int


class Payment(msgspec.Struct):
    order_id: str
    cents: int
    ts: int


class Enriched(msgspec.Struct):
    order: str
    customer: str
    name: str | None
    cents: int
    paid: int


def make_events(n: int, seed: int = 11) -> tuple[list[Order], list[Payment]]:
    """Orders about a second apart (up to 20 s out of order); most paid 0 to 15 minutes later."""
    rng = random.Random(seed)
    start = 1_700_000_000_000
    orders, payments = [], []
    for i in range(n):
        ts = start + i * 1000 + rng.randrange(20_000)
        order = Order(f"order-{i}", f"customer-{rng.randrange(CUSTOMERS)}", rng.randrange(100, 50_000), ts)
        orders.append(order)
        if rng.random() < 0.8:
            payments.append(Payment(order.id, order.cents, ts + rng.randrange(15 * MINUTE)))
    return orders, payments


def expected(orders: list[Order], payments: list[Payment], names: dict[str, str]) -> list[Enriched]:
    """The documented semantics in plain Python: each order with each payment 0 to 10 minutes after it."""
    paid: dict[str, list[Payment]] = {}
    for p in payments:
        paid.setdefault(p.order_id, []).append(p)
    return sorted(
        (Enriched(o.id, o.customer, names.get(o.customer), o.cents, p.cents)
         for o in orders for p in paid.get(o.id, []) if 0 <= p.ts - o.ts <= 10 * MINUTE),
        key=lambda e: e.order,
    )


def topology_for(orders: str, payments: str, output: str, customers: GlobalTable[str, str]) -> Any:
    def topology(p: PartitionContext) -> Source[ProducerRecord[str, Enriched], None]:
        bound = timedelta(minutes=1)
        # The inputs hold different types: the app reads bytes, each input decodes its own.
        placed: Source[Order, None] = p.source(orders).map(lambda r: msgspec.json.decode(r.value, type=Order))
        paid: Source[Payment, None] = p.source(payments).map(lambda r: msgspec.json.decode(r.value, type=Payment))
        pairs = placed.with_timestamps("ts", max_out_of_orderness=bound).join(
            paid.with_timestamps("ts", max_out_of_orderness=bound),
            key_a="id", key_b="order_id", within=JoinWindows(before=0, after=WINDOW),
            combine=lambda o, pay: (o, pay), store=p.store, left_type=Order, right_type=Payment, name="paid",
        )
        return pairs.join(
            customers, key=lambda pair: pair[0].customer, how="left",
            combine=lambda pair, name: ProducerRecord(
                output, Enriched(pair[0].id, pair[0].customer, name, pair[0].cents, pair[1].cents), key=pair[0].id
            ),
        )

    return topology


async def create_topics(bootstrap: str, topics: dict[str, dict[str, str]], partitions: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions[t], 1, topic_configs=cfg) for t, cfg in topics.items()])
    finally:
        await admin.close()


async def produce(bootstrap: str, records: list[tuple[str, str, bytes | None, int]]) -> None:
    """(topic, key, value, record time) each, in order; keyed records of both inputs land in equal partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key.encode(), timestamp_ms=ts)
                   for topic, key, value, ts in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run_app(app: KafkaApp, ends: dict[TopicPartition, int]) -> None:
    """Run ``app`` until every input partition's committed offset reached ``ends``, then stop it."""
    control = app.run()
    try:
        while not control.is_stopped and any(control.metrics.committed.get(tp, -1) < e for tp, e in ends.items()):
            await asyncio.sleep(0.05)
    finally:
        control.stop()
        await control.wait_stopped()
    print(f"  committed {control.metrics.commits} transactions over {control.metrics.records:,} input records")


async def main(bootstrap: str, n: int, prefix: str, state_dir: str) -> bool:
    customers_t, orders_t, payments_t, out_t = (f"{prefix}-{t}" for t in ("customers", "orders", "payments", "out"))
    await create_topics(
        bootstrap, {customers_t: {"cleanup.policy": "compact"}, orders_t: {}, payments_t: {}, out_t: {}},
        {customers_t: 2, orders_t: 4, payments_t: 4, out_t: 4},
    )
    names = {f"customer-{c}": f"Customer {c}" for c in range(CUSTOMERS) if c % 10}
    await produce(bootstrap, [(customers_t, c, name.encode(), 0) for c, name in names.items()])
    orders, payments = make_events(n)
    encode = msgspec.json.encode
    events = sorted([(orders_t, o.id, encode(o), o.ts) for o in orders]
                    + [(payments_t, p.order_id, encode(p), p.ts) for p in payments], key=lambda e: e[3])

    consumer = ConsumerSettings(bootstrap, key_serde=StrSerde())
    table: GlobalTable[str, str] = GlobalTable(customers_t, consumer.with_serdes(value=StrSerde()))
    app = KafkaApp(
        f"{prefix}-enrich",
        consumer=consumer,
        producer=ProducerSettings(bootstrap, key_serde=StrSerde(), value_serde=JsonSerde(Enriched)),
        topics=[orders_t, payments_t],  # co-partitioned: partition n of both is one task
        topology=topology_for(orders_t, payments_t, out_t, table),
        global_tables=[table],
        checkpoint_interval=0.1,
        state_dir=state_dir,
    )
    half = len(events) // 2
    for part, what in ((events[:half], "first"), (events[half:], "second")):
        await produce(bootstrap, [(t, k, v, ts) for t, k, v, ts in part])
        print(f"Produced the {what} half ({len(part):,} orders and payments); running the app")
        ends = {**await end_offsets(bootstrap, orders_t), **await end_offsets(bootstrap, payments_t)}
        await run_app(app, ends)

    got = sorted((msgspec.json.decode(r.value, type=Enriched) for r in await read_topic(bootstrap, out_t)),
                 key=lambda e: e.order)
    want = expected(orders, payments, names)
    print(f"{len(got):,} enriched orders (of {n:,} orders, {len(payments):,} payments), e.g. {got[0] if got else None}")
    ok = got == want
    print("Check against plain Python: " + ("same results" if ok else f"MISMATCH ({len(got)} vs {len(want)})"))
    return ok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: start a local broker)")
    parser.add_argument("--orders", type=int, default=4000)
    args = parser.parse_args()
    with broker_or_local(args.bootstrap) as servers, tempfile.TemporaryDirectory() as state:
        good = asyncio.run(main(servers, args.orders, f"enrich-{uuid.uuid4().hex[:8]}", state))
    raise SystemExit(0 if good else 1)
