"""Exactly-once ETL on Kafka: running totals per customer, with state that survives restarts.

    python examples/kafka_exactly_once.py [--bootstrap HOST:PORT] [--orders 20000]

Without ``--bootstrap`` it starts a local single-node broker (needs Java 17+;
the first run downloads Kafka's jars with Maven).

``orders`` (JSON, 4 partitions, keyed by customer) -> ``KafkaApp`` -> ``totals``:
for each order, the customer's running order count and amount, kept in the
partition's RocksDB store, mirrored to a compacted changelog topic. Each
partition commits its output records, its changelog writes and its consumed
offsets in one Kafka transaction every 100 ms. Once it has committed the
first half of the orders (every partition's committed offset at the end of the
input) the app is stopped and started again (a deploy): it reloads its state
from the local store and carries on with the second half. At the end a
``read_committed`` reader checks the last total of every customer against plain
Python.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import uuid
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamlib import Flow, KeyState
from streamlib.kafka import (
    AppMetrics,
    ConsumerSettings,
    JsonSerde,
    KafkaApp,
    KafkaRecord,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
    TopicPartition,
)
from streamlib.kafka.testing import end_offsets, read_topic
from streamlib.testing.kafka import broker_or_local


class Order(msgspec.Struct):
    id: int
    customer: str
    cents: int


class Total(msgspec.Struct):
    customer: str
    orders: int
    cents: int


def make_orders(n: int, seed: int = 7) -> list[Order]:
    rng = random.Random(seed)
    return [Order(i, f"customer-{rng.randrange(200)}", rng.randrange(100, 50_000)) for i in range(n)]


def topology_for(output: str) -> Any:
    def topology(p: PartitionContext) -> Flow[KafkaRecord[str, Order], ProducerRecord[str, Total], None]:
        def add(record: KafkaRecord[str, Order], state: KeyState[str, tuple[int, int]]) -> ProducerRecord[str, Total]:
            order = record.value
            assert order is not None
            count, cents = state.get((0, 0)) or (0, 0)
            count, cents = count + 1, cents + order.cents
            state.set((count, cents))
            return ProducerRecord(output, Total(order.customer, count, cents), key=order.customer)

        records: Flow[KafkaRecord[str, Order], KafkaRecord[str, Order], None] = Flow()
        totals: Flow[KafkaRecord[str, Order], ProducerRecord[str, Total], None] = records.key_by(
            lambda r: r.key or ""
        ).stateful_map(add, store=p.store, name="totals", state_type=tuple[int, int])
        return totals

    return topology


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def produce_orders(bootstrap: str, topic: str, orders: list[Order]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        encode = msgspec.json.encode
        futures = [await producer.send(topic, encode(o), key=o.customer.encode()) for o in orders]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run_app(app: KafkaApp, ends: dict[TopicPartition, int]) -> AppMetrics:
    """Run ``app`` until every input partition's committed offset reached ``ends``, then stop it.

    A committed offset only moves when a checkpoint's transaction commits, so
    everything before it was processed exactly once, however often a partition
    was reopened and read again meanwhile.
    """
    control = app.run()
    try:
        while not control.is_stopped and any(
            control.metrics.committed.get(tp, -1) < end for tp, end in ends.items()
        ):
            await asyncio.sleep(0.05)
    finally:
        control.stop()
        await control.wait_stopped()  # raises what stopped the app, if it stopped by itself
    return control.metrics


async def main(bootstrap: str, n: int, prefix: str, state_dir: str) -> bool:
    orders_topic, totals_topic = f"{prefix}-orders", f"{prefix}-totals"
    await create_topics(bootstrap, [orders_topic, totals_topic], partitions=4)
    orders = make_orders(n)
    half = n // 2
    await produce_orders(bootstrap, orders_topic, orders[:half])
    print(f"Produced {half:,} orders to {orders_topic}")

    app = KafkaApp(
        f"{prefix}-totals-app",
        consumer=ConsumerSettings(bootstrap, key_serde=StrSerde(), value_serde=JsonSerde(Order)),
        producer=ProducerSettings(bootstrap, key_serde=StrSerde(), value_serde=JsonSerde(Total)),
        topics=orders_topic,
        topology=topology_for(totals_topic),
        processing_guarantee="exactly_once",
        checkpoint_interval=0.1,
        state_dir=state_dir,
    )
    first = await run_app(app, await end_offsets(bootstrap, orders_topic))
    print(f"First run: processed {first.records:,} orders, committed {first.commits} transactions, then stopped")
    await produce_orders(bootstrap, orders_topic, orders[half:])
    print(f"Produced {n - half:,} more orders")
    second = await run_app(app, await end_offsets(bootstrap, orders_topic))
    print(f"Second run: processed {second.records:,} orders, committed {second.commits} transactions "
          f"(state from the local store: {second.full_restores} full rebuilds from the changelog)")

    # Every total the app committed, in order per customer: exactly one per order, none missing.
    committed: dict[str, list[Total]] = {}
    for rec in await read_topic(bootstrap, totals_topic, isolation_level="read_committed"):
        total = msgspec.json.decode(rec.value, type=Total)
        committed.setdefault(total.customer, []).append(total)
    expected: dict[str, list[Total]] = {}
    for o in orders:
        totals = expected.setdefault(o.customer, [])
        previous = totals[-1] if totals else Total(o.customer, 0, 0)
        totals.append(Total(o.customer, previous.orders + 1, previous.cents + o.cents))
    ok = committed == expected
    top = sorted((totals[-1] for totals in expected.values()), key=lambda t: -t.cents)[:3]
    for t in top:
        print(f"  {t.customer}: {t.orders} orders, {t.cents / 100:,.2f}")
    print("Check against plain Python: " + ("same results" if ok else "MISMATCH"))
    for line in differences(expected, committed)[:10]:
        print("  " + line)
    return ok


def differences(expected: dict[str, list[Total]], committed: dict[str, list[Total]]) -> list[str]:
    """What differs, customer by customer: missing, duplicated or reordered totals."""
    out = []
    for customer in sorted(set(expected) | set(committed)):
        want, got = expected.get(customer, []), committed.get(customer, [])
        if want == got:
            continue
        counts = [t.orders for t in got]
        dup = sorted({c for c in counts if counts.count(c) > 1})
        missing = sorted({t.orders for t in want} - set(counts))
        out.append(f"{customer}: {len(want)} totals expected, {len(got)} committed; duplicated order counts "
                   f"{dup[:5]}, missing {missing[:5]}, in order: {counts == sorted(counts)}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: start a local broker)")
    parser.add_argument("--orders", type=int, default=20_000)
    args = parser.parse_args()
    with broker_or_local(args.bootstrap) as servers, tempfile.TemporaryDirectory() as state:
        good = asyncio.run(main(servers, args.orders, f"example-{uuid.uuid4().hex[:8]}", state))
    raise SystemExit(0 if good else 1)
