"""Small helpers shared by the Kafka tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streamlib import Flow
from streamlib.kafka import PartitionContext, ProducerRecord
from streamlib.kafka.testing import end_offsets
from streamlib._dsl.module import Module
from streamlib._runtime.signals import Signal
from streamlib.stage import Stage, StageLogic


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def committed_offsets(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def wait_drained(bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 90) -> None:
    """Wait until ``group``'s committed offsets reach the end of every partition of ``topic``."""
    ends = await end_offsets(bootstrap, topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        committed = await committed_offsets(bootstrap, group, topic, partitions)
        if all((committed[tp.partition] or 0) >= off for tp, off in ends.items()):
            return
        assert loop.time() < deadline, f"{group}: input not consumed: committed {committed}, end {ends}"
        await asyncio.sleep(0.2)


def counting_topology(output: str) -> Any:
    """A KafkaApp topology counting records per key; emits ``[key, value, count]`` as JSON to ``output``."""

    def topology(p: PartitionContext) -> Flow[Any, Any, Any]:
        def step(rec: Any, state: Any) -> ProducerRecord[bytes, bytes]:
            count = state.get(0) + 1
            state.set(count)
            return ProducerRecord(output, json.dumps([rec.key.decode(), rec.value, count]).encode(), key=rec.key)

        return Flow().key_by(lambda r: r.key).stateful_map(step, store=p.store, name="counts")

    return topology


async def produce_keyed(bootstrap: str, topic: str, values: range, partitions: int = 2) -> None:
    """Produce ``str(i)`` for each ``i`` with key ``k{i % 10}``, each key always to the same partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, str(i).encode(), key=f"k{i % 10}".encode(), partition=(i % 10) % partitions)
                for i in values]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


class _SignalTap(Stage):
    """Passes chunks through and records every chunk and signal it sees, in order."""

    name = "signal_tap"

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def materialize(self, ctx: Any) -> tuple[StageLogic, None]:
        seen = self.seen

        class _Logic(StageLogic):
            def on_chunk(self, chunk: list[Any]) -> list[Any]:
                seen.append(list(chunk))
                return chunk

            def on_signal(self, signal: Signal) -> None:
                seen.append(signal)
                return None

        return _Logic(), None


def signal_tap(seen: list[Any]) -> Flow[Any, Any, None]:
    """A flow that appends each chunk (as a list) and each signal to ``seen``."""
    return Flow(Module.of(_SignalTap(seen)))
