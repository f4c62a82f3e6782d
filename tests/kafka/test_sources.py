"""Kafka sources against the real broker: plain, committable, partitioned; backpressure; watermarks."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, Sink, Source
from streamlib._runtime.signals import Watermark
from streamlib.kafka import (
    Committer,
    ConsumerSettings,
    KafkaRecord,
    KafkaSource,
    RecordTimeWatermarks,
    StrSerde,
)
from streamlib.kafka._watermarks import WatermarkTracker
from streamlib.kafka.testing import produce
from streamlib.testing.kafka import KafkaBroker

from ._util import committed_offsets, signal_tap, unique


async def _numbered(broker: KafkaBroker, topic: str, n: int, partitions: int) -> None:
    await broker.acreate_topic(topic, partitions)
    await produce(broker.bootstrap_servers, topic, ((b"k", str(i).encode(), i % partitions) for i in range(n)))


class _Seen:
    """A pass-through for ``map``: keeps what passed; ``reached`` is set once ``n`` elements passed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: list[Any] = []
        self.reached = asyncio.Event()

    def __call__(self, x: Any) -> Any:
        self.items.append(x)
        if len(self.items) >= self.n:
            self.reached.set()
        return x


class _Until(list[Any]):
    """A list for ``signal_tap`` whose ``seen`` event is set once an appended item satisfies ``done``."""

    def __init__(self, done: Callable[[Any], bool]) -> None:
        super().__init__()
        self.done = done
        self.seen = asyncio.Event()

    def append(self, item: Any) -> None:
        super().append(item)
        if self.done(item):
            self.seen.set()


async def _eventually(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Wait until ``check()`` holds: for source state that changes on the broker's and the
    source's own real-time schedule (pausing) and that no event announces."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, f"never {what}"
        await asyncio.sleep(0.01)


async def test_plain_source_reads_every_partition_in_order_one_partition_per_chunk(kafka_broker: KafkaBroker) -> None:
    topic = unique("plain")
    await _numbered(kafka_broker, topic, 3000, 3)
    chunks: list[Any] = []
    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers, value_serde=StrSerde())
    control, fut = (
        KafkaSource.plain(settings_, topic).via(signal_tap(chunks)).take(3000).to_mat(Sink.collect(), Keep.both).run()
    )
    got: list[KafkaRecord[bytes, str]] = await fut
    await control.wait_stopped()
    per: dict[int, list[int]] = defaultdict(list)
    for r in got:
        per[r.partition].append(int(r.value or ""))
    assert {p: per[p] for p in range(3)} == {p: list(range(p, 3000, 3)) for p in range(3)}
    for chunk in chunks:
        assert len({r.partition for r in chunk}) == 1
    assert all(r.offset == i for p in range(3) for i, r in enumerate(x for x in got if x.partition == p))
    assert control.metrics.records >= 3000 and control.is_stopped


async def test_plain_source_on_explicit_partitions_reads_only_those(kafka_broker: KafkaBroker) -> None:
    topic = unique("explicit")
    await _numbered(kafka_broker, topic, 300, 3)
    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers)
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 2)]
    got = await KafkaSource.plain(settings_, parts).take(200).run_with(Sink.collect())
    assert sorted(int(r.value) for r in got) == sorted(i for i in range(300) if i % 3 != 1)


async def test_stop_completes_the_stream_and_closes_the_consumer(kafka_broker: KafkaBroker) -> None:
    topic = unique("stop")
    await _numbered(kafka_broker, topic, 10, 1)
    seen = _Seen(10)
    control, fut = KafkaSource.plain(ConsumerSettings(kafka_broker.bootstrap_servers), topic).map(seen).to_mat(
        Sink.collect(), Keep.both
    ).run()
    await seen.reached.wait()
    control.stop()
    assert sorted(int(r.value) for r in await fut) == list(range(10))
    await control.wait_stopped()
    assert control.is_stopped and control.paused_partitions == set()


