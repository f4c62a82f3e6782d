"""Scale-out and failover of a stateful exactly-once app: partitions move with their state."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from streamlib.kafka.testing import open_transactions, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import expected_outputs, parse_outputs, produce_numbered
from ._procs import Job
from ._util import unique, wait_drained

KEYS = 40
PARTITIONS = 4
PART = 20_000


async def _produce_range(bootstrap: str, topic: str, start: int, n: int) -> None:
    # produce_numbered numbers from 0; shift by producing the full prefix model-consistently.
    from aiokafka import AIOKafkaProducer

    from ._model import key_of, partition_of, value_of

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, value_of(i), key=key_of(i, KEYS), partition=partition_of(i, KEYS, PARTITIONS))
                for i in range(start, start + n)]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


@pytest.mark.time_limit(180)
async def test_partitions_and_their_state_move_between_instances(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("scale"), unique("scale-in"), unique("scale-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    a = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "a"), log_dir=tmp_path)
    b = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "b"), log_dir=tmp_path)
    try:
        await produce_numbered(bootstrap, src, PART, keys=KEYS, partitions=PARTITIONS)
        await a.start()
        await a.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS)
        await wait_drained(bootstrap, app_id, src, PARTITIONS)
        # Scale out: B joins and takes half of the partitions, with their state.
        await b.start()
        await b.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS // 2, timeout=60)
        await a.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS // 2, timeout=60)
        await _produce_range(bootstrap, src, PART, PART)
        await wait_drained(bootstrap, app_id, src, PARTITIONS)
        moved = b.status
        assert moved["full_restores"] == PARTITIONS // 2 and moved["restored_records"] > 0
        # B dies mid-run: once the group notices, A takes its partitions back and restores their state.
        before = dict(a.status)
        producing = asyncio.ensure_future(_produce_range(bootstrap, src, 2 * PART, PART))
        await b.wait_for(lambda s: s["records"] > moved["records"], timeout=30)
        await b.kill()
        await producing
        await a.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS, timeout=60)
        await wait_drained(bootstrap, app_id, src, PARTITIONS)
        # A still has its own stores of B's two partitions from before the scale-out, behind what
        # B committed since: it replays the changelogs from where those stores stopped.
        assert a.status["partial_restores"] - before["partial_restores"] >= PARTITIONS // 2
        assert a.status["full_restores"] == before["full_restores"]
        assert a.status["restored_records"] > before["restored_records"]
        assert await a.stop() == 0, a.stderr_tail()
    finally:
        for job in (a, b):
            if job.proc is not None and job.proc.returncode is None:
                await job.kill()
    rows = parse_outputs(await read_topic(bootstrap, dst))
    n = 3 * PART
    model = expected_outputs(n, KEYS)
    numbers = Counter(r[1] for r in rows)
    assert len(rows) == n and set(numbers) == set(range(n)), f"{len(rows)} outputs for {n} inputs"
    assert all(model[num] == (k, c, s) for k, num, c, s in rows)
    assert await open_transactions(bootstrap, [dst, f"{app_id}-counts-changelog"]) == {}
