"""Standby replicas: a task that fails over to an instance keeping a warm copy of its store
restores only the tail of its changelog; without standbys, it restores all of it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from streamlib.kafka import ConsumerSettings, KafkaApp, ProducerSettings
from streamlib.kafka._assign import TaskAssignor
from streamlib.kafka.testing import open_transactions, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import expected_outputs, parse_outputs, produce_numbered
from ._procs import Job
from ._util import counting_topology, unique, wait_drained

PARTITIONS = 2
KEYS = 20_000  # 10 000 rows of state per task
N = 60_000


@pytest.mark.time_limit(200)
@pytest.mark.parametrize("standbys", [1, 0])
async def test_failover_restores_only_the_tail_with_a_standby(
    kafka_broker: KafkaBroker, tmp_path: Path, standbys: int
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("standby"), unique("standby-in"), unique("standby-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    args = ("--standbys", str(standbys))
    a = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "a"), *args, log_dir=tmp_path)
    b = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "b"), *args, log_dir=tmp_path)
    producing: asyncio.Future[Any] | None = None
    try:
        await a.start()
        await a.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS)
        await b.start()
        for job in (a, b):  # one task each; with standbys, each keeps the other's task warm
            await job.wait_for(lambda s: len(s.get("assigned", [])) == 1 and (s["standby_tasks"] or 0) == standbys,
                               timeout=60)
        (lost,) = a.status["assigned"]
        rows = KEYS // PARTITIONS  # the keys of task `lost`: its rows of state once every key was seen
        producing = asyncio.ensure_future(produce_numbered(bootstrap, src, N, keys=KEYS, partitions=PARTITIONS,
                                                           rate=5_000))
        # A has processed well over one round of keys (every row of its state exists) when it dies.
        await a.wait_for(lambda s: s["records"] >= 3 * N // 4 // PARTITIONS, timeout=90)
        if standbys:
            await b.wait_for(lambda s: s["standby_records"] >= rows, timeout=60)
        before = dict(b.status)
        await a.kill()
        await b.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS, timeout=60)
        await producing
        await wait_drained(bootstrap, app_id, src, PARTITIONS, timeout=120)
        after = dict(b.status)
        assert await b.stop() == 0, b.stderr_tail()
    finally:
        if producing is not None:
            producing.cancel()
            await asyncio.wait([producing])
        for job in (a, b):
            if job.proc is not None and job.proc.returncode is None:
                await job.kill()

    restored = after["restored_records"] - before["restored_records"]
    print(f"standbys={standbys}: task {lost} ({rows} rows) failed over; records restored: {restored}")
    if standbys:
        # The standby's store is B's local checkpoint of the task: the restore replays only what the
        # standby had not applied yet, far less than the task's state.
        assert after["full_restores"] == before["full_restores"], (before, after)
        assert restored * 10 <= rows, f"restored {restored} records for {rows} rows of state: {before} -> {after}"
    else:
        # No copy here: the task is rebuilt from the whole changelog (at least one record per row).
        assert after["full_restores"] == before["full_restores"] + 1, (before, after)
        assert restored >= rows, (before, after)
        assert after["standby_tasks"] is None and after["standby_records"] is None  # no standby machinery runs

    rows_out = parse_outputs(await read_topic(bootstrap, dst, isolation_level="read_committed"))
    model = expected_outputs(N, KEYS)
    numbers = Counter(n for _k, n, _c, _s in rows_out)
    assert not [n for n, c in numbers.items() if c > 1], "outputs appear more than once"
    assert len(numbers) == N, f"{N - len(numbers)} outputs missing"
    wrong = [(k, n, c, s) for k, n, c, s in rows_out if model[n] != (k, c, s)]
    assert not wrong, f"{len(wrong)} outputs disagree with the model, e.g. {wrong[:3]}"
    assert await open_transactions(bootstrap, [dst, f"{app_id}-counts-changelog"]) == {}


# -- the assignment, without a broker ------------------------------------------------------


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3, 4}


def _members(standbys: dict[str, int]) -> dict[str, ConsumerProtocolMemberMetadata]:
    return {m: TaskAssignor(k).metadata(["in"]) for m, k in standbys.items()}


def _dealt(standbys: dict[str, int]) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    active: dict[str, set[int]] = {}
    standby: dict[str, set[int]] = {}
    for member, assignment in TaskAssignor.assign(_Cluster(), _members(standbys)).items():
        active[member] = {p for _t, ps in assignment.assignment for p in ps}
        got: list[set[int]] = []
        TaskAssignor(standbys[member], got.append).on_assignment(assignment)
        standby[member] = got[0]
    return active, standby


@pytest.mark.parametrize("replicas", [1, 2])
def test_each_task_gets_standbys_on_other_members(replicas: int) -> None:
    active, standby = _dealt({"m-a": replicas, "m-b": replicas, "m-c": replicas})
    assert set().union(*active.values()) == {0, 1, 2, 3, 4}
    for n in range(5):
        owners = [m for m, tasks in active.items() if n in tasks]
        keepers = [m for m, tasks in standby.items() if n in tasks]
        assert len(owners) == 1 and len(keepers) == replicas and owners[0] not in keepers


def test_standbys_follow_the_largest_setting_and_need_another_member() -> None:
    _active, standby = _dealt({"m-a": 1, "m-b": 0})
    assert standby == {"m-a": {n for n in range(5) if n % 2}, "m-b": {n for n in range(5) if n % 2 == 0}}
    _active, alone = _dealt({"m-a": 3})
    assert alone == {"m-a": set()}
    _active, none = _dealt({"m-a": 0, "m-b": 0})
    assert none == {"m-a": set(), "m-b": set()}


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_num_standby_replicas_is_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="num_standby_replicas must be an int >= 0"):
        KafkaApp("app", consumer=ConsumerSettings("localhost:9092"), producer=ProducerSettings("localhost:9092"),
                 topics="in", topology=counting_topology("out"), num_standby_replicas=bad)


def test_the_consumer_lists_one_assignor() -> None:
    """aiokafka sends a JoinGroup request per listed assignor; with more than one, members that do
    not join in step keep starting each other's rebalances, so the app lists only its own."""
    from streamlib.kafka._app import _assignment

    tasks = TaskAssignor(1)
    assert _assignment(ConsumerSettings("k:9092"), tasks) == {"partition_assignment_strategy": (tasks,)}
    own = ConsumerSettings("k:9092", properties={"partition_assignment_strategy": (TaskAssignor,)})
    assert _assignment(own, tasks) == {}
