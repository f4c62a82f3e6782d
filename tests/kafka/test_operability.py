"""What an operator sees of a KafkaApp: its metrics, its logs, how fast partitions move on a stop."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import NotEnoughReplicasError, NotLeaderForPartitionError

from streamlib import Flow
from streamlib.kafka import (
    AppControl,
    ConsumerSettings,
    KafkaApp,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
    TopicPartition,
)
from streamlib.kafka._logfilter import SENDER_LOGGER, RetriedVerificationFilter, retried_not_enough_replicas
from streamlib.kafka.testing import end_offsets, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import expected_outputs, parse_outputs, produce_numbered
from ._procs import Job
from ._util import counting_topology, produce_keyed, unique, wait_drained

KEYS = 40
PARTITIONS = 4


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
    await produce_keyed(bootstrap, src, range(0, 200))
    app = KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                   producer=ProducerSettings(bootstrap), topics=src, topology=counting_topology(dst),
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
        await produce_keyed(bootstrap, src, range(200, 400))
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
    await produce_keyed(bootstrap, src, range(0, 100))
    p0, p1 = TopicPartition(src, 0), TopicPartition(src, 1)
    # An interval this long means: commit only when stopped.
    app = KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                   producer=ProducerSettings(bootstrap), topics=src, topology=counting_topology(dst),
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


# -- a zombie: paused past its session timeout while another instance takes over ----------------


def _log_lines(log: str, level: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(f"{level}:")]


@pytest.mark.time_limit(200)
async def test_a_resumed_zombie_logs_one_line_per_fenced_producer(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("zombie"), unique("zombie-in"), unique("zombie-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    a = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "a"), log_dir=tmp_path)
    b = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "b"), log_dir=tmp_path)
    n = 40_000
    producing = asyncio.ensure_future(produce_numbered(bootstrap, src, n, keys=KEYS, partitions=PARTITIONS,
                                                       rate=4_000))
    try:
        await a.start()
        await a.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS and s["commits"] >= 4)
        a.pause()  # mid-stream: records read and sent, their transactions open
        await b.start()
        # Once A misses its session timeout, B gets every partition (fencing A's producers).
        await b.wait_for(lambda s: len(s.get("assigned", [])) == PARTITIONS and s["commits"] >= 4, timeout=90)
        a.resume()
        await a.wait_for(lambda s: s.get("assigned"), timeout=90)  # A rejoined and got partitions back
        await producing
        await wait_drained(bootstrap, app_id, src, PARTITIONS)
        assert await a.stop() == 0, a.stderr_tail()
        log = a.stderr()
        assert await b.stop() == 0, b.stderr_tail()
    finally:
        for job in (a, b):
            if job.proc is not None and job.proc.returncode is None:
                job.resume()
                await job.kill()
        producing.cancel()
        await asyncio.wait([producing])
    errors, warnings = _log_lines(log, "ERROR"), _log_lines(log, "WARNING")
    print(f"zombie log: {len(errors)} ERROR, {len(warnings)} WARNING lines")
    assert "Future exception was never retrieved" not in log
    # One WARNING line per fenced producer, naming it (transactional id and epoch) and what happens next.
    fenced = [line for line in warnings if "was fenced" in line]
    assert fenced, f"no fencing reported; warnings: {warnings[:20]}"
    producers = [re.search(r"producer (\S+ \(epoch \d+\))", line) for line in fenced]
    assert all(p is not None and p[1].startswith(f"{app_id}-{src}-") for p in producers), fenced
    assert len(producers) == len({p[1] for p in producers if p}), f"a fencing reported more than once: {fenced}"
    assert all("the partition is closed here" in line or "reopening it" in line for line in fenced), fenced
    # The only ERROR lines left are aiokafka's own about the expired session, none from a fenced producer.
    assert all(line.startswith("ERROR:aiokafka.consumer.group_coordinator:") for line in errors), errors[:20]
    rows = parse_outputs(await read_topic(bootstrap, dst))
    model = expected_outputs(n, KEYS)
    assert sorted(r[1] for r in rows) == list(range(n))  # exactly once
    assert all(model[num] == (k, c, s) for k, num, c, s in rows)


# -- the retried NOT_ENOUGH_REPLICAS of transaction verification ---------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _counter_app(bootstrap: str, app_id: str, src: str, dst: str, state: Path) -> KafkaApp:
    consumer = ConsumerSettings(bootstrap, value_serde=StrSerde(),
                                properties={"session_timeout_ms": 6000, "heartbeat_interval_ms": 200})
    return KafkaApp(app_id, consumer=consumer, producer=ProducerSettings(bootstrap, linger_ms=2), topics=src,
                    topology=counting_topology(dst), checkpoint_interval=0.05, state_dir=state)


@pytest.mark.time_limit(200)
async def test_rebalances_log_no_not_enough_replicas_warnings(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("nerw"), unique("nerw-in"), unique("nerw-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    capture = _Capture()
    sender_log = logging.getLogger(SENDER_LOGGER)
    sender_log.addHandler(capture)
    n = 20_000
    producing = asyncio.ensure_future(produce_numbered(bootstrap, src, n, keys=KEYS, partitions=PARTITIONS,
                                                       rate=5_000))
    a = _counter_app(bootstrap, app_id, src, dst, tmp_path / "a").run()
    b: AppControl | None = None
    try:
        while a.metrics.commits < 4:
            assert not a.is_stopped
            await asyncio.sleep(0.05)
        b = _counter_app(bootstrap, app_id, src, dst, tmp_path / "b").run()  # a rebalance
        while not (a.metrics.assigned and b.metrics.assigned and b.metrics.commits >= 2):
            assert not a.is_stopped and not b.is_stopped
            await asyncio.sleep(0.05)
        b.stop()  # another one
        await b.wait_stopped()
        await producing
        await _until_committed(a, await end_offsets(bootstrap, src), timeout=90)
    finally:
        producing.cancel()
        for control in (a, b):
            if control is not None:
                control.stop()
                await control.wait_stopped()
        sender_log.removeHandler(capture)
    retried = [r for r in capture.records if retried_not_enough_replicas(r) is not None]
    print(f"{len(retried)} retried NOT_ENOUGH_REPLICAS records, all at DEBUG")
    assert [r.getMessage() for r in retried if r.levelno >= logging.WARNING] == []
    numbers = [json.loads(json.loads(r.value)[1])["n"] for r in await read_topic(bootstrap, dst)]
    assert sorted(numbers) == list(range(n))  # exactly once through both rebalances


async def test_the_filter_keeps_not_enough_replicas_when_replicas_are_out_of_sync(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = unique("isr")
    await kafka_broker.acreate_topic(topic, 1)
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("isr-txn"))
    await producer.start()
    try:
        await producer.client._wait_on_metadata(topic)
        in_sync = RetriedVerificationFilter()
        in_sync.watch(producer)
        logger = logging.getLogger(SENDER_LOGGER)

        def record(error: type[Exception]) -> logging.LogRecord:  # as aiokafka's sender logs a retried batch
            return logger.makeRecord(SENDER_LOGGER, logging.WARNING, "sender.py", 870,
                                     "Got error produce response on topic-partition %s, retrying. Error: %s",
                                     (tp, error), None)

        # The broker's metadata: every replica of the partition in sync, so the error is the verification one.
        demoted = record(NotEnoughReplicasError)
        assert in_sync.filter(demoted) and demoted.levelno == logging.DEBUG
        other = record(NotLeaderForPartitionError)
        assert in_sync.filter(other) and other.levelno == logging.WARNING
        # The same record when the partition's in-sync replicas are fewer than its replicas: kept.
        real = producer.client.cluster._partitions[topic][0]

        class _Shrunk:
            class client:  # noqa: N801 - shaped like a producer's client
                class cluster:  # noqa: N801
                    _partitions = {topic: {0: real._replace(isr=[])}}

        shrunk = RetriedVerificationFilter()
        shrunk.watch(_Shrunk())
        kept = record(NotEnoughReplicasError)
        assert shrunk.filter(kept) and kept.levelno == logging.WARNING
        unknown = RetriedVerificationFilter()  # no metadata about the partition: kept
        kept = record(NotEnoughReplicasError)
        assert unknown.filter(kept) and kept.levelno == logging.WARNING
    finally:
        await producer.stop()


# -- a clean stop leaves the group at once -------------------------------------------------------


@pytest.mark.time_limit(120)
async def test_a_clean_stop_hands_its_partitions_over_before_the_session_timeout(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("leave"), unique("leave-in"), unique("leave-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    await produce_numbered(bootstrap, src, 1000, keys=KEYS, partitions=PARTITIONS)
    # A session timeout far beyond the bound below: only leaving the group can hand the partitions over.
    session = {"session_timeout_ms": 45_000, "heartbeat_interval_ms": 500}

    def app(name: str) -> KafkaApp:
        consumer = ConsumerSettings(bootstrap, value_serde=StrSerde(), properties=session)
        return KafkaApp(app_id, consumer=consumer, producer=ProducerSettings(bootstrap), topics=src,
                        topology=counting_topology(dst), checkpoint_interval=0.05, state_dir=tmp_path / name)

    a = app("a").run()
    b: AppControl | None = None
    loop = asyncio.get_running_loop()

    def holds() -> str:
        return "; ".join(f"{name} holds {sorted(tp.partition for tp in c.metrics.assigned)}, committed "
                         f"{sorted(tp.partition for tp in c.metrics.committed)}"
                         for name, c in (("A", a), ("B", b)) if c is not None)

    try:
        deadline = loop.time() + 40
        while len(a.metrics.assigned) < PARTITIONS:
            assert not a.is_stopped
            assert loop.time() < deadline, f"A never got every partition: {holds()}"
            await asyncio.sleep(0.05)
        b = app("b").run()
        # The group is stable again: the partitions are split between A and B, and B has opened its own.
        deadline = loop.time() + 40
        while not (a.metrics.assigned and b.metrics.assigned and len(a.metrics.assigned | b.metrics.assigned)
                   == PARTITIONS and set(b.metrics.committed) == b.metrics.assigned):
            assert not a.is_stopped and not b.is_stopped
            assert loop.time() < deadline, f"A and B did not share the partitions: {holds()}"
            await asyncio.sleep(0.05)
        b.stop()
        await b.wait_stopped()
        deadline = loop.time() + 30  # generous, and well below the session timeout
        while len(a.metrics.assigned) < PARTITIONS:
            assert loop.time() < deadline, f"B left but A did not get its partitions: {holds()}"
            await asyncio.sleep(0.05)
    finally:
        for control in (a, b):
            if control is not None:
                control.stop()
                await control.wait_stopped()


async def _delete_records(bootstrap: str, tp: TopicPartition, before: int) -> None:
    """Delete ``tp``'s records below offset ``before``, as retention would."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=before)})
    finally:
        await admin.close()


