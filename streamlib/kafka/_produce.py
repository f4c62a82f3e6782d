"""Serializing :class:`ProducerRecord` s and handing them to an aiokafka producer in batches.

A chunk of records becomes one record batch per topic partition (aiokafka's
``create_batch``/``send_batch``), built in the chunk's order, instead of one
``send`` (and one future) per record: the broker sees the same batches, the
client does a fraction of the work. Records keep their order within each
partition. A keyed record without an explicit partition goes where the
producer's partitioner puts it (by default the murmur2 hash of the serialized
key, as the Java client and Kafka Streams do); records with neither key nor
partition go, per chunk and topic, to the one partition the partitioner picks
for the first of them (the Java client's sticky partitioning).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ._errors import ProduceError
from ._records import ProducerRecord
from ._serde import BytesSerde
from ._settings import ProducerSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

#: One submitted batch: its first record (for error messages), its delivery future
#: (resolves to the RecordMetadata of its first record), how many records it holds
#: and its partition.
SentBatch = tuple[ProducerRecord[Any, Any], "asyncio.Future[Any]", int, int]
#: Where one record went: its batch's delivery future and its index in the batch.
Slot = tuple["asyncio.Future[Any]", int]

_HASH_CACHE_LIMIT = 1 << 16
#: Headers of a record without any (aiokafka's batch builder takes a list; it only reads it).
_NO_HEADERS: list[tuple[str, bytes]] = []


class RecordSender:
    """Sends records with the settings' serdes; ``default_topic`` turns bare values into records."""

    __slots__ = ("key_ser", "value_ser", "default_topic", "stage_name", "_hashes", "_last", "_last_producer")

    def __init__(self, settings: ProducerSettings | None, default_topic: str | None, stage_name: str) -> None:
        if settings is None:  # keys and values are bytes already
            self.key_ser = self.value_ser = None
        else:
            self.key_ser = None if type(settings.key_serde) is BytesSerde else settings.key_serde.serialize
            self.value_ser = None if type(settings.value_serde) is BytesSerde else settings.value_serde.serialize
        self.default_topic = default_topic
        self.stage_name = stage_name
        self._hashes: dict[bytes, int] = {}  # serialized key -> its positive murmur2 hash
        # Per partition, the last batch submitted and its delivery future: records of the next
        # chunk join it while the producer's sender has not taken it yet (it lingers linger_ms).
        self._last: dict[tuple[str, int], tuple[Any, asyncio.Future[Any]]] = {}
        self._last_producer: Any = None

    @classmethod
    def plain(cls, what: str) -> RecordSender:
        """A sender of records whose keys and values are bytes already (changelogs, dead letters)."""
        return cls(None, None, what)

    def as_record(self, element: Any) -> ProducerRecord[Any, Any]:
        if isinstance(element, ProducerRecord):
            return element
        if self.default_topic is not None:
            return ProducerRecord(self.default_topic, element)
        raise TypeError(
            f"{self.stage_name} takes ProducerRecord elements (or give it a topic= for bare values), "
            f"got {type(element).__name__}: {element!r:.200}"
        )

    async def send(self, producer: AIOKafkaProducer, rec: ProducerRecord[Any, Any]) -> asyncio.Future[Any]:
        """Hand ``rec`` to the producer; the future resolves to its RecordMetadata."""
        try:
            key = rec.key if self.key_ser is None else self.key_ser(rec.key)
            value = rec.value if self.value_ser is None else self.value_ser(rec.value)
        except Exception as exc:
            raise ProduceError(f"cannot serialize a record for topic {rec.topic!r}: {exc!r}; record: {rec!r:.300}") from exc
        try:
            return await producer.send(  # type: ignore[no-any-return]
                rec.topic, value, key=key, partition=rec.partition, timestamp_ms=rec.timestamp_ms,
                headers=list(rec.headers) if rec.headers else None,
            )
        except (AssertionError, TypeError, ValueError, KafkaError) as exc:
            raise ProduceError(f"cannot send a record to topic {rec.topic!r}: {exc!r}; record: {rec!r:.300}") from exc

    async def send_batches(
        self, producer: AIOKafkaProducer, records: Sequence[ProducerRecord[Any, Any]], slots: list[Slot] | None = None,
    ) -> list[SentBatch]:
        """Hand ``records`` to the producer as record batches, one or more per topic partition.

        Returns the submitted batches in submission order (a record that joined a batch
        submitted earlier, still open in the producer, is returned as a part of that batch);
        when ``slots`` is given, appends to it, per record in input order, its batch's future
        and its index in that batch. Waits (backpressure) while a partition's previous batch
        is not yet taken by the producer's sender. A record that cannot be serialized, partitioned or encoded
        raises :class:`ProduceError` naming it, before any batch of the chunk is submitted.
        """
        key_ser = self.key_ser
        value_ser = self.value_ser
        metadata: Any = producer._metadata  # type: ignore[attr-defined]
        partitioner = producer._partitioner  # type: ignore[attr-defined]
        by_hash = type(partitioner) is DefaultPartitioner
        hashes = self._hashes
        limit = producer._max_request_size  # type: ignore[attr-defined]
        topics: dict[str, tuple[list[int], Any]] = {}  # topic -> (all partitions, partitions set)
        sticky: dict[str, int] = {}
        if self._last_producer is not producer:
            self._last = {}
            self._last_producer = producer
        last = self._last
        # (topic, partition) -> [builder, records of this call in it]
        open_batches: dict[tuple[str, int], list[Any]] = {}
        counts: dict[int, int] = {}  # id(builder) -> records of this call in it
        # builders in creation order: (tp, builder, its first record of this call, its future if submitted)
        order: list[tuple[tuple[str, int], Any, ProducerRecord[Any, Any], Any]] = []
        for rec in records:
            topic = rec.topic
            try:
                key = rec.key if key_ser is None else key_ser(rec.key)
                value = rec.value if value_ser is None else value_ser(rec.value)
            except Exception as exc:
                raise ProduceError(
                    f"cannot serialize a record for topic {topic!r}: {exc!r}; record: {rec!r:.300}"
                ) from exc
            if key is None and value is None:
                raise ProduceError(f"a record needs a key or a value (both are None); record: {rec!r:.300}")
            known = topics.get(topic)
            if known is None:
                parts = metadata.partitions_for_topic(topic)
                if parts is None:
                    try:
                        await producer.client._wait_on_metadata(topic)
                    except KafkaError as exc:
                        raise ProduceError(
                            f"cannot send a record to topic {topic!r}: {exc!r}; record: {rec!r:.300}"
                        ) from exc
                    parts = metadata.partitions_for_topic(topic)
                known = topics[topic] = (sorted(parts), parts)
            partition = rec.partition
            if partition is None:
                if key is None:
                    partition = sticky.get(topic)
                    if partition is None:
                        available = list(metadata.available_partitions_for_topic(topic))
                        partition = sticky[topic] = partitioner(None, known[0], available)
                elif by_hash:
                    h = hashes.get(key)
                    if h is None:
                        if len(hashes) >= _HASH_CACHE_LIMIT:
                            hashes.clear()
                        try:
                            h = hashes[key] = murmur2(key) & 0x7FFFFFFF
                        except TypeError as exc:
                            raise ProduceError(
                                f"cannot send a record to topic {topic!r}: its key is not bytes after "
                                f"serialization ({exc!r}); record: {rec!r:.300}"
                            ) from exc
                    partition = known[0][h % len(known[0])]
                else:
                    available = list(metadata.available_partitions_for_topic(topic))
                    partition = partitioner(key, known[0], available)
            elif partition not in known[1]:
                raise ProduceError(
                    f"cannot send a record to topic {topic!r}: it has no partition {partition} "
                    f"(partitions {known[0]}); record: {rec!r:.300}"
                )
            headers = list(rec.headers) if rec.headers else _NO_HEADERS
            tp = (topic, partition)
            try:
                size = (0 if key is None else len(key)) + (0 if value is None else len(value))
                if headers or size > limit - 1024:
                    if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) > limit:
                        raise ValueError(
                            f"the record is larger than max_request_size ({limit} bytes) once serialized"
                        )
                entry = open_batches.get(tp)
                if entry is None:
                    previous = last.get(tp)
                    if previous is not None and _queued(producer, tp, previous[0]):
                        builder = previous[0]  # submitted, not yet taken by the sender: join it
                        order.append((tp, builder, rec, previous[1]))
                    else:
                        builder = producer.create_batch()
                        order.append((tp, builder, rec, None))
                    entry = open_batches[tp] = [builder, 0]
                builder = entry[0]
                if slots is not None:
                    index = builder.record_count()
                if builder.append(timestamp=rec.timestamp_ms, key=key, value=value, headers=headers) is None:
                    counts[id(builder)] = entry[1]
                    builder = producer.create_batch()
                    entry[0], entry[1] = builder, 0
                    order.append((tp, builder, rec, None))
                    index = 0
                    if builder.append(timestamp=rec.timestamp_ms, key=key, value=value, headers=headers) is None:
                        raise ValueError("the record does not fit in an empty batch")
            except (AssertionError, TypeError, ValueError, KafkaError) as exc:
                raise ProduceError(f"cannot send a record to topic {topic!r}: {exc!r}; record: {rec!r:.300}") from exc
            if slots is not None:
                slots.append((builder, index))  # the builder stands in for its future until submitted
            entry[1] += 1
        for builder, n in open_batches.values():
            counts[id(builder)] = n
        sent: list[SentBatch] = []
        futures: dict[int, asyncio.Future[Any]] = {}
        send_batch = producer.send_batch
        try:
            for tp, builder, first, fut in order:
                topic, partition = tp
                if fut is None:
                    # Left open: the next chunk's records for this partition may join it until
                    # the sender takes it (after linger_ms, or at once when it is full).
                    try:
                        fut = await send_batch(builder, topic, partition=partition)
                    except KafkaError as exc:
                        raise ProduceError(
                            f"cannot send a batch of {builder.record_count()} records to {topic}-{partition}: "
                            f"{exc!r}; its first record: {first!r:.300}"
                        ) from exc
                    last[tp] = (builder, fut)
                futures[id(builder)] = fut
                n = counts.get(id(builder), 0)  # none when a batch joined was full already
                if n:
                    sent.append((first, fut, n, partition))
        except BaseException:
            # The caller never sees these batches: whatever becomes of them is reported by this error.
            for batch in sent:
                batch[1].add_done_callback(_seen)
            raise
        if slots is not None:
            start = len(slots) - len(records)
            for i in range(start, len(slots)):
                builder, index = slots[i]
                slots[i] = (futures[id(builder)], index)
        return sent


def _queued(producer: Any, tp: tuple[str, int], builder: Any) -> bool:
    """``builder`` is still the last batch of ``tp`` waiting in the producer (not taken by its sender).

    Only then may records join it: once the sender has taken a batch it numbers the next
    batch's records after this one's count (idempotent and transactional producers), so a
    record added between that and the batch's encoding would share a sequence number with
    the next batch, and the broker would drop the later one as a duplicate.
    """
    if builder.closed():
        return False
    queued = producer._message_accumulator._batches.get(tp)  # keyed by TopicPartition, a tuple
    return bool(queued) and queued[-1]._builder is builder


def _seen(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def record_offset(meta: Any, index: int) -> int:
    """The offset of the ``index``-th record of a batch whose delivery gave ``meta`` (-1 when unknown)."""
    if meta is None or meta.offset is None or meta.offset < 0:
        return -1
    return int(meta.offset) + index


def delivery_error(rec: ProducerRecord[Any, Any], exc: BaseException, partition: int | None = None) -> ProduceError:
    if partition is None:
        partition = rec.partition
    where = rec.topic if partition is None else f"{rec.topic}-{partition}"
    err = ProduceError(f"producing to {where} failed: {exc!r}")
    err.__cause__ = exc
    return err
