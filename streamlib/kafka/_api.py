"""The public factories: ``KafkaSource``, ``KafkaSink``, ``KafkaFlow`` and ``Committer``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import TopicPartition

from .._dsl.flow import Flow
from .._dsl.keep import Keep
from .._dsl.module import Module
from .._dsl.sink import Sink
from .._dsl.source import Source
from ._committer import CommitterSettings, CommitterStage
from ._consumer import Topics
from ._control import Control
from ._records import CommittableRecord, KafkaRecord, ProducerRecord, ProducerResult
from ._settings import ConsumerSettings, ProducerSettings
from ._sink import ProducerFlowStage, ProducerSinkStage
from ._source import ConsumerSourceStage, TimestampedConsumerSourceStage
from ._watermarks import RecordTimeWatermarks


def _source_stage(
    settings: ConsumerSettings,
    topics: Topics,
    committable: bool,
    watermarks: RecordTimeWatermarks | None,
    drain_timeout: float,
) -> ConsumerSourceStage:
    if watermarks is None:
        return ConsumerSourceStage(settings, topics, committable=committable, watermarks=None,
                                   drain_timeout=drain_timeout)
    return TimestampedConsumerSourceStage(settings, topics, committable=committable, watermarks=watermarks,
                                          drain_timeout=drain_timeout)


class KafkaSource:
    """Sources that consume Kafka topics; each materializes a :class:`Control`."""

    @staticmethod
    def plain(
        settings: ConsumerSettings, topics: Topics, *, watermarks: RecordTimeWatermarks | None = None
    ) -> Source[KafkaRecord[Any, Any], Control]:
        """Emit the records of ``topics`` (names, or explicit ``TopicPartition`` s); never commits offsets.

        Emits each partition's fetched batch as one chunk, as soon as it arrives.
        Backpressures by not fetching, and pauses its partitions when downstream stays full.
        Completes when ``control.stop()`` is called; fails on a broker error or,
        with policy ``"fail"``, on a record that cannot be deserialized. With
        ``watermarks``, record time is the event time of windows downstream.

        >>> control, done = KafkaSource.plain(settings, "events").map(handle).to_mat(Sink.ignore(), Keep.both).run()
        """
        return Source(Module.of(_source_stage(settings, topics, False, watermarks, 0.0)))

    @staticmethod
    def committable(
        settings: ConsumerSettings,
        topics: Topics,
        *,
        watermarks: RecordTimeWatermarks | None = None,
        drain_timeout: float = 5.0,
    ) -> Source[CommittableRecord[Any, Any], Control]:
        """Emit :class:`CommittableRecord` s, whose offsets a ``Committer.sink()`` commits once processed.

        At-least-once: an offset is committed only after its record went through
        the stream, so after a crash processing resumes at or before the first
        unprocessed record. Needs ``settings.group_id``. On ``control.stop()`` the
        stream completes and the consumer stays open until the emitted offsets are
        committed (at most ``drain_timeout`` seconds). Chunks and backpressure as in ``plain``.

        >>> KafkaSource.committable(settings, "in").map(lambda r: ProducerRecord("out", r.value, passthrough=r.committable_offset)).to(KafkaSink.committable(producer_settings))
        """
        return Source(Module.of(_source_stage(settings, topics, True, watermarks, drain_timeout)))

    @staticmethod
    def partitioned(
        settings: ConsumerSettings, topics: Topics, *, watermarks: RecordTimeWatermarks | None = None
    ) -> Source[tuple[TopicPartition, Source[KafkaRecord[Any, Any], None]], Control]:
        """Emit ``(partition, sub_source)`` for each assigned partition; the sub-source emits its records.

        A sub-source completes when its partition is revoked (or the source stops),
        so order and any per-partition state stay with one sub-stream. A slow
        sub-stream pauses only its own partition. Each sub-source can run once.

        >>> async def per_partition(pair): tp, records = pair; await records.run_with(Sink.foreach(print))
        >>> KafkaSource.partitioned(settings, "events").to(Sink.foreach(per_partition))
        """
        from ._partitioned import PartitionedSourceStage

        return Source(Module.of(PartitionedSourceStage(settings, topics, watermarks=watermarks)))


class KafkaSink:
    """Sinks that produce to Kafka; each materializes a future completed when all is delivered."""

    @staticmethod
    def producer(settings: ProducerSettings, topic: str | None = None) -> Sink[Any, asyncio.Future[None]]:
        """Produce each :class:`ProducerRecord` (or, with ``topic``, each bare value to that topic).

        Backpressures while the producer's buffer is full or ``settings.max_in_flight``
        records await acknowledgement. Completes after every record is acknowledged;
        fails with ``ProduceError`` (naming the topic) when a delivery fails.

        >>> await Source.from_iterable([b"a", b"b"]).run_with(KafkaSink.producer(settings, topic="letters"))
        """
        return Sink(Module.of(ProducerSinkStage(settings, topic)))

    @staticmethod
    def committable(
        settings: ProducerSettings,
        committer: CommitterSettings | None = None,
        topic: str | None = None,
    ) -> Sink[Any, asyncio.Future[None]]:
        """Produce each record, then commit its ``passthrough`` offset once it is delivered.

        Takes ``ProducerRecord`` (with ``passthrough=record.committable_offset``),
        ``ProducerMessage`` (several records, one pass-through) or a bare
        ``CommittableOffset`` / ``CommittableRecord`` (nothing to produce, just commit).
        At-least-once end to end. Commits in batches (``CommitterSettings``).
        """
        flow: Flow[Any, Any, None] = Flow(Module.of(ProducerFlowStage(settings, topic, results=False)))
        return flow.to_mat(Committer.sink(committer), Keep.right)


class KafkaFlow:
    """Flows that produce to Kafka."""

    @staticmethod
    def producer(settings: ProducerSettings, topic: str | None = None) -> Flow[Any, ProducerResult[Any, Any], None]:
        """Produce each record and emit its :class:`ProducerResult` once delivered, in input order.

        Emits when the oldest record in flight is acknowledged (results of a chunk
        go out together). Backpressures like ``KafkaSink.producer``. Signals
        (watermarks, barriers) follow the results of the records before them.
        """
        return Flow(Module.of(ProducerFlowStage(settings, topic)))


class Committer:
    """Commits consumer offsets of committable sources."""

    @staticmethod
    def sink(settings: CommitterSettings | None = None) -> Sink[Any, asyncio.Future[None]]:
        """Commit the offset of each element (``CommittableRecord``, ``CommittableOffset`` or producer result).

        Commits ``offset + 1`` per partition every ``max_batch`` elements or
        ``max_interval`` seconds, one commit in flight per source; commits the
        rest when the stream completes. Never backpressures on a commit.

        >>> KafkaSource.committable(settings, "in").map(process).to(Committer.sink())
        """
        return Sink(Module.of(CommitterStage(settings or CommitterSettings())))
