"""Producer sink, producer flow and committable sink against the real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from streamlib import Keep, Sink, Source
from streamlib.kafka import (
    CommittableOffset,
    Committer,
    CommitterSettings,
    ConsumerSettings,
    JsonSerde,
    KafkaFlow,
    KafkaSink,
    KafkaSource,
    ProduceError,
    ProducerMessage,
    ProducerMessageResult,
    ProducerRecord,
    ProducerResult,
    ProducerSettings,
    StrSerde,
)
from streamlib.kafka.testing import produce, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._util import committed_offsets, unique


class Reading(msgspec.Struct):
    sensor: str
    value: float


async def test_producer_sink_writes_keys_values_headers_partitions_and_timestamps(kafka_broker: KafkaBroker) -> None:
    topic = unique("sink")
    await kafka_broker.acreate_topic(topic, 3)
    records = [
        ProducerRecord(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 3, timestamp_ms=1_000_000 + i,
                       headers=[("n", str(i).encode())])
        for i in range(500)
    ]
    await Source.from_iterable(records).run_with(KafkaSink.producer(ProducerSettings(kafka_broker.bootstrap_servers)))
    got = await read_topic(kafka_broker.bootstrap_servers, topic)
    assert len(got) == 500
    for r in got:
        i = int(r.value[1:])
        assert (r.key, r.partition, r.timestamp, list(r.headers)) == (
            f"k{i}".encode(), i % 3, 1_000_000 + i, [("n", str(i).encode())]
        )
    for p in range(3):
        assert [int(r.value[1:]) for r in got if r.partition == p] == list(range(p, 500, 3))


async def test_producer_sink_with_a_topic_takes_bare_values_through_the_serde(kafka_broker: KafkaBroker) -> None:
    topic = unique("typed")
    await kafka_broker.acreate_topic(topic, 1)
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, value_serde=JsonSerde(Reading))
    readings = [Reading("s1", i / 2) for i in range(100)]
    await Source.from_iterable(readings).run_with(KafkaSink.producer(settings_, topic=topic))
    consumer = ConsumerSettings(kafka_broker.bootstrap_servers, value_serde=JsonSerde(Reading))
    got = await KafkaSource.plain(consumer, topic).take(100).map(lambda r: r.value).run_with(Sink.collect())
    assert got == readings


async def test_producer_flow_emits_results_in_order_with_their_passthrough(kafka_broker: KafkaBroker) -> None:
    topic = unique("flow")
    await kafka_broker.acreate_topic(topic, 2)
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, value_serde=StrSerde())
    results: list[ProducerResult[Any, Any]] = await (
        Source.from_iterable(range(300))
        .map(lambda i: ProducerRecord(topic, str(i), partition=i % 2, passthrough=i))
        .via(KafkaFlow.producer(settings_))
        .run_with(Sink.collect())
    )
    assert [r.passthrough for r in results] == list(range(300))
    for p in range(2):
        assert [r.offset for r in results if r.partition == p] == list(range(150))


async def test_producer_message_result_comes_after_all_its_records(kafka_broker: KafkaBroker) -> None:
    topic = unique("multi")
    await kafka_broker.acreate_topic(topic, 1)
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers)
    out: list[ProducerMessageResult] = await (
        Source.from_iterable(range(20))
        .map(lambda i: ProducerMessage([ProducerRecord(topic, str(i).encode())] * (i % 3), passthrough=i))
        .via(KafkaFlow.producer(settings_))
        .run_with(Sink.collect())
    )
    assert [(m.passthrough, len(m.results)) for m in out] == [(i, i % 3) for i in range(20)]
    assert len(await read_topic(kafka_broker.bootstrap_servers, topic)) == sum(i % 3 for i in range(20))


async def test_serialization_failure_names_the_topic(kafka_broker: KafkaBroker) -> None:
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, value_serde=StrSerde())
    with pytest.raises(ProduceError, match="cannot serialize a record for topic 'nums'") as info:
        await Source.single(ProducerRecord("nums", 42)).run_with(KafkaSink.producer(settings_))
    assert any("kafka_producer_sink" in note for note in info.value.__notes__)
    with pytest.raises(TypeError, match="takes ProducerRecord elements"):
        await Source.single(b"bare").run_with(KafkaSink.producer(settings_))


async def test_unknown_topic_fails_the_stream_naming_it(kafka_broker: KafkaBroker) -> None:
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, properties={"request_timeout_ms": 1500})
    with pytest.raises(ProduceError, match="no-such-topic"):
        await Source.single(ProducerRecord("no-such-topic", b"x")).run_with(KafkaSink.producer(settings_))


async def test_committable_sink_produces_then_commits(kafka_broker: KafkaBroker) -> None:
    src, dst, group = unique("csrc"), unique("cdst"), unique("cgroup")
    await kafka_broker.acreate_topic(src, 2)
    await kafka_broker.acreate_topic(dst, 2)
    await produce(kafka_broker.bootstrap_servers, src, ((None, str(i).encode(), i % 2) for i in range(2000)))
    consumer = ConsumerSettings(kafka_broker.bootstrap_servers, group_id=group)
    producer = ProducerSettings(kafka_broker.bootstrap_servers)

    all_read = asyncio.Event()
    read = 0

    def transform(r: Any) -> Any:
        nonlocal read
        read += 1
        if read == 2000:
            all_read.set()
        n = int(r.value)
        if n % 10 == 0:
            return r.committable_offset  # nothing to produce, still committed
        return ProducerRecord(dst, str(n * 2).encode(), partition=r.partition, passthrough=r.committable_offset)

    control, done = (
        KafkaSource.committable(consumer, src)
        .map(transform)
        .to_mat(KafkaSink.committable(producer, CommitterSettings(max_batch=100, max_interval=0.05)), Keep.both)
        .run()
    )
    await all_read.wait()
    control.stop()
    await done
    await control.wait_stopped()
    got = await read_topic(kafka_broker.bootstrap_servers, dst)
    assert sorted(int(r.value) for r in got) == sorted(2 * n for n in range(2000) if n % 10)
    assert await committed_offsets(kafka_broker.bootstrap_servers, group, src, 2) == {0: 1000, 1: 1000}


async def test_committer_rejects_elements_without_an_offset() -> None:
    with pytest.raises(TypeError, match="a committer takes CommittableRecord, CommittableOffset or a producer result"):
        await Source.single(42).run_with(Committer.sink())


async def test_committer_commits_bare_offsets(kafka_broker: KafkaBroker) -> None:
    """A flow that keeps only ``r.committable_offset`` still commits what it read."""
    topic, group = unique("offsets"), unique("ogroup")
    await kafka_broker.acreate_topic(topic, 2)
    await produce(kafka_broker.bootstrap_servers, topic, ((None, str(i).encode(), i % 2) for i in range(300)))
    all_read = asyncio.Event()
    offsets: list[CommittableOffset] = []

    def offset_of(r: Any) -> CommittableOffset:
        offsets.append(r.committable_offset)
        if len(offsets) == 300:
            all_read.set()
        return r.committable_offset

    settings_ = ConsumerSettings(kafka_broker.bootstrap_servers, group_id=group)
    control, done = KafkaSource.committable(settings_, topic).map(offset_of).to_mat(Committer.sink(), Keep.both).run()
    await all_read.wait()
    control.stop()
    await done
    await control.wait_stopped()
    assert sorted((o.partition, o.offset) for o in offsets) == [(p, i) for p in range(2) for i in range(150)]
    assert await committed_offsets(kafka_broker.bootstrap_servers, group, topic, 2) == {0: 150, 1: 150}


async def test_producer_flow_emits_the_results_before_an_upstream_failure(kafka_broker: KafkaBroker) -> None:
    topic = unique("flowfail")
    await kafka_broker.acreate_topic(topic, 1)
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, value_serde=StrSerde())

    def record(i: int) -> ProducerRecord[None, str]:
        if i == 50:
            raise ValueError("bad record 50")
        return ProducerRecord(topic, str(i), passthrough=i)

    got: list[ProducerResult[Any, Any]] = []
    with pytest.raises(ValueError, match="bad record 50"):
        await Source.from_iterable(range(100)).map(record).via(KafkaFlow.producer(settings_)).run_with(
            Sink.foreach(got.append)
        )
    assert [r.passthrough for r in got] == list(range(50))
    assert [r.value for r in await read_topic(kafka_broker.bootstrap_servers, topic)] == [str(i).encode() for i in range(50)]


# Partitions the Java client's default partitioner picks for these keys among 1,000 partitions
# (murmur2 of the key bytes, sign bit cleared, modulo the partition count).
JAVA_PARTITIONS_OF_1000 = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}


def java_partition(key: bytes, partitions: int) -> int:
    """The Java client's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), written out."""
    m, r = 0x5BD1E995, 24
    length = len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = key[length - length % 4 :]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_the_written_out_murmur2_matches_the_java_clients_partitions() -> None:
    assert {k: java_partition(k, 1000) for k in JAVA_PARTITIONS_OF_1000} == JAVA_PARTITIONS_OF_1000


