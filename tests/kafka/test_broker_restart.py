"""A broker restart in the middle of a run: pipelines resume without losing anything."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from streamlib import Flow, Keep
from streamlib.kafka import (
    CommitterSettings,
    ConsumerSettings,
    KafkaApp,
    KafkaSink,
    KafkaSource,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
)
from streamlib.kafka.testing import read_topic
from streamlib.testing.kafka import KafkaBroker

from ._util import unique, wait_drained

N = 30_000
PARTITIONS = 2


@pytest.fixture(scope="module")
def own_broker() -> Iterator[KafkaBroker]:
    """A broker of this module's own: restarting it must not disturb the other tests."""
    with KafkaBroker() as broker:
        yield broker


async def _produce_steadily(bootstrap: str, topic: str, n: int, rate: float) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                request_timeout_ms=60_000, retry_backoff_ms=200)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        futs = []
        for i in range(n):
            futs.append(await producer.send(topic, str(i).encode(), key=f"k{i % 10}".encode(),
                                            partition=(i % 10) % PARTITIONS))
            if i % 200 == 199:
                ahead = start + (i + 1) / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def _topology(output: str) -> Any:
    def topology(p: Any) -> Flow[Any, Any, Any]:
        def step(rec: Any, state: Any) -> ProducerRecord[bytes, bytes]:
            count = state.get(0) + 1
            state.set(count)
            return ProducerRecord(output, json.dumps([rec.key.decode(), int(rec.value), count]).encode())

        return Flow().key_by(lambda r: r.key).stateful_map(step, store=p.store, name="counts")

    return topology


@pytest.mark.time_limit(180)
async def test_pipelines_resume_after_the_broker_restarts(own_broker: KafkaBroker) -> None:
    bootstrap = own_broker.bootstrap_servers
    src, alo_out, eos_out = unique("rs-in"), unique("rs-alo"), unique("rs-eos")
    group, app_id = unique("rs-group"), unique("rs-app")
    for topic in (src, alo_out, eos_out):
        await own_broker.acreate_topic(topic, PARTITIONS)
    props = {"session_timeout_ms": 10_000, "request_timeout_ms": 30_000}
    consumer = ConsumerSettings(bootstrap, properties=props)
    producer = ProducerSettings(bootstrap, properties={"request_timeout_ms": 30_000})

    def copy(rec: Any) -> ProducerRecord[bytes, bytes]:
        return ProducerRecord(alo_out, rec.value, partition=rec.partition, passthrough=rec.committable_offset)

    control, done = (
        KafkaSource.committable(consumer.with_group_id(group), src).map(copy)
        .to_mat(KafkaSink.committable(producer, CommitterSettings(max_interval=0.1)), Keep.both).run()
    )
    app = KafkaApp(app_id, consumer=consumer.with_serdes(value=StrSerde()), producer=producer, topics=src,
                   topology=_topology(eos_out)).run()
    producing = asyncio.ensure_future(_produce_steadily(bootstrap, src, N, rate=3_000))
    try:
        while control.metrics.records < N // 4 or app.metrics.commits < 4:
            assert not control.is_stopped and not app.is_stopped
            await asyncio.sleep(0.05)
        await asyncio.to_thread(own_broker.restart)
        await producing
        await wait_drained(bootstrap, group, src, PARTITIONS, timeout=90)
        await wait_drained(bootstrap, app_id, src, PARTITIONS, timeout=90)
    finally:
        producing.cancel()
        control.stop()
        app.stop()
        await asyncio.wait([producing])
        await done
        await control.wait_stopped()
        await app.wait_stopped()
    alo = Counter(int(r.value) for r in await read_topic(bootstrap, alo_out, isolation_level="read_uncommitted"))
    assert set(alo) == set(range(N))  # nothing lost (duplicates allowed)
    rows = [json.loads(r.value) for r in await read_topic(bootstrap, eos_out)]
    assert Counter(n for _k, n, _c in rows) == Counter(range(N))  # exactly once
    per_key: dict[str, list[int]] = {}
    for key, _n, count in rows:
        per_key.setdefault(key, []).append(count)
    assert all(sorted(c) == list(range(1, N // 10 + 1)) for c in per_key.values())
