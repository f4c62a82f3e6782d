"""Per-partition lanes fed by one consumer, with backpressure per partition.

A :class:`Lane` is a bounded channel carrying one partition's records to the
sub-stream that processes them. :meth:`LaneSet.poll` is the one fetch step
shared by the partitioned source and the Kafka app:

* a batch that does not fit its lane is *held* (one per lane at most) and the
  lane's partition is left out of the next ``getmany`` calls (``getmany(*others)``),
  so its prefetched records stay in aiokafka's buffer (one fetch per partition)
  instead of piling up here;
* a lane still full after ``pause_after`` seconds gets its partition paused
  (which drops that prefetched data), and resumed once the lane has room;
* when every lane is full the step waits for room instead of fetching, and
  polls paused partitions now and then so the group keeps the consumer.
"""

from __future__ import annotations

from typing import Any

from aiokafka.structs import TopicPartition

from .._runtime.channel import Channel
from .._runtime.clock import Clock
from .._runtime.signals import END, Signal
from ._wait import any_room_within

#: Seconds a lane may stay full before its partition is paused.
PAUSE_AFTER = 0.5
#: Poll timeout (seconds) while some lane is full, to notice room quickly.
HELD_POLL = 0.01


class Lane:
    """One partition's channel, plus what did not fit in it yet."""

    __slots__ = ("tp", "channel", "held", "held_since", "paused", "closed")

    def __init__(self, tp: TopicPartition, capacity: int) -> None:
        self.tp = tp
        self.channel = Channel(capacity, f"{tp.topic}-{tp.partition}")
        self.held: list[Any] = []
        self.held_since = 0.0
        self.paused = False
        self.closed = False

    def offer(self, item: list[Any] | Signal, now: float) -> bool:
        """Queue ``item`` for the sub-stream; False when it is held (lane full)."""
        if self.held or not self.channel.put_nowait(item):
            if not self.held:
                self.held_since = now
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

    def end(self, signal: Signal = END) -> None:
        """No more records: the sub-stream completes (or fails) after what it already holds."""
        self.closed = True
        self.held.clear()
        self.channel.put_final(signal)


class LaneSet:
    """The lanes of one consumer, and the fetch step that respects their room."""

    def __init__(self, clock: Clock, pause_after: float = PAUSE_AFTER) -> None:
        self.lanes: dict[TopicPartition, Lane] = {}
        self.clock = clock
        self.pause_after = pause_after
        self.pauses = 0

    async def poll(self, consumer: Any, poll_ms: int, max_chunk: int) -> dict[TopicPartition, list[Any]]:
        """Fetch the next batches for lanes with room (waiting at most ``poll_ms``)."""
        now = self.clock.now()
        full: list[Lane] = []
        for lane in self.lanes.values():
            if not lane.held:
                continue
            if lane.drain_held():
                if lane.paused:
                    lane.paused = False
                    if lane.tp in consumer.assignment():
                        consumer.resume(lane.tp)
                continue
            full.append(lane)
            if not lane.paused and now - lane.held_since >= self.pause_after:
                lane.paused = True
                self.pauses += 1
                consumer.pause(lane.tp)
        if not full:
            return await consumer.getmany(timeout_ms=poll_ms, max_records=max_chunk)  # type: ignore[no-any-return]
        blocked = {lane.tp for lane in full}
        free = [tp for tp in consumer.assignment() if tp not in blocked]
        timeout_ms = min(poll_ms, int(HELD_POLL * 1000))
        if free:
            return await consumer.getmany(*free, timeout_ms=timeout_ms, max_records=max_chunk)  # type: ignore[no-any-return]
        # Every lane is full: wait for room; polling (paused partitions) keeps the membership alive.
        if not await any_room_within([lane.channel for lane in full], poll_ms / 1000):
            if all(lane.paused for lane in full):
                return await consumer.getmany(timeout_ms=0)  # type: ignore[no-any-return]
        return {}

    def end_all(self, signal: Signal = END) -> None:
        for lane in self.lanes.values():
            lane.end(signal)
        self.lanes.clear()