def _deleted_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "records_deleted_unread"]


async def test_records_deleted_before_they_were_read_are_reported_not_skipped_silently(
    kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("deleted"), unique("deleted-in"), unique("deleted-out")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)

    def make() -> KafkaApp:
        return KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                        producer=ProducerSettings(bootstrap), topics=src, topology=counting_topology(dst),
                        checkpoint_interval=0.05)

    await produce_keyed(bootstrap, src, range(0, 100))  # even values to partition 0, odd to 1
    control = make().run()
    try:
        await _until_committed(control, await end_offsets(bootstrap, src))
    finally:
        control.stop()
        await control.wait_stopped()
    assert control.metrics.deleted_unread == 0
    # While the app is down, partition 0's offsets 50 to 79 (values 100, 102, ..., 158) are deleted.
    await produce_keyed(bootstrap, src, range(100, 200))
    await _delete_records(bootstrap, TopicPartition(src, 0), 80)
    caplog.set_level(logging.WARNING, logger="streamlib.kafka")
    control = make().run()
    try:
        await _until_committed(control, await end_offsets(bootstrap, src))
    finally:
        control.stop()
        await control.wait_stopped()
    assert control.metrics.deleted_unread == 30
    warnings = _deleted_warnings(caplog)
    assert len(warnings) == 1 and f"records 50 to 79 of {src}-0 were deleted" in warnings[0], warnings
    values = sorted(int(v) for _k, v, _c in (json.loads(r.value) for r in await read_topic(bootstrap, dst)))
    assert values == sorted(set(range(200)) - set(range(100, 160, 2)))


