"""KafkaApps over several co-partitioned topics, and global tables, against the real broker.

Partition n of every input is one task with one store: state is shared across
the inputs, one transaction commits the offsets of all of them. The crash test
joins orders with payments (a stream-stream join within 10 minutes, its
buffers in the task's store) and with a customer ``GlobalTable``, while the app
is SIGKILLed and a second instance joins and leaves; the read_committed output
must equal the batch model.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streamlib import Flow, GraphBuilder, Merge, Source
from streamlib.kafka import (
    ConsumerSettings,
    GlobalTable,
    KafkaApp,
    KafkaStreamError,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
)
from streamlib.kafka.testing import open_transactions, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._procs import Job
from ._util import unique, wait_drained

PARTITIONS = 3


async def _produce(bootstrap: str, topic: str, rows: list[tuple[str, str, int]]) -> None:
    """Each (key, value, partition) in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, v.encode() if v is not None else None, key=k.encode(), partition=p)
                for k, v, p in rows]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def _rows(topic_tag: str, n: int, keys: int) -> list[tuple[str, str, int]]:
    return [(f"k{i % keys}", f"{topic_tag}{i}", (i % keys) % PARTITIONS) for i in range(n)]


async def _run_until_drained(app: KafkaApp, bootstrap: str, topics: list[str]) -> Any:
    control = app.run()
    try:
        for topic in topics:
            await wait_drained(bootstrap, app.application_id, topic, PARTITIONS)
    finally:
        control.stop()
        await control.wait_stopped()
    return control


def _merged(*sources: Source[Any, Any]) -> Source[Any, None]:
    """One Source of the elements of ``sources`` (a Merge: checkpoint barriers aligned)."""
    b = GraphBuilder()
    merge = b.add(Merge(len(sources)))
    for i, src in enumerate(sources):
        b.add(src) >> merge.inp(i)
    return b.to_source(merge.out(0))


def _settings(bootstrap: str) -> tuple[ConsumerSettings, ProducerSettings]:
    return (ConsumerSettings(bootstrap, key_serde=StrSerde(), value_serde=StrSerde(),
                             properties={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}),
            ProducerSettings(bootstrap, key_serde=StrSerde(), value_serde=StrSerde()))


@pytest.mark.parametrize("shape", ["flow", "sources"])
async def test_two_topics_form_one_task_per_partition_with_shared_state(
    kafka_broker: KafkaBroker, tmp_path: Path, shape: str
) -> None:
    """A per-key count over both topics: one store per partition number, outputs exactly once,
    and the state survives a restart (restored for the task, across both topics)."""
    bootstrap = kafka_broker.bootstrap_servers
    a, b, out = unique("co-a"), unique("co-b"), unique("co-out")
    for topic in (a, b, out):
        await kafka_broker.acreate_topic(topic, PARTITIONS)
    contexts: list[tuple[tuple[str, ...], int]] = []

    def step(rec: Any, state: Any) -> ProducerRecord[str, str]:
        count = state.get(0) + 1
        state.set(count)
        return ProducerRecord(out, json.dumps([rec.key, rec.topic, rec.value, count]), key=rec.key)

    def topology(p: PartitionContext) -> Any:
        contexts.append((p.topics, p.partition))
        counting = Flow().key_by(lambda r: r.key).stateful_map(step, store=p.store, name="counts")
        if shape == "flow":
            return counting  # gets both inputs, merged
        return _merged(p.source(a), p.source(b)).via(counting)

    consumer, producer = _settings(bootstrap)

    def app() -> KafkaApp:
        return KafkaApp(unique("co-app"), consumer=consumer, producer=producer, topics=[a, b], topology=topology,
                        state_dir=tmp_path / "state", checkpoint_interval=0.05)

    first, second = app(), None
    await _produce(bootstrap, a, _rows("a", 300, 12))
    await _produce(bootstrap, b, _rows("b", 200, 12))
    await _run_until_drained(first, bootstrap, [a, b])
    assert sorted(set(contexts)) == [((a, b), n) for n in range(PARTITIONS)]
    # The same app id again: each task restores its store and continues the counts.
    second = KafkaApp(first.application_id, consumer=consumer, producer=producer, topics=[a, b],
                      topology=topology, state_dir=tmp_path / "state", checkpoint_interval=0.05)
    await _produce(bootstrap, b, _rows("B", 150, 12))
    await _produce(bootstrap, a, _rows("A", 100, 12))
    await _run_until_drained(second, bootstrap, [a, b])

    rows = [json.loads(r.value) for r in await read_topic(bootstrap, out)]
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, _topic, _value, count in rows:
        per_key[key].append(count)
    totals = Counter(k for k, _v, _p in _rows("a", 300, 12) + _rows("b", 200, 12) + _rows("B", 150, 12)
                     + _rows("A", 100, 12))
    # Every record once, counted in one running count per key over both topics.
    assert {k: sorted(c) for k, c in per_key.items()} == {k: list(range(1, n + 1)) for k, n in totals.items()}
    assert Counter(v for _k, _t, v, _c in rows) == Counter(
        v for _k, v, _p in _rows("a", 300, 12) + _rows("b", 200, 12) + _rows("B", 150, 12) + _rows("A", 100, 12)
    )
    assert not await open_transactions(bootstrap, [out])


