"""At-least-once: a committable-source pipeline killed with SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from streamlib.kafka.testing import end_offsets, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import produce_numbered
from ._procs import Job
from ._util import committed_offsets, unique

N = 100_000
KEYS = 100
PARTITIONS = 4


@pytest.mark.time_limit(180)
async def test_committable_pipeline_loses_nothing_when_killed(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    group, src, dst = unique("alo"), unique("alo-in"), unique("alo-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    job = Job("alo_pipeline.py", bootstrap, group, src, dst, "--instance", "alo-1", log_dir=tmp_path)
    producing = asyncio.ensure_future(produce_numbered(bootstrap, src, N, keys=KEYS, partitions=PARTITIONS, rate=20_000))
    kills = 0
    try:
        while kills < 4 or not producing.done():
            await job.start()
            await job.wait_for(lambda s: s.get("records", 0) > 0, timeout=60)
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            await job.kill()
            kills += 1
        await producing
        await job.start()
        await job.wait_for(lambda s: "records" in s)
        ends = await end_offsets(bootstrap, src)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            committed = await committed_offsets(bootstrap, group, src, PARTITIONS)
            if all((committed[tp.partition] or 0) >= off for tp, off in ends.items()):
                break
            assert loop.time() < deadline, f"input not consumed: committed {committed}, end {ends}"
            await asyncio.sleep(0.3)
        assert await job.stop() == 0, job.stderr_tail()
    finally:
        if job.proc is not None and job.proc.returncode is None:
            await job.kill()
        producing.cancel()
        await asyncio.wait([producing])
    out = await read_topic(bootstrap, dst, isolation_level="read_uncommitted")
    numbers = Counter(json.loads(r.value)["n"] for r in out)
    missing = [n for n in range(N) if n not in numbers]
    assert not missing, f"{len(missing)} records lost (seed {seed}), e.g. {missing[:5]}"
    duplicates = sum(c - 1 for c in numbers.values())
    print(f"seed {seed}: {kills} kills, {duplicates} duplicates out of {len(out)} records")
    assert set(numbers) == set(range(N))
    # Order within each input partition survives: the first copies of a partition's records are in order.
    first_seen: dict[int, list[int]] = {}
    seen: set[int] = set()
    for r in out:
        n = json.loads(r.value)["n"]
        if n not in seen:
            seen.add(n)
            first_seen.setdefault(r.partition, []).append(n)
    assert all(xs == sorted(xs) for xs in first_seen.values())


async def test_kafka_app_at_least_once_commits_through_the_consumer(kafka_broker: KafkaBroker) -> None:
    from typing import Any

    from streamlib import Flow
    from streamlib.kafka import ConsumerSettings, KafkaApp, ProducerRecord, ProducerSettings, StrSerde

    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("alo-app"), unique("alo-app-in"), unique("alo-app-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    await produce_numbered(bootstrap, src, 2000, keys=10, partitions=2)

    def topology(p: Any) -> Flow[Any, Any, Any]:
        def step(rec: Any, state: Any) -> ProducerRecord[bytes, bytes]:
            count = state.get(0) + 1
            state.set(count)
            return ProducerRecord(dst, json.dumps([rec.key.decode(), count]).encode())

        return Flow().key_by(lambda r: r.key).stateful_map(step, store=p.store, name="counts")

    app = KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                   producer=ProducerSettings(bootstrap), topics=src, topology=topology,
                   processing_guarantee="at_least_once", checkpoint_interval=0.05)
    control = app.run()
    try:
        ends = await end_offsets(bootstrap, src)
        while True:
            committed = await committed_offsets(bootstrap, app_id, src, 2)
            if all((committed[tp.partition] or 0) >= off for tp, off in ends.items()):
                break
            assert not control.is_stopped
            await asyncio.sleep(0.1)
    finally:
        control.stop()
        await control.wait_stopped()
    rows = [json.loads(r.value) for r in await read_topic(bootstrap, dst, isolation_level="read_uncommitted")]
    per_key: dict[str, list[int]] = {}
    for key, count in rows:
        per_key.setdefault(key, []).append(count)
    assert {k: sorted(v) for k, v in per_key.items()} == {f"k{j}": list(range(1, 201)) for j in range(10)}
    assert control.metrics.changelog_records > 0
