"""The partitioned source: one sub-source per assigned partition.

One consumer feeds every partition's *lane* (``_lanes.py``): a bounded channel
that is the sub-source's output channel (the sub-source materializes straight
onto it, no extra task). A full lane holds back only its own partition, so a
slow sub-stream slows only its partition, and memory stays bounded.

Assignment creates lanes and emits ``(TopicPartition, Source)`` pairs on the
main output; revocation ends the lane (its sub-source completes after what it
already holds). Stopping or failing the main source ends or fails every lane.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.structs import TopicPartition

from .._dsl.module import Module
from .._dsl.source import Source
from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.materializer import ChannelSourceLogic
from .._runtime.signals import END, Failure, Signal, Watermark
from .._time.watermarks import WithTimestamps
from ..stage import AsyncLogic, Stage
from ._consumer import ConsumerRun, Topics, parse_topics
from ._control import Control
from ._decode import RecordDecoder
from ._lanes import Lane, LaneSet
from ._source import record_time
from ._settings import ConsumerSettings
from ._watermarks import RecordTimeWatermarks

class _LaneWatermark:
    """One partition's watermark: its largest record time minus the bound."""

    __slots__ = ("bound_ms", "max_ts", "emitted")

    def __init__(self, bound_ms: int) -> None:
        self.bound_ms = bound_ms
        self.max_ts: int | None = None
        self.emitted: int | None = None

    def advance(self, batch_max_ts: int) -> Watermark | None:
        if self.max_ts is None or batch_max_ts > self.max_ts:
            self.max_ts = batch_max_ts
        wm = self.max_ts - self.bound_ms
        if self.emitted is None or wm > self.emitted:
            self.emitted = wm
            return Watermark(wm)
        return None


class _LaneSourceStage(Stage):
    inputs = 0
    outputs = 1

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.materialized = False
        self.name = f"kafka_partition({lane.tp.topic}-{lane.tp.partition})"

    def materialize(self, ctx: RunContext) -> tuple[ChannelSourceLogic, None]:
        if self.materialized:
            raise RuntimeError(f"the sub-source of {self.lane.tp.topic}-{self.lane.tp.partition} can run only once")
        self.materialized = True
        return ChannelSourceLogic(self.lane.channel), None


class _TimestampedLaneSourceStage(_LaneSourceStage, WithTimestamps):
    """A partition's sub-source with watermarks: record time is the event time downstream."""

    def __init__(self, lane: Lane, watermarks: RecordTimeWatermarks) -> None:
        _LaneSourceStage.__init__(self, lane)
        self.fn = record_time
        self.bound_ms = watermarks.bound_ms
        self.idle_timeout = None

    # A source, not a with_timestamps stage: it is one only to be found as the event time upstream.
    def materialize(self, ctx: RunContext) -> tuple[ChannelSourceLogic, None]:  # type: ignore[override]
        return _LaneSourceStage.materialize(self, ctx)


class PartitionedSourceStage(Stage):
    inputs = 0
    outputs = 1

    def __init__(self, settings: ConsumerSettings, topics: Topics, *, watermarks: RecordTimeWatermarks | None) -> None:
        names, explicit = parse_topics(topics)
        self.settings = settings
        self.topics = topics
        self.watermarks = watermarks
        shown = ",".join(names) if names else ",".join(f"{tp.topic}-{tp.partition}" for tp in explicit)
        self.name = f"kafka_partitioned_source({shown})"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, Control]:
        control = Control()
        control._bind(ctx.loop)
        return _PartitionedLogic(self, ctx, control), control


class _PartitionedLogic(AsyncLogic, ConsumerRun):
    def __init__(self, stage: PartitionedSourceStage, ctx: RunContext, control: Control) -> None:
        ConsumerRun.__init__(self, stage.settings, stage.topics)
        self.stage = stage
        self.ctx = ctx
        self.control = control
        self.lanes = LaneSet(ctx.clock)
        self.new_lanes: list[Lane] = []
        self.marks: dict[TopicPartition, _LaneWatermark] = {}
        wm = stage.watermarks
        self.bound_ms = None if wm is None else wm.bound_ms

    def _sub_source(self, lane: Lane) -> _LaneSourceStage:
        spec = self.stage.watermarks
        return _LaneSourceStage(lane) if spec is None else _TimestampedLaneSourceStage(lane, spec)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        metrics = self.control.metrics
        metrics.rebalances += 1
        metrics.assigned |= partitions
        for tp in sorted(partitions):
            if tp not in self.lanes.lanes:
                lane = Lane(tp, self.ctx.channel_capacity)
                self.lanes.lanes[tp] = lane
                self.new_lanes.append(lane)
                if self.bound_ms is not None:
                    self.marks[tp] = _LaneWatermark(self.bound_ms)

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.control.metrics.assigned -= partitions
        for tp in partitions:
            lane = self.lanes.lanes.pop(tp, None)
            self.marks.pop(tp, None)
            if lane is not None:
                lane.end()

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        failure: BaseException | None = None
        try:
            consumer = await self.start_consumer()
            self.control._consumer = consumer
            await self._loop(consumer, out)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            signal: Signal = Failure(failure) if isinstance(failure, Exception) else END
            self.lanes.end_all(signal)
            for lane in self.new_lanes:
                lane.end(signal)
            try:
                await self.close_consumer()
            finally:
                self.control._set_stopped()

    async def _loop(self, consumer: Any, out: Channel) -> None:
        control = self.control
        metrics = control.metrics
        clock = self.ctx.clock
        decoder = RecordDecoder(self.settings)
        poll_ms = int(self.settings.poll_timeout * 1000)
        max_chunk = self.ctx.max_chunk
        lanes = self.lanes.lanes
        sync = self.tracks_assignment
        while not control.stop_requested and not out.cancelled:
            if sync:
                await self.sync_assignment()
            if self.new_lanes:
                fresh, self.new_lanes = self.new_lanes, []
                await out.put([(lane.tp, Source(Module.of(self._sub_source(lane)))) for lane in fresh])
            batches = await self.lanes.poll(consumer, poll_ms, max_chunk)
            metrics.pauses = self.lanes.pauses
            if sync and any(tp not in lanes for tp in batches):
                await self.sync_assignment()  # assigned while getmany waited
            now = clock.now()
            for tp, raws in batches.items():
                lane = lanes.get(tp)
                if lane is None or not raws:
                    continue  # revoked meanwhile: the next owner reads these again
                if lane.channel.cancelled:
                    consumer.pause(tp)  # nobody reads this partition's sub-stream any more
                    continue
                records, dead = decoder.decode(raws)
                if dead:
                    await self.send_dead_letters(dead)
                    metrics.dead_lettered = decoder.dead_lettered
                metrics.skipped = decoder.skipped
                if records:
                    metrics.records += len(records)
                    metrics.chunks += 1
                    lane.offer(records, now)
                mark = self.marks.get(tp)
                if mark is not None:
                    wm = mark.advance(max(r.timestamp for r in raws))
                    if wm is not None:
                        lane.offer(wm, now)