async def test_an_input_without_records_does_not_hold_back_checkpoints(kafka_broker: KafkaBroker) -> None:
    """The task's barrier trigger wakes the source of the empty input: its barriers reach the merge and
    every checkpoint of the other input commits."""
    bootstrap = kafka_broker.bootstrap_servers
    busy, empty, out = unique("idle-busy"), unique("idle-empty"), unique("idle-out")
    for topic in (busy, empty, out):
        await kafka_broker.acreate_topic(topic, PARTITIONS)
    await _produce(bootstrap, busy, _rows("v", 90, 9))

    def topology(p: PartitionContext) -> Source[Any, None]:
        counting = Flow().key_by(lambda r: r.key).stateful_map(
            lambda r, state: (state.set(state.get(0) + 1), ProducerRecord(out, str(state.get()), key=r.key))[1],
            store=p.store, name="counts")
        return _merged(p.source(busy), p.source(empty)).via(counting)

    consumer, producer = _settings(bootstrap)
    app = KafkaApp(unique("idle-app"), consumer=consumer, producer=producer, topics=[busy, empty],
                   topology=topology, checkpoint_interval=0.05)
    control = await _run_until_drained(app, bootstrap, [busy])
    assert control.metrics.commits >= 1
    assert sorted(int(r.value) for r in await read_topic(bootstrap, out)) == sorted(list(range(1, 11)) * 9)