async def test_committable_source_commits_processed_offsets_and_resumes_after_them(kafka_broker: KafkaBroker) -> None:
    topic, group = unique("commit"), unique("group")
    await _numbered(kafka_broker, topic, 1000, 2)
    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers, group_id=group)
    seen = _Seen(1000)
    control, done = KafkaSource.committable(settings_, topic).map(seen).to_mat(Committer.sink(), Keep.both).run()
    await seen.reached.wait()
    control.stop()
    await done
    await control.wait_stopped()
    assert await committed_offsets(kafka_broker.bootstrap_servers, group, topic, 2) == {0: 500, 1: 500}
    # A second run of the same group starts after what was committed.
    await produce(kafka_broker.bootstrap_servers, topic, ((b"k", str(1000 + i).encode(), i % 2) for i in range(10)))
    rest = await KafkaSource.committable(settings_, topic).take(10).run_with(Sink.collect())
    assert sorted(int(r.value) for r in rest) == list(range(1000, 1010))


async def test_slow_downstream_pauses_fetching_instead_of_buffering(kafka_broker: KafkaBroker) -> None:
    topic = unique("backpressure")
    await _numbered(kafka_broker, topic, 20_000, 2)
    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers)
    graph = KafkaSource.plain(settings_, topic).to_mat(Sink.queue(10), Keep.both)
    (control, queue), run = graph.run_graph(channel_capacity=100, max_chunk=50)
    # Nobody pulls: the source fills the channels, then pauses its partitions (which drops what
    # aiokafka prefetched) instead of fetching into memory while it waits.
    await _eventually(lambda: bool(control.paused_partitions), "paused")
    assert control.paused_partitions == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    assert control.metrics.pauses == 1
    assert control.metrics.records <= 100 + 10 + 2 * 50 + 50  # channel + queue + what the pause may still deliver
    got = []
    async for rec in queue:
        got.append(rec)
        if len(got) == 20_000:
            break
    assert control.metrics.pauses >= 1 and not control.paused_partitions
    assert sorted(int(r.value) for r in got) == list(range(20_000))
    control.stop()
    queue.cancel()
    await run.wait()


async def test_partitioned_source_gives_each_partition_its_own_ordered_substream(kafka_broker: KafkaBroker) -> None:
    topic = unique("partitioned")
    await _numbered(kafka_broker, topic, 3000, 3)
    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers, group_id=unique("g"))
    results: dict[TopicPartition, asyncio.Future[list[Any]]] = {}
    seen = _Seen(3000)

    def start(pair: tuple[TopicPartition, Source[Any, None]]) -> None:
        tp, records = pair
        results[tp] = records.map(seen).map(lambda r: (r.partition, int(r.value))).run_with(Sink.collect())

    control, done = KafkaSource.partitioned(settings_, topic).to_mat(Sink.foreach(start), Keep.both).run()
    await seen.reached.wait()
    control.stop()
    await done
    assert sorted(results) == [TopicPartition(topic, p) for p in range(3)]
    for tp, fut in results.items():
        values = await fut  # the sub-stream completed when the source stopped
        assert values == [(tp.partition, i) for i in range(tp.partition, 3000, 3)]


async def test_partitioned_source_pauses_only_the_slow_partition(kafka_broker: KafkaBroker) -> None:
    topic = unique("partslow")
    await _numbered(kafka_broker, topic, 2000, 2)
    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers)
    queues: dict[int, Any] = {}
    started = {0: asyncio.Event(), 1: asyncio.Event()}

    def start(pair: tuple[TopicPartition, Source[Any, None]]) -> None:
        tp, records = pair
        queues[tp.partition] = records.run_with(Sink.queue(10))
        started[tp.partition].set()

    (control, done), run = KafkaSource.partitioned(settings_, topic).to_mat(
        Sink.foreach(start), Keep.both
    ).run_graph(channel_capacity=100, max_chunk=50)
    await started[0].wait()
    fast = [int((await queues[0].pull()).value) for _ in range(1000)]
    assert fast == list(range(0, 2000, 2))
    # Partition 0 was read to its end while nobody read partition 1: only partition 1 is paused.
    await _eventually(lambda: control.paused_partitions == {TopicPartition(topic, 1)}, "paused partition 1 alone")
    await started[1].wait()
    slow = [int((await queues[1].pull()).value) for _ in range(1000)]
    assert slow == list(range(1, 2000, 2))
    control.stop()
    await done
    await run.wait()


