"""Input generation and the plain-Python model of the counter job (``_jobs/counter_app.py``)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaProducer

PAD = "x" * 80  # with the JSON around it, a value is about 100 bytes


def key_of(i: int, keys: int) -> bytes:
    return f"k{i % keys}".encode()


def partition_of(i: int, keys: int, partitions: int) -> int:
    return (i % keys) % partitions


def value_of(i: int) -> bytes:
    return json.dumps({"n": i, "pad": PAD}).encode()


async def produce_numbered(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    keys: int,
    partitions: int,
    rate: float | None = None,
    bad_every: int = 0,
) -> int:
    """Produce records 0..n-1 (``rate`` records/s when given); every ``bad_every``-th
    position also gets a malformed record. Returns the number of bad records."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    bad = 0
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = []
        for i in range(n):
            p = partition_of(i, keys, partitions)
            futures.append(await producer.send(topic, value_of(i), key=key_of(i, keys), partition=p))
            if bad_every and i % bad_every == bad_every // 2:
                futures.append(await producer.send(topic, b'{"n": "not a number"' + str(i).encode(),
                                                   key=b"bad", partition=p))
                bad += 1
            if rate is not None and i % 500 == 499:
                ahead = start + (i + 1) / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return bad


def expected_outputs(n: int, keys: int) -> dict[int, tuple[str, int, int]]:
    """For each input number: (key, running count, running sum) as the counter job emits it."""
    count: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    out = {}
    for i in range(n):
        k = key_of(i, keys).decode()
        count[k] += 1
        total[k] += i
        out[i] = (k, count[k], total[k])
    return out


def parse_outputs(records: list[Any]) -> list[tuple[str, int, int, int]]:
    return [tuple(json.loads(r.value)) for r in records]  # type: ignore[misc]
