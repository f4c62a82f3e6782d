"""Plain and committable Kafka sources: one consumer, one output channel.

The fetch loop calls ``getmany(max_records=max_chunk)`` and forwards each
partition's batch as one chunk at once (a chunk never waits to fill). Records
are deserialized on the way (see ``_decode.py``); dead letters are delivered
before anything that follows them is emitted.

Backpressure: ``await outlet.put(chunk)`` waits while downstream is full, and the
loop does not fetch meanwhile (aiokafka buffers at most one fetch per
partition). When downstream stays full longer than ``pause_after`` seconds the
source pauses every assigned partition, which also drops that prefetched data,
and keeps calling ``getmany`` once a second so the group does not evict it; it
resumes once there is room again.

Watermarks (optional): after each poll the per-partition tracker is advanced
and a ``Watermark`` follows the chunks when it moved (``_watermarks.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.structs import TopicPartition

from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.context import RunContext
from .._runtime.signals import END, Watermark
from .._time.watermarks import WithTimestamps
from ..stage import AsyncLogic, Stage
from ._committer import CommitHandle
from ._consumer import ConsumerRun, Topics, parse_topics
from ._control import Control
from ._decode import RecordDecoder
from ._lanes import PAUSE_AFTER
from ._wait import room_within
from ._settings import ConsumerSettings
from ._watermarks import RecordTimeWatermarks, WatermarkTracker

#: While paused, how often (seconds) the source polls to stay in its group.
KEEPALIVE = 1.0


class ConsumerSourceStage(Stage):
    inputs = 0
    outputs = 1

    def __init__(
        self,
        settings: ConsumerSettings,
        topics: Topics,
        *,
        committable: bool,
        watermarks: RecordTimeWatermarks | None,
        drain_timeout: float,
    ) -> None:
        names, explicit = parse_topics(topics)
        if committable and settings.group_id is None:
            raise ValueError("a committable Kafka source needs ConsumerSettings(group_id=...): offsets belong to a group")
        self.settings = settings
        self.topics = topics
        self.committable = committable
        self.watermarks = watermarks
        self.drain_timeout = drain_timeout
        shown = ",".join(names) if names else ",".join(f"{tp.topic}-{tp.partition}" for tp in explicit)
        self.name = f"kafka_{'committable' if committable else 'plain'}_source({shown})"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, Control]:
        control = Control()
        control._bind(ctx.loop)
        return _SourceLogic(self, ctx, control), control


def record_time(record: Any) -> int:
    """A record's event time: its Kafka timestamp (epoch ms)."""
    return record.timestamp  # type: ignore[no-any-return]


class TimestampedConsumerSourceStage(ConsumerSourceStage, WithTimestamps):
    """A consumer source with watermarks: windows and ``dedupe`` downstream take record time
    as event time without a ``with_timestamps`` of their own."""

    def __init__(self, settings: ConsumerSettings, topics: Topics, *, committable: bool,
                 watermarks: RecordTimeWatermarks, drain_timeout: float) -> None:
        super().__init__(settings, topics, committable=committable, watermarks=watermarks,
                         drain_timeout=drain_timeout)
        self.fn = record_time
        self.bound_ms = watermarks.bound_ms
        self.idle_timeout = watermarks.idle_seconds

    # A source, not a with_timestamps stage: it is one only to be found as the event time upstream.
    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, Control]:  # type: ignore[override]
        return ConsumerSourceStage.materialize(self, ctx)


class _SourceLogic(AsyncLogic, ConsumerRun):
    def __init__(self, stage: ConsumerSourceStage, ctx: RunContext, control: Control) -> None:
        ConsumerRun.__init__(self, stage.settings, stage.topics)
        self.stage = stage
        self.ctx = ctx
        self.control = control
        self.tracker = WatermarkTracker(stage.watermarks) if stage.watermarks is not None else None
        self.handle: CommitHandle | None = None

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        metrics = self.control.metrics
        metrics.assigned |= partitions
        metrics.rebalances += 1
        if self.tracker is not None:
            self.tracker.assigned(partitions, self.ctx.clock.now())

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        if self.handle is not None:
            await self.handle.flush_committers(partitions)
            self.handle.forget(partitions)
        self.control.metrics.assigned -= partitions
        if self.tracker is not None:
            self.tracker.revoked(partitions)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        try:
            consumer = await self.start_consumer()
            self.control._consumer = consumer
            if self.stage.committable:
                assert self.settings.group_id is not None
                self.handle = CommitHandle(consumer, self.settings.group_id)
            decoder = RecordDecoder(self.settings, self.handle)
            try:
                await self._fetch_loop(consumer, out, decoder)
            except DownstreamCancelled:
                if self.handle is None:
                    raise
            if self.handle is not None:
                out.put_final(END)
                await self.handle.wait_drained(self.stage.drain_timeout)
        finally:
            if self.handle is not None:
                self.handle.closed = True
            try:
                await self.close_consumer()
            finally:
                self.control._set_stopped()

    async def _fetch_loop(self, consumer: Any, out: Channel, decoder: RecordDecoder) -> None:
        control = self.control
        metrics = control.metrics
        clock = self.ctx.clock
        poll_ms = int(self.settings.poll_timeout * 1000)
        max_chunk = self.ctx.max_chunk
        tracker = self.tracker
        handle = self.handle
        sync = self.tracks_assignment
        while not control.stop_requested and not out.cancelled:
            if sync:
                await self.sync_assignment()
            if not out.has_room() and not await room_within(out, PAUSE_AFTER):
                batches = await self._paused_until_room(consumer, out)
            else:
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max_chunk)
            now = clock.now()
            for tp, raws in batches.items():
                if not raws:
                    continue
                records, dead = decoder.decode(raws)
                if dead:
                    await self.send_dead_letters(dead)
                    metrics.dead_lettered = decoder.dead_lettered
                metrics.skipped = decoder.skipped
                if records:
                    if handle is not None:
                        handle.emitted[tp] = records[-1].offset + 1
                    metrics.records += len(records)
                    metrics.chunks += 1
                    await out.put(records)
                if tracker is not None:
                    tracker.observe(tp, max(r.timestamp for r in raws), now)
            if tracker is not None:
                wm = tracker.advance(clock.now())
                if wm is not None:
                    await out.put(Watermark(wm))

    async def _paused_until_room(self, consumer: Any, out: Channel) -> dict[Any, list[Any]]:
        """Pause fetching until ``out`` has room; returns records that arrived meanwhile."""
        self.control.metrics.pauses += 1
        paused: set[TopicPartition] = set()
        got: dict[Any, list[Any]] = {}
        try:
            while not out.has_room() and not self.control.stop_requested:
                fresh = consumer.assignment() - paused
                if fresh:
                    consumer.pause(*fresh)
                    paused |= fresh
                # Polling paused partitions returns nothing but keeps the group membership alive.
                for tp, raws in (await consumer.getmany(timeout_ms=0)).items():
                    got.setdefault(tp, []).extend(raws)
                await room_within(out, KEEPALIVE)
        finally:
            still = paused & consumer.assignment()
            if still:
                consumer.resume(*still)
        return got
