"""The partitioned source: one sub-source per assigned partition.

One consumer feeds every partition's *lane*: a bounded channel that is the
sub-source's output channel (the sub-source materializes straight onto it, no
extra task). The fetch loop hands each partition's batch to its lane with
``put_nowait``; when a lane is full its partition is paused and the batch is
held (one per lane) until the lane has room, then the partition resumes. So a
slow sub-stream stops only its own partition, and memory stays bounded.

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
from ..stage import AsyncLogic, Stage
from ._consumer import ConsumerRun, Topics, parse_topics
from ._control import Control
from ._decode import RecordDecoder
from ._settings import ConsumerSettings
from ._watermarks import RecordTimeWatermarks

#: Poll timeout (seconds) while some lane is full, to notice room quickly.
_HELD_POLL = 0.01


class _Lane:
    __slots__ = ("tp", "channel", "held", "materialized", "max_ts", "emitted_wm", "bound_ms")

    def __init__(self, tp: TopicPartition, capacity: int, bound_ms: int | None) -> None:
        self.tp = tp
        self.channel = Channel(capacity, f"{tp.topic}-{tp.partition}")
        self.held: list[Any] = []
        self.materialized = False
        self.max_ts: int | None = None
        self.emitted_wm: int | None = None
        self.bound_ms = bound_ms

    def offer(self, item: list[Any] | Signal) -> bool:
        """Queue ``item`` for the sub-stream; False when it had to be held (lane full)."""
        if self.held or not self.channel.put_nowait(item):
            self.held.append(item)
            return False
        return True

    def drain_held(self) -> bool:
        """Move held items into the channel while it has room; True when nothing is held any more."""
        while self.held:
            if self.channel.cancelled:
                self.held.clear()
                break
            if not self.channel.put_nowait(self.held[0]):
                return False
            self.held.pop(0)
        return True

    def watermark(self, batch_max_ts: int) -> Watermark | None:
        if self.bound_ms is None:
            return None
        if self.max_ts is None or batch_max_ts > self.max_ts:
            self.max_ts = batch_max_ts
        wm = self.max_ts - self.bound_ms
        if self.emitted_wm is None or wm > self.emitted_wm:
            self.emitted_wm = wm
            return Watermark(wm)
        return None

    def end(self, signal: Signal = END) -> None:
        self.held.clear()
        self.channel.put_final(signal)


class _LaneSourceStage(Stage):
    inputs = 0
    outputs = 1

    def __init__(self, lane: _Lane) -> None:
        self.lane = lane
        self.name = f"kafka_partition({lane.tp.topic}-{lane.tp.partition})"

    def materialize(self, ctx: RunContext) -> tuple[ChannelSourceLogic, None]:
        if self.lane.materialized:
            raise RuntimeError(f"the sub-source of {self.lane.tp.topic}-{self.lane.tp.partition} can run only once")
        self.lane.materialized = True
        return ChannelSourceLogic(self.lane.channel), None


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
        self.lanes: dict[TopicPartition, _Lane] = {}
        self.new_lanes: list[_Lane] = []
        wm = stage.watermarks
        self.bound_ms = None if wm is None else int(wm.out_of_orderness * 1000)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        metrics = self.control.metrics
        metrics.rebalances += 1
        metrics.assigned |= partitions
        for tp in sorted(partitions):
            if tp not in self.lanes:
                lane = _Lane(tp, self.ctx.channel_capacity, self.bound_ms)
                self.lanes[tp] = lane
                self.new_lanes.append(lane)

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.control.metrics.assigned -= partitions
        for tp in partitions:
            lane = self.lanes.pop(tp, None)
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
            signal: Signal = END if failure is None or not isinstance(failure, Exception) else Failure(failure)
            for lane in self.lanes.values():
                lane.end(signal)
            for lane in self.new_lanes:
                lane.end(signal)
            self.lanes.clear()
            try:
                await self.close_consumer()
            finally:
                self.control._set_stopped()

    async def _loop(self, consumer: Any, out: Channel) -> None:
        control = self.control
        metrics = control.metrics
        decoder = RecordDecoder(self.settings)
        poll_ms = int(self.settings.poll_timeout * 1000)
        max_chunk = self.ctx.max_chunk
        while not control.stop_requested:
            if self.new_lanes:
                fresh, self.new_lanes = self.new_lanes, []
                await out.put([(lane.tp, Source(Module.of(_LaneSourceStage(lane)))) for lane in fresh])
            held = False
            for lane in self.lanes.values():
                if lane.held:
                    if lane.drain_held():
                        if lane.tp in consumer.assignment():
                            consumer.resume(lane.tp)
                    else:
                        held = True
            timeout = min(poll_ms, int(_HELD_POLL * 1000)) if held else poll_ms
            batches = await consumer.getmany(timeout_ms=timeout, max_records=max_chunk)
            for tp, raws in batches.items():
                lane = self.lanes.get(tp)
                if lane is None or not raws:
                    continue
                if lane.channel.cancelled:
                    consumer.pause(tp)  # nobody reads this partition's sub-stream any more
                    continue
                records, dead = decoder.decode(raws)
                if dead:
                    await self.send_dead_letters(dead)
                    metrics.dead_lettered = decoder.dead_lettered
                metrics.skipped = decoder.skipped
                ok = True
                if records:
                    metrics.records += len(records)
                    metrics.chunks += 1
                    ok = lane.offer(records)
                wm = lane.watermark(max(r.timestamp for r in raws))
                if wm is not None:
                    ok = lane.offer(wm) and ok
                if not ok:
                    metrics.pauses += 1
                    consumer.pause(tp)
