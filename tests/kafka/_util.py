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
from streamlib.kafka.testing import end_offsets, read_topic
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


class TransactionWatch:
    """Tells whether topics hold writes of a transaction that is still open (last stable offset < high watermark).

    Two consumers stay connected (one ``read_uncommitted``, one ``read_committed``), so a look costs two
    offset requests and can be repeated every few milliseconds.
    """

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.topics = topics
        self._hw = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._lso = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                     isolation_level="read_committed")
        self._parts: list[TopicPartition] = []

    async def __aenter__(self) -> TransactionWatch:
        await self._hw.start()
        await self._lso.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._hw.stop()
        await self._lso.stop()

    async def _partitions(self) -> list[TopicPartition]:
        # A changelog topic appears only once the job has started: look again until every topic is known.
        if {tp.topic for tp in self._parts} != set(self.topics):
            await self._hw._client.force_metadata_update()
            self._parts = [TopicPartition(topic, p) for topic in self.topics
                           for p in sorted(self._hw.partitions_for_topic(topic) or ())]
        return self._parts

    async def open(self) -> bool:
        parts = await self._partitions()
        if not parts:
            return False
        hw = await self._hw.end_offsets(parts)
        lso = await self._lso.end_offsets(parts)
        return any(lso[tp] < hw[tp] for tp in parts)

    async def kill_mid_transaction(self, job: Any, timeout: float = 5.0) -> bool:
        """SIGKILL ``job`` as soon as it has written into an open transaction (or after ``timeout``).

        True when the transaction was still open after the kill, so it will be aborted and its writes
        must never reach a ``read_committed`` reader.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not await self.open():
            await asyncio.sleep(0.005)
        await job.kill()
        return await self.open()


async def kill_and_restart(
    job: Any, watch: TransactionWatch, producing: asyncio.Future[Any], rng: Any, *,
    min_kills: int, pause: tuple[float, float] = (0.05, 0.6), max_kills: int = 15,
) -> int:
    """Start ``job`` and SIGKILL it, again and again, while ``producing`` runs and until ``min_kills`` kills.

    Each run first commits once, then works for a random pause. Until one kill has interrupted an open
    transaction with writes (seen by ``watch``), kills wait for one, so every run of the test exercises an
    aborted transaction. Returns the number of kills; the job is stopped when it returns.
    """
    kills = interrupted = 0
    while kills < min_kills or not producing.done() or (not interrupted and kills < max_kills):
        await job.start()
        await job.wait_for(lambda s: s.get("commits", 0) >= 1, timeout=60)
        await asyncio.sleep(rng.uniform(*pause))
        if interrupted:
            await job.kill()
        else:
            interrupted += await watch.kill_mid_transaction(job)
        kills += 1
    assert interrupted, f"no kill landed inside an open transaction in {kills} kills"
    return kills


async def aborted_writes(bootstrap: str, topics: list[str]) -> int:
    """How many records of ``topics`` a ``read_committed`` reader never sees (writes of aborted transactions)."""
    total = 0
    for topic in topics:
        total += len(await read_topic(bootstrap, topic, isolation_level="read_uncommitted"))
        total -= len(await read_topic(bootstrap, topic, isolation_level="read_committed"))
    return total