async def test_keyed_records_go_where_the_java_client_puts_them_in_order_with_their_offsets(
    kafka_broker: KafkaBroker,
) -> None:
    topic = unique("keyed")
    await kafka_broker.acreate_topic(topic, 5)
    # ~1 kB values: a 1,024-record chunk fills several 16 kB batches per partition.
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, key_serde=StrSerde(), value_serde=StrSerde())
    n = 3000
    results: list[ProducerResult[Any, Any]] = await (
        Source.from_iterable(range(n))
        .map(lambda i: ProducerRecord(topic, f"{i:05d}" + "x" * 1000, key=f"user-{i % 97}", passthrough=i))
        .via(KafkaFlow.producer(settings_))
        .run_with(Sink.collect())
    )
    assert [r.passthrough for r in results] == list(range(n))
    for r in results:
        assert r.partition == java_partition(f"user-{r.passthrough % 97}".encode(), 5)
    got = await read_topic(kafka_broker.bootstrap_servers, topic)
    for p in range(5):
        mine = [r for r in results if r.partition == p]
        assert [r.offset for r in mine] == list(range(len(mine)))
        # Each partition holds its records in input order, at the offsets the results name.
        assert [int(r.value[:5]) for r in got if r.partition == p] == [r.passthrough for r in mine]
    assert sorted(int(r.value[:5]) for r in got) == list(range(n))


