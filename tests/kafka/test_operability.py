"""What an operator sees of a KafkaApp: its metrics, its logs, how fast partitions move on a stop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaProducer

from streamlib import Flow
from streamlib.kafka import (
    AppControl,
    ConsumerSettings,
    KafkaApp,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
    TopicPartition,
)
from streamlib.kafka.testing import end_offsets, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._util import unique


def _topology(output: str) -> Any:
    def topology(p: PartitionContext) -> Flow[Any, Any, Any]:
        def step(rec: Any, state: Any) -> ProducerRecord[bytes, bytes]:
            count = state.get(0) + 1
            state.set(count)
            return ProducerRecord(output, json.dumps([rec.key.decode(), rec.value, count]).encode(), key=rec.key)

        return Flow().key_by(lambda r: r.key).stateful_map(step, store=p.store, name="counts")

    return topology


async def _produce(bootstrap: str, topic: str, values: range, partitions: int = 2) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, str(i).encode(), key=f"k{i % 10}".encode(), partition=(i % 10) % partitions)
                for i in values]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _until_committed(control: AppControl, ends: dict[TopicPartition, int], timeout: float = 60) -> None:
    """Wait until the app's committed offset of every partition in ``ends`` reached it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(control.metrics.committed.get(tp, -1) < end for tp, end in ends.items()):
        assert not control.is_stopped, "the app stopped"
        assert loop.time() < deadline, f"committed {control.metrics.committed}, end {ends}"
        await asyncio.sleep(0.05)


async def test_records_counts_processed_records_once_and_lag_reaches_zero_after_a_recovery(
    kafka_broker: KafkaBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("metrics"), unique("metrics-in"), unique("metrics-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    await _produce(bootstrap, src, range(0, 200))
    app = KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                   producer=ProducerSettings(bootstrap), topics=src, topology=_topology(dst),
                   checkpoint_interval=0.05)
    control = app.run()
    try:
        await _until_committed(control, await end_offsets(bootstrap, src))
        assert control.metrics.records == 200
        # Fence partition 0's producer: the records it reads next fail to commit, and are read
        # and processed again once the partition reopened from its committed offset.
        zombie = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{app_id}-{src}-0")
        await zombie.start()
        await zombie.stop()
        await _produce(bootstrap, src, range(200, 400))
        ends = await end_offsets(bootstrap, src)
        await _until_committed(control, ends)
        metrics = control.metrics
        assert metrics.recoveries >= 1
        assert metrics.records == 400  # each input record once, though some were fetched twice
        assert metrics.fetched > 400
        assert metrics.committed == ends
        while set(metrics.end_offsets) != set(ends):  # every partition answered a fetch since
            await asyncio.sleep(0.05)
        assert metrics.lag == {tp: 0 for tp in ends}
    finally:
        control.stop()
        await control.wait_stopped()
    rows = [json.loads(r.value) for r in await read_topic(bootstrap, dst)]
    assert sorted(int(v) for _k, v, _c in rows) == list(range(400))


async def test_lag_counts_what_is_read_but_not_committed_yet(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("lag"), unique("lag-in"), unique("lag-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    await _produce(bootstrap, src, range(0, 100))
    p0, p1 = TopicPartition(src, 0), TopicPartition(src, 1)
    # An interval this long means: commit only when stopped.
    app = KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                   producer=ProducerSettings(bootstrap), topics=src, topology=_topology(dst),
                   checkpoint_interval=3600)
    control = app.run()
    try:
        while len(await read_topic(bootstrap, dst, isolation_level="read_uncommitted")) < 100:
            assert not control.is_stopped
            await asyncio.sleep(0.05)
        while set(control.metrics.end_offsets) != {p0, p1}:
            await asyncio.sleep(0.05)
        # Every record went through the topology, none is committed: all of it is lag.
        assert control.metrics.fetched == 100
        assert control.metrics.records == 0
        assert control.metrics.committed == {p0: 0, p1: 0}
        assert control.metrics.lag == {p0: 50, p1: 50}
    finally:
        control.stop()  # commits what was read
        await control.wait_stopped()
    assert control.metrics.records == 100
    assert control.metrics.committed == {p0: 50, p1: 50}
    assert control.metrics.lag == {p0: 0, p1: 0}
