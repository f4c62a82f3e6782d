"""Helpers to produce to and read from topics in tests (with a real broker).

* :func:`produce` sends many records fast (batched, one partition each or by key).
* :func:`read_topic` reads a whole topic up to its current end: with
  ``read_committed`` that end is the last stable offset, so an open transaction
  hides what follows its first record.
* :func:`open_transactions` lists partitions whose last stable offset is behind
  their high watermark, that is, partitions with a transaction still open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

__all__ = ["end_offsets", "open_transactions", "produce", "read_topic"]


async def produce(
    bootstrap_servers: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, int]],
    *,
    linger_ms: int = 5,
) -> int:
    """Send ``(key, value)`` or ``(key, value, partition)`` tuples; returns how many were sent.

    Waits until every record is acknowledged.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=linger_ms,
                                max_batch_size=256 * 1024)
    await producer.start()
    n = 0
    try:
        futures = []
        for rec in records:
            key, value = rec[0], rec[1]
            partition = rec[2] if len(rec) > 2 else None  # type: ignore[misc]
            futures.append(await producer.send(topic, value, key=key, partition=partition))
            n += 1
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic!r} has no partitions (does it exist?)")
        await consumer._client.force_metadata_update()


async def end_offsets(
    bootstrap_servers: str, topic: str, isolation_level: str = "read_uncommitted"
) -> dict[TopicPartition, int]:
    """Per partition of ``topic``: the high watermark, or with ``read_committed`` the last stable offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, isolation_level=isolation_level,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic, 10.0)
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def open_transactions(bootstrap_servers: str, topics: Sequence[str]) -> dict[TopicPartition, tuple[int, int]]:
    """Partitions whose last stable offset lags their high watermark: ``{tp: (lso, hw)}``."""
    out: dict[TopicPartition, tuple[int, int]] = {}
    for topic in topics:
        hw = await end_offsets(bootstrap_servers, topic, "read_uncommitted")
        lso = await end_offsets(bootstrap_servers, topic, "read_committed")
        for tp, high in hw.items():
            if lso.get(tp, high) != high:
                out[tp] = (lso[tp], high)
    return out


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    isolation_level: str = "read_committed",
    timeout: float = 60.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning to its current end (partition by partition order kept)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, isolation_level=isolation_level,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic, 10.0)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        remaining = {tp for tp in parts if ends[tp] > 0}
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
        while remaining:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic!r} timed out; still behind on {sorted(remaining)}")
            batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=10_000)
            for tp, recs in batches.items():
                out.extend(recs)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