async def test_inputs_with_different_partition_counts_fail_at_start(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    a, b = unique("co-three"), unique("co-two")
    await kafka_broker.acreate_topic(a, 3)
    await kafka_broker.acreate_topic(b, 2)
    consumer, producer = _settings(bootstrap)
    app = KafkaApp(unique("co-bad"), consumer=consumer, producer=producer, topics=[a, b],
                   topology=lambda p: Flow())
    control = app.run()
    with pytest.raises(KafkaStreamError) as info:
        await control.wait_stopped()
    message = str(info.value)
    assert f"{a} has 3" in message and f"{b} has 2" in message and "co-partitioned" in message


async def test_a_source_topology_must_read_every_input(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    a, b = unique("co-read-a"), unique("co-read-b")
    await kafka_broker.acreate_topic(a, 1)
    await kafka_broker.acreate_topic(b, 1)
    consumer, producer = _settings(bootstrap)
    app = KafkaApp(unique("co-unread"), consumer=consumer, producer=producer, topics=[a, b],
                   topology=lambda p: p.source(a))
    control = app.run()
    with pytest.raises(TypeError, match=f"does not read {b}"):
        await control.wait_stopped()


async def test_a_co_partitioned_table_from_a_compacted_topic_joins_the_stream(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """``p.table(topic)``: the task's partition of a compacted topic as a Table in the task's store, the
    right side of a stream-table join ordered by record time; restored after a restart."""
    bootstrap = kafka_broker.bootstrap_servers
    customers, orders, out = unique("ct-customers"), unique("ct-orders"), unique("ct-out")
    for topic in (customers, orders, out):
        await kafka_broker.acreate_topic(topic, PARTITIONS)
    producer_ = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer_.start()
    try:
        async def send(topic: str, key: str, value: str | None, ts: int) -> None:
            await (await producer_.send(topic, None if value is None else value.encode(), key=key.encode(),
                                        partition=int(key[1:]) % PARTITIONS, timestamp_ms=ts))

        for c in range(9):  # c0..c8 named at time 1000; c4 renamed at 5000; c8 deleted at 5000
            await send(customers, f"c{c}", f"name{c}", 1000)
        await send(customers, "c4", "renamed", 5000)
        await send(customers, "c8", None, 5000)
        for i in range(40):  # orders at 2000.. (before the changes) and 6000.. (after them)
            await send(orders, f"c{i % 9}", f"o{i}", (2000 if i < 20 else 6000) + i)
    finally:
        await producer_.stop()

    def topology(p: PartitionContext) -> Source[Any, None]:
        table = p.table(customers, event_time=True, idle_timeout=0.1)
        stream = p.source(orders).with_timestamps(lambda r: r.timestamp, idle_timeout=0.1)
        return stream.join(table, key=lambda r: r.key, how="left",
                           combine=lambda r, name: ProducerRecord(out, f"{r.value}:{name}", key=r.key))

    consumer, producer = _settings(bootstrap)
    app = KafkaApp(unique("ct-app"), consumer=consumer, producer=producer, topics=[customers, orders],
                   topology=topology, state_dir=tmp_path / "state", checkpoint_interval=0.05)
    control = app.run()
    try:  # orders wait in the join until the table's watermark passes them: wait for all 40 results
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(await read_topic(bootstrap, out)) < 40:
            assert loop.time() < deadline and not control.is_stopped, "not all orders joined"
            await asyncio.sleep(0.2)
    finally:
        control.stop()
        await control.wait_stopped()
    names = {f"c{c}": f"name{c}" for c in range(9)}
    later = {**names, "c4": "renamed", "c8": None}
    want = sorted(f"o{i}:{(names if i < 20 else later)[f'c{i % 9}']}" for i in range(40))
    assert sorted(r.value.decode() for r in await read_topic(bootstrap, out)) == want


async def test_global_table_restores_follows_and_serves_lookups_in_an_app(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    customers, orders, out = unique("gt-customers"), unique("gt-orders"), unique("gt-out")
    await kafka_broker.acreate_topic(customers, 2)
    await kafka_broker.acreate_topic(orders, PARTITIONS)
    await kafka_broker.acreate_topic(out, PARTITIONS)
    # c1 updated, c2 deleted by a tombstone, c3 plain; spread over both partitions of the table topic.
    await _produce(bootstrap, customers, [("c1", "Ann", 0), ("c2", "Bob", 1), ("c3", "Cy", 1), ("c1", "Ann B.", 0),
                                          ("c2", None, 1)])  # type: ignore[list-item]
    consumer, producer = _settings(bootstrap)
    table: GlobalTable[str, str] = GlobalTable(customers, consumer)
    async with table:
        assert table.to_dict() == {"c1": "Ann B.", "c3": "Cy"}
        await _produce(bootstrap, customers, [("c4", "Di", 0)])
        await table.caught_up()
        assert table.get("c4") == "Di" and table.get("c2") is None and len(table) == 3

    # In an app: restored before the first order is processed; the right side of a stream-table join
    # (inner: orders of deleted or unknown customers are dropped).
    lookups: GlobalTable[str, str] = GlobalTable(customers, consumer)

    def topology(p: PartitionContext) -> Flow[Any, Any, Any]:
        return Flow().join(lookups, key=lambda r: r.value,
                           combine=lambda r, name: ProducerRecord(out, f"{r.value}:{name}", key=r.key))

    await _produce(bootstrap, orders, [(f"o{i}", f"c{1 + i % 5}", i % PARTITIONS) for i in range(60)])
    app = KafkaApp(unique("gt-app"), consumer=consumer, producer=producer, topics=orders, topology=topology,
                   global_tables=[lookups], checkpoint_interval=0.05)
    await _run_until_drained(app, bootstrap, [orders])
    assert not lookups.running  # the app started it, and stopped it
    names = {"c1": "Ann B.", "c3": "Cy", "c4": "Di"}
    got = sorted((r.key.decode(), r.value.decode()) for r in await read_topic(bootstrap, out))
    assert got == sorted((f"o{i}", f"c{1 + i % 5}:{names[f'c{1 + i % 5}']}") for i in range(60)
                         if f"c{1 + i % 5}" in names)


async def test_a_missing_global_table_topic_fails_the_app_clearly(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    orders = unique("gt-orders")
    await kafka_broker.acreate_topic(orders, 1)
    consumer, producer = _settings(bootstrap)
    missing = unique("gt-missing")
    app = KafkaApp(unique("gt-app"), consumer=consumer, producer=producer, topics=orders, topology=lambda p: Flow(),
                   global_tables=[GlobalTable(missing, consumer)])
    control = app.run()
    with pytest.raises(KafkaStreamError, match=f"{missing!r} of GlobalTable does not exist"):
        await control.wait_stopped()


# -- orders x payments x customers, with crashes ----------------------------------------------

ORDERS = 6000
CUSTOMERS = 40
CRASH_PARTITIONS = 4
MINUTE = 60_000
BASE = 1_700_000_000_000


def _delay(i: int) -> int:
    """Payment ``i`` comes 0 to 15 minutes after order ``i`` (within the 10-minute window or not)."""
    return (i * 37 % 15) * MINUTE + i % 1000


def _events() -> list[tuple[str, str, str, int]]:
    """(topic tag, order id, value, record time) of every order and payment, in record-time order.
    Orders divisible by 7 are never paid; every tenth customer is not in the table."""
    events = []
    for i in range(ORDERS):
        ts = BASE + i * 1000
        order = {"id": f"o{i}", "customer": f"c{i % CUSTOMERS}", "amount": i % 97 + 1, "ts": ts}
        events.append(("orders", f"o{i}", json.dumps(order), ts))
        if i % 7:
            paid = {"order": f"o{i}", "paid": (i % 97 + 1) * (1 if i % 5 else 2), "ts": ts + _delay(i)}
            events.append(("payments", f"o{i}", json.dumps(paid), ts + _delay(i)))
    return sorted(events, key=lambda e: e[3])


def _model() -> dict[str, list[Any]]:
    """Order id -> the joined row: each order with its payment if that came within 10 minutes."""
    return {f"o{i}": [f"o{i}", f"name-{i % CUSTOMERS}" if i % CUSTOMERS % 10 else None, i % 97 + 1,
                      (i % 97 + 1) * (1 if i % 5 else 2)]
            for i in range(ORDERS) if i % 7 and _delay(i) <= 10 * MINUTE}


async def _produce_events(bootstrap: str, topics: dict[str, str], rate: float) -> None:
    """The events at ``rate`` per second, each order id to partition ``id % CRASH_PARTITIONS`` of both topics."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        futs = []
        for j, (tag, key, value, ts) in enumerate(_events()):
            futs.append(await producer.send(topics[tag], value.encode(), key=key.encode(),
                                            partition=int(key[1:]) % CRASH_PARTITIONS, timestamp_ms=ts))
            if j % 100 == 99:
                ahead = start + (j + 1) / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def test_join_with_table_is_exactly_once_through_sigkills_and_a_second_instance(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id = unique("join")
    orders, payments, customers, out = unique("orders"), unique("payments"), unique("customers"), unique("joined")
    for topic in (orders, payments, out):
        await kafka_broker.acreate_topic(topic, CRASH_PARTITIONS)
    await kafka_broker.acreate_topic(customers, 2)
    await _produce(bootstrap, customers, [(f"c{c}", f"name-{c}", c % 2) for c in range(CUSTOMERS) if c % 10])
    args = (bootstrap, app_id, orders, payments, customers, out, str(tmp_path / "state"))
    first = Job("join_app.py", *args, log_dir=tmp_path)
    second = Job("join_app.py", *args[:-1], str(tmp_path / "state2"), log_dir=tmp_path)
    producing = asyncio.ensure_future(_produce_events(bootstrap, {"orders": orders, "payments": payments}, rate=300))
    rng = random.Random()
    kills = 0
    try:

        def working(s: dict[str, Any]) -> bool:  # committing, or (all input written) up with its tasks
            return bool(s.get("commits", 0) >= 2 or (producing.done() and s.get("assigned")))

        await first.start()
        while kills < 5:
            await first.wait_for(working, timeout=120)
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            await first.kill()
            kills += 1
            if kills == 2:
                await second.start()  # joins: the group splits the tasks between the two
            if kills == 4:
                await second.wait_for(working, timeout=120)
                await second.stop()  # leaves: its tasks come back to the first
            await first.start()
        await producing
        await wait_drained(bootstrap, app_id, orders, CRASH_PARTITIONS, timeout=180)
        await wait_drained(bootstrap, app_id, payments, CRASH_PARTITIONS, timeout=180)
        await first.stop()
    finally:
        producing.cancel()
        for job in (first, second):
            if job.proc is not None and job.proc.returncode is None:
                await job.kill()
    rows = [json.loads(r.value) for r in await read_topic(bootstrap, out)]
    ids = Counter(row[0] for row in rows)
    duplicates = {k: n for k, n in ids.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} joined rows appear more than once, e.g. {sorted(duplicates)[:5]}"
    got, model = {row[0]: row for row in rows}, _model()
    missing, extra = sorted(model.keys() - got.keys()), sorted(got.keys() - model.keys())
    wrong = sorted(k for k in model.keys() & got.keys() if got[k] != model[k])
    assert not (missing or extra or wrong), (
        f"{len(missing)} missing, e.g. {missing[:5]} (per task {dict(Counter(int(k[1:]) % CRASH_PARTITIONS for k in missing))}"
        f", order ids {min((int(k[1:]) for k in missing), default=None)} to {max((int(k[1:]) for k in missing), default=None)}); "
        f"{len(extra)} not in the model, e.g. "
        f"{[got[k] for k in extra[:5]]}; {len(wrong)} wrong, e.g. {[(got[k], model[k]) for k in wrong[:5]]}")
    assert not await open_transactions(bootstrap, [out])
    assert kills >= 5


def test_enrich_orders_example_runs_and_checks_itself(kafka_broker: KafkaBroker) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, str(root / "examples" / "enrich_orders.py"), "--bootstrap", kafka_broker.bootstrap_servers,
         "--orders", "1500"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Check against plain Python: same results" in proc.stdout