async def test_records_deleted_while_the_app_lags_behind_are_reported_not_skipped_silently(
    kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("lagging"), unique("lagging-in"), unique("lagging-out")
    await kafka_broker.acreate_topic(src, 1)
    await kafka_broker.acreate_topic(dst, 1)
    total, deleted_before = 100_000, 70_000
    await produce_keyed(bootstrap, src, range(total), partitions=1)

    async def slow_at_first(r: Any) -> ProducerRecord[bytes, str]:
        if r.offset < 2000:  # the app falls behind: its lanes fill and the consumer stops fetching
            await asyncio.sleep(0.002)
        return ProducerRecord(dst, r.value, key=r.key)

    app = KafkaApp(app_id, consumer=ConsumerSettings(bootstrap, value_serde=StrSerde()),
                   producer=ProducerSettings(bootstrap, value_serde=StrSerde()), topics=src,
                   topology=lambda p: Flow().map_async(1, slow_at_first), checkpoint_interval=0.05)
    caplog.set_level(logging.WARNING, logger="streamlib.kafka")
    control = app.run()
    try:
        while control.metrics.fetched == 0:
            assert not control.is_stopped
            await asyncio.sleep(0.01)
        # While the app works through its first records, retention deletes most of what it has not fetched.
        await _delete_records(bootstrap, TopicPartition(src, 0), deleted_before)
        await _until_committed(control, {TopicPartition(src, 0): total}, timeout=120)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not control.metrics.deleted_unread:  # the check runs in the background
            assert not control.is_stopped
            assert loop.time() < deadline, "the deleted records were never reported"
            await asyncio.sleep(0.01)
    finally:
        control.stop()
        await control.wait_stopped()
    outputs = await read_topic(bootstrap, dst)
    deleted = control.metrics.deleted_unread
    # Every input record was either processed (once) or reported as deleted: none vanished unseen.
    assert 0 < deleted <= deleted_before and len(outputs) + deleted == total, (len(outputs), deleted)
    warnings = _deleted_warnings(caplog)
    assert len(warnings) == 1 and f"of {src}-0 were deleted" in warnings[0], warnings
    assert f"reading on from offset {deleted_before}" in warnings[0]