async def test_watermarks_are_the_minimum_over_partitions_and_skip_idle_ones(kafka_broker: KafkaBroker) -> None:
    topic = unique("wm")
    await kafka_broker.acreate_topic(topic, 2)
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    await producer.start()
    try:
        for ts in (1000, 1500, 2000):
            await producer.send_and_wait(topic, b"a", partition=0, timestamp_ms=ts)
        await producer.send_and_wait(topic, b"b", partition=1, timestamp_ms=9000)
    finally:
        await producer.stop()
    seen = _Until(lambda s: isinstance(s, Watermark) and s.time_ms >= 8500)
    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers)
    spec = RecordTimeWatermarks(out_of_orderness=500, idle_timeout=0.6)
    control, fut = (
        KafkaSource.plain(settings_, topic, watermarks=spec).via(signal_tap(seen)).to_mat(Sink.ignore(), Keep.both).run()
    )
    await seen.seen.wait()
    control.stop()
    await fut
    marks = [s.time_ms for s in seen if isinstance(s, Watermark)]
    assert marks == sorted(set(marks))
    # While both partitions are active the watermark is partition 0's time; once partition 0
    # has been quiet for the idle timeout, partition 1 alone sets it.
    assert 1500 in marks and marks[-1] == 8500
    assert all(m <= 1500 for m in marks[:-1])


async def test_windows_take_record_time_and_the_watermarks_of_a_kafka_source(kafka_broker: KafkaBroker) -> None:
    from aiokafka import AIOKafkaProducer

    from streamlib import TumblingWindows

    topic = unique("windows")
    await kafka_broker.acreate_topic(topic, 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, b"x", key=key, partition=p, timestamp_ms=ts)
                for ts in range(0, 10_000, 100) for p, key in enumerate((b"a", b"b"))]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    spec = RecordTimeWatermarks(out_of_orderness=0, idle_timeout=0.3)
    results = await (
        KafkaSource.plain(ConsumerSettings(kafka_broker.bootstrap_servers), topic, watermarks=spec)
        .key_by(lambda r: r.key)
        .window(TumblingWindows(1000))
        .count()
        .take(18)
        .run_with(Sink.collect())
    )
    # Windows [0, 1000) ... [8000, 9000) of both keys are closed; the last one stays open.
    assert sorted((w.key, w.start, w.value) for w in results) == [
        (key, start, 10) for key in (b"a", b"b") for start in range(0, 9000, 1000)
    ]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.floats(0, 3)), max_size=30))
def test_watermark_tracker_matches_a_model(events: list[tuple[int, int, float]]) -> None:
    spec = RecordTimeWatermarks(out_of_orderness=timedelta(milliseconds=100), idle_timeout=1.0)
    tracker = WatermarkTracker(spec)
    tracker.assigned([0, 1, 2], 0.0)
    now = 0.0
    max_ts: dict[int, int] = {}
    last: dict[int, float] = {0: 0.0, 1: 0.0, 2: 0.0}
    emitted: list[int] = []
    for part, ts, dt in events:
        now += dt
        tracker.observe(part, ts, now)
        max_ts[part] = max(ts, max_ts.get(part, ts))
        last[part] = now
        wm = tracker.advance(now)
        active = [p for p in range(3) if now - last[p] < 1.0]
        if active:
            expected = None if any(p not in max_ts for p in active) else min(max_ts[p] for p in active) - 100
        else:
            expected = max(max_ts.values()) - 100
        if expected is not None and (not emitted or expected > emitted[-1]):
            assert wm == expected
            emitted.append(expected)
        else:
            assert wm is None