async def test_records_without_key_or_partition_are_all_delivered(kafka_broker: KafkaBroker) -> None:
    topic = unique("unkeyed")
    await kafka_broker.acreate_topic(topic, 3)
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, value_serde=StrSerde())
    await Source.from_iterable(range(5000)).map(str).run_with(KafkaSink.producer(settings_, topic=topic))
    got = await read_topic(kafka_broker.bootstrap_servers, topic)
    assert sorted(int(r.value) for r in got) == list(range(5000))
    for p in {r.partition for r in got}:
        values = [int(r.value) for r in got if r.partition == p]
        assert values == sorted(values)


async def test_a_record_too_large_for_a_request_fails_the_stream_naming_it(kafka_broker: KafkaBroker) -> None:
    topic = unique("large")
    await kafka_broker.acreate_topic(topic, 1)
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, properties={"max_request_size": 10_000})
    records = [ProducerRecord(topic, b"small"), ProducerRecord(topic, b"y" * 20_000, key=b"the-big-one")]
    with pytest.raises(ProduceError, match=r"larger than max_request_size \(10000 bytes\).*record: ProducerRecord\(topic=.*yyyy"):
        await Source.from_iterable(records).run_with(KafkaSink.producer(settings_))


async def test_small_chunks_joining_lingering_batches_keep_order_and_offsets(kafka_broker: KafkaBroker) -> None:
    topic = unique("linger")
    await kafka_broker.acreate_topic(topic, 3)
    # Chunks of 7 records and a 50 ms linger: most chunks join the batch the previous one left open.
    settings_ = ProducerSettings(kafka_broker.bootstrap_servers, key_serde=StrSerde(), value_serde=StrSerde(),
                                 linger_ms=50)
    n = 700
    results: list[ProducerResult[Any, Any]] = await (
        Source.from_iterable(range(n))
        .map(lambda i: ProducerRecord(topic, str(i), key=f"k{i % 11}", passthrough=i))
        .via(KafkaFlow.producer(settings_))
        .to_mat(Sink.collect(), Keep.right)
        .run(max_chunk=7)
    )
    assert [r.passthrough for r in results] == list(range(n))
    got = await read_topic(kafka_broker.bootstrap_servers, topic)
    for p in range(3):
        mine = [r for r in results if r.partition == p]
        assert [r.offset for r in mine] == list(range(len(mine)))
        assert [int(r.value) for r in got if r.partition == p] == [r.passthrough for r in mine]
        assert all(r.partition == java_partition(f"k{r.passthrough % 11}".encode(), 3) for r in mine)
    assert len(got) == n
