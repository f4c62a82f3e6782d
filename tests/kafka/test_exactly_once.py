"""Exactly-once with state against the real broker.

The crash test follows Kafka's own transactions system test: a stateful
consume-transform-produce job is killed with SIGKILL at random moments while
input keeps arriving, restarted each time, and afterwards a read_committed
reader must find every expected output exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streamlib import Flow
from streamlib.kafka import (
    ConsumerSettings,
    KafkaApp,
    PartitionContext,
    ProducerSettings,
    StrSerde,
)
from streamlib.kafka.testing import open_transactions, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import expected_outputs, parse_outputs, produce_numbered
from ._procs import Job
from ._util import TransactionWatch, kill_and_restart, committed_offsets, counting_topology, produce_keyed, unique

N = 100_000
KEYS = 100
PARTITIONS = 4


async def _wait_consumed(bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        committed = await committed_offsets(bootstrap, group, topic, PARTITIONS)
        if all((committed[p] or 0) >= ends[p] for p in range(PARTITIONS)):
            return
        assert loop.time() < deadline, f"not all input consumed: committed {committed}, end {ends}"
        await asyncio.sleep(0.3)


def _check_exactly_once(rows: list[tuple[str, int, int, int]]) -> None:
    model = expected_outputs(N, KEYS)
    numbers = Counter(n for _k, n, _c, _s in rows)
    duplicates = {n: c for n, c in numbers.items() if c > 1}
    missing = [n for n in range(N) if n not in numbers]
    assert not duplicates, f"{len(duplicates)} outputs appear more than once, e.g. {sorted(duplicates)[:5]}"
    assert not missing, f"{len(missing)} outputs missing, e.g. {missing[:5]}"
    wrong = [(k, n, c, s) for k, n, c, s in rows if model[n] != (k, c, s)]
    assert not wrong, f"{len(wrong)} outputs disagree with the model, e.g. {wrong[:3]} vs {[model[w[1]] for w in wrong[:3]]}"
    final: dict[str, tuple[int, int]] = {}
    for k, _n, c, s in rows:
        final[k] = max(final.get(k, (0, 0)), (c, s))
    assert final == {k: (c, s) for k, c, s in (model[n] for n in range(N - KEYS, N))}


async def test_exactly_once_survives_repeated_sigkill(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("eos"), unique("eos-in"), unique("eos-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    job = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "state"), "--instance", "eos-1",
              log_dir=tmp_path)
    # Input arrives while the job is being killed and restarted.
    producing = asyncio.ensure_future(produce_numbered(bootstrap, src, N, keys=KEYS, partitions=PARTITIONS, rate=12_000))
    try:
        async with TransactionWatch(bootstrap, [dst, f"{app_id}-counts-changelog"]) as watch:
            kills = await kill_and_restart(job, watch, producing, rng, min_kills=6, pause=(0.05, 0.8))
        await producing
        await job.start()
        await job.wait_for(lambda s: "records" in s)  # running, stoppable by SIGTERM
        ends = {tp.partition: off for tp, off in (await _end_offsets(bootstrap, src)).items()}
        await _wait_consumed(bootstrap, app_id, src, ends, timeout=120)
        assert await job.stop() == 0, job.stderr_tail()
    finally:
        if job.proc is not None and job.proc.returncode is None:
            await job.kill()
        producing.cancel()
        await asyncio.wait([producing])

    committed = parse_outputs(await read_topic(bootstrap, dst, isolation_level="read_committed"))
    _check_exactly_once(committed)
    everything = await read_topic(bootstrap, dst, isolation_level="read_uncommitted")
    assert len(everything) > len(committed), f"no aborted writes after {kills} kills (seed {seed})"
    changelog = f"{app_id}-counts-changelog"
    assert await open_transactions(bootstrap, [dst, changelog]) == {}
    restores = [(line.get("full_restores"), line.get("restored_records")) for line in job.lines if "records" in line]
    print(f"seed {seed}: {kills} kills, {len(everything) - len(committed)} aborted output records, "
          f"restores (full, records) seen: {sorted(set(restores))[-5:]}")
    assert kills >= 5


async def _end_offsets(bootstrap: str, topic: str) -> Any:
    from streamlib.kafka.testing import end_offsets

    return await end_offsets(bootstrap, topic)


# -- in-process checks of the transaction boundaries and the restore paths -------------------


async def _topic_layout(bootstrap: str, topic: str) -> tuple[int, str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    (resource,) = response.resources
    configs = {entry[0]: entry[1] for entry in resource[4]}
    return len(meta["partitions"]), configs["cleanup.policy"]


def _app(bootstrap: str, app_id: str, src: str, dst: str, state_dir: Path | None, interval: float = 0.05) -> KafkaApp:
    return KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                    producer=ProducerSettings(bootstrap), topics=src, topology=counting_topology(dst),
                    checkpoint_interval=interval, state_dir=state_dir)


async def test_outputs_stay_invisible_until_their_transaction_commits(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("txn"), unique("txn-in"), unique("txn-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    await produce_keyed(bootstrap, src, range(200))
    control = _app(bootstrap, app_id, src, dst, None, interval=3600).run()
    try:
        while len(await read_topic(bootstrap, dst, isolation_level="read_uncommitted")) < 200:
            await asyncio.sleep(0.05)
        # Processed and produced, but the checkpoint interval has not passed: nothing committed.
        assert await read_topic(bootstrap, dst) == []
        assert set(await open_transactions(bootstrap, [dst])) != set()
    finally:
        control.stop()
        await control.wait_stopped()
    # Stopping commits what was read, in one transaction per partition.
    assert len(await read_topic(bootstrap, dst)) == 200
    assert control.metrics.commits == 2
    assert await open_transactions(bootstrap, [dst]) == {}


async def test_restart_reuses_the_local_store_and_a_lost_store_is_rebuilt(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("restore"), unique("restore-in"), unique("restore-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    state = tmp_path / "state"

    async def run_until(total: int) -> Any:
        control = _app(bootstrap, app_id, src, dst, state).run()
        try:
            while len(await read_topic(bootstrap, dst)) < total:
                assert not control.is_stopped
                await asyncio.sleep(0.05)
        finally:
            control.stop()
            await control.wait_stopped()
        return control.metrics

    await produce_keyed(bootstrap, src, range(0, 300))
    first = await run_until(300)
    assert first.full_restores == 2 and first.restored_records == 0  # nothing to restore yet
    # The store's changelog: compacted, one partition per input partition.
    partitions, policy = await _topic_layout(bootstrap, f"{app_id}-counts-changelog")
    assert (partitions, policy) == (2, "compact")
    await produce_keyed(bootstrap, src, range(300, 600))
    second = await run_until(600)
    assert second.full_restores == 0  # the local RocksDB stores were reused
    assert second.restored_records <= 10  # at most the last checkpoint's own changelog records
    import shutil

    shutil.rmtree(state)
    await produce_keyed(bootstrap, src, range(600, 900))
    changelog = await read_topic(bootstrap, f"{app_id}-counts-changelog")
    third = await run_until(900)
    # Rebuilt from the changelog: every committed state write of the 10 keys (until compaction runs).
    assert third.full_restores == 2 and third.restored_records == len(changelog) >= 10
    rows = [json.loads(r.value) for r in await read_topic(bootstrap, dst)]
    counts: dict[str, list[int]] = {}
    for key, _value, count in rows:
        counts.setdefault(key, []).append(count)
    assert all(sorted(c) == list(range(1, 91)) for c in counts.values()) and len(counts) == 10


async def test_a_fenced_producer_is_recreated_and_the_partition_rewound(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("fence"), unique("fence-in"), unique("fence-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    await produce_keyed(bootstrap, src, range(0, 200))
    control = _app(bootstrap, app_id, src, dst, None).run()
    try:
        while len(await read_topic(bootstrap, dst)) < 200:
            await asyncio.sleep(0.05)
        # A zombie with the same transactional id takes over partition 0's producer epoch.
        zombie = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{app_id}-{src}-0")
        await zombie.start()
        await zombie.stop()
        await produce_keyed(bootstrap, src, range(200, 400))
        while len(await read_topic(bootstrap, dst)) < 400:
            assert not control.is_stopped
            await asyncio.sleep(0.05)
    finally:
        control.stop()
        await control.wait_stopped()
    assert control.metrics.recoveries >= 1
    rows = [json.loads(r.value) for r in await read_topic(bootstrap, dst)]
    assert sorted(int(v) for _k, v, _c in rows) == list(range(400))
    per_key: dict[str, list[int]] = {}
    for key, _v, count in rows:
        per_key.setdefault(key, []).append(count)
    assert all(sorted(c) == list(range(1, 41)) for c in per_key.values())


async def test_an_async_stage_in_the_topology_commits_what_it_processed(kafka_broker: KafkaBroker) -> None:
    # Barriers travel through map_async and a buffer like any signal, so checkpoints commit.
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("async"), unique("async-in"), unique("async-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    await produce_keyed(bootstrap, src, range(400))

    async def enrich(rec: Any) -> Any:
        await asyncio.sleep(0)
        return rec

    counting = counting_topology(dst)

    def topology(p: PartitionContext) -> Flow[Any, Any, Any]:
        return Flow().map_async(4, enrich).buffer(16).via(counting(p))

    app = KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                   producer=ProducerSettings(bootstrap), topics=src, topology=topology, checkpoint_interval=0.05)
    control = app.run()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(await read_topic(bootstrap, dst)) < 400:
            assert not control.is_stopped
            assert loop.time() < deadline, f"committed output stalled at {len(await read_topic(bootstrap, dst))}"
            await asyncio.sleep(0.1)
        assert control.metrics.records == 400
    finally:
        control.stop()
        await control.wait_stopped()
    rows = [json.loads(r.value) for r in await read_topic(bootstrap, dst)]
    counts: dict[str, list[int]] = {}
    for key, _value, count in rows:
        counts.setdefault(key, []).append(count)
    assert {k: sorted(c) for k, c in counts.items()} == {f"k{j}": list(range(1, 41)) for j in range(10)}
    assert await open_transactions(bootstrap, [dst]) == {}
