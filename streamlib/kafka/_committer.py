"""Committing consumer offsets in batches, after the records were processed.

A committable source gives each record a :class:`CommitHandle` (one per run of
the source: its consumer and group). The committer sink gathers the highest
offset per partition of every handle it sees and commits ``offset + 1`` when
``max_batch`` offsets have arrived or ``max_interval`` seconds have passed, with
at most one commit in flight per handle (a commit never stalls the stream). At
the end of the stream it commits what is left.

Rebalances: when the group takes partitions away, the handle asks every
committer that uses it to commit what it holds first, so the next owner starts
where this one stopped. Offsets of partitions no longer assigned are dropped
(their records will be read again by the new owner: at-least-once).

Stopping: a committable source that is stopped (or whose downstream completes,
e.g. after a ``take``) ends its stream, then keeps its consumer open until the
offsets of everything it emitted are committed, or every committer that used it
has finished, or ``drain_timeout`` passes; so the last commits do not find the
consumer closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import TopicPartition

from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage, fail_future
from ._records import CommitHandle, CommittableOffset, CommittableRecord, ProducerRecord, ProducerResult
from ._wait import get_within

__all__ = ["CommitHandle", "CommitterSettings", "CommitterStage", "offset_of"]


def offset_of(element: Any) -> CommittableOffset:
    """The committable offset an element carries, or a TypeError saying what it is."""
    if type(element) is CommittableRecord:
        return element.committable_offset
    if type(element) is CommittableOffset:
        return element
    if isinstance(element, ProducerResult):
        return offset_of(element.passthrough)
    if isinstance(element, CommittableRecord):
        return element.committable_offset
    if isinstance(element, CommittableOffset):
        return element
    passthrough = getattr(element, "passthrough", None)
    if passthrough is not None:
        return offset_of(passthrough)
    raise TypeError(
        "a committer takes CommittableRecord, CommittableOffset or a producer result whose passthrough is one, "
        f"got {type(element).__name__}: {element!r:.200}"
    )


@dataclass(frozen=True)
class CommitterSettings:
    """When the committer commits: every ``max_batch`` offsets or ``max_interval`` seconds."""

    max_batch: int = 1000
    max_interval: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {self.max_batch!r}")
        if not self.max_interval > 0:
            raise ValueError(f"max_interval must be positive, got {self.max_interval!r}")


class CommitterStage(Stage):
    inputs = 1
    outputs = 0
    name = "kafka_committer"

    def __init__(self, settings: CommitterSettings) -> None:
        self.settings = settings

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, asyncio.Future[None]]:
        fut: asyncio.Future[None] = ctx.new_future()
        return _CommitterLogic(self.settings, ctx, fut), fut


class _CommitterLogic(AsyncLogic):
    def __init__(self, settings: CommitterSettings, ctx: RunContext, fut: asyncio.Future[None]) -> None:
        self.settings = settings
        self.clock = ctx.clock
        self.fut = fut
        self.pending: dict[CommitHandle, dict[TopicPartition, int]] = {}
        self.count = 0
        self.in_flight: dict[CommitHandle, asyncio.Task[None]] = {}
        self.handles: set[CommitHandle] = set()
        self.error: BaseException | None = None

    def _add(self, chunk: list[Any]) -> None:
        # Records of one partition come in runs (a source emits a chunk per partition):
        # keep the run's highest offset and note it once per run, not once per element.
        handle: CommitHandle | None = None
        topic = ""
        partition = -1
        best = -1
        for x in chunk:
            off = x
            t = type(x)
            if t is not CommittableOffset:
                if t is ProducerRecord:
                    off = x.passthrough
                    if type(off) is not CommittableOffset:
                        off = offset_of(x)
                else:
                    off = offset_of(x)
            if off.partition == partition and off.handle is handle and off.topic == topic:
                if off.offset > best:
                    best = off.offset
                continue
            if handle is not None:
                self._note(handle, topic, partition, best)
            handle, topic, partition, best = off.handle, off.topic, off.partition, off.offset
        if handle is not None:
            self._note(handle, topic, partition, best)
        self.count += len(chunk)

    def _note(self, handle: CommitHandle, topic: str, partition: int, offset: int) -> None:
        """``offset`` of ``topic``-``partition`` was processed: commit ``offset + 1`` (or more) next."""
        per = self.pending.get(handle)
        if per is None:
            per = self.pending[handle] = {}
            if handle not in self.handles:
                self.handles.add(handle)
                handle.register(self)
        tp = TopicPartition(topic, partition)
        nxt = offset + 1
        if nxt > per.get(tp, -1):
            per[tp] = nxt

    def _start_commits(self) -> None:
        """Start a commit for every handle with pending offsets and no commit in flight."""
        for handle in list(self.pending):
            task = self.in_flight.get(handle)
            if task is not None and not task.done():
                continue
            offsets = self.pending.pop(handle)
            self.in_flight[handle] = asyncio.ensure_future(self._commit(handle, offsets))
        self.count = 0

    async def _commit(self, handle: CommitHandle, offsets: dict[TopicPartition, int]) -> None:
        try:
            await handle.commit(offsets)
        except Exception as exc:
            if self.error is None:
                self.error = exc

    async def _await_in_flight(self) -> None:
        tasks = [t for t in self.in_flight.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks)
        self.in_flight = {}
        if self.error is not None:
            raise self.error

    async def flush(self, handle: CommitHandle, partitions: set[TopicPartition]) -> None:
        """Commit now what is held for ``partitions`` of ``handle`` (a rebalance is coming)."""
        task = self.in_flight.get(handle)
        if task is not None and not task.done():
            await asyncio.wait([task])
        per = self.pending.get(handle)
        if not per:
            return
        mine = {tp: off for tp, off in per.items() if tp in partitions}
        for tp in mine:
            del per[tp]
        if mine:
            await handle.commit(mine)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        clock = self.clock
        interval = self.settings.max_interval
        max_batch = self.settings.max_batch
        due: float | None = None
        try:
            while True:
                if self.error is not None:
                    raise self.error
                item = inlet.get_nowait()
                if item is None:
                    if due is None:
                        item = await inlet.get()
                    else:
                        item = await get_within(inlet, due - clock.now())
                if type(item) is list:
                    self._add(item)
                    if due is None:
                        due = clock.now() + interval
                elif item is END:
                    self._start_commits()
                    await self._await_in_flight()
                    if self.pending:  # offsets that waited for a commit in flight
                        self._start_commits()
                        await self._await_in_flight()
                    if not self.fut.done():
                        self.fut.set_result(None)
                    return
                elif isinstance(item, Failure):
                    # Everything recorded so far was processed: committing it is safe.
                    self._start_commits()
                    await self._await_in_flight()
                    raise item.error
                if self.pending and (self.count >= max_batch or (due is not None and clock.now() >= due)):
                    self._start_commits()
                    due = None
        finally:
            for handle in self.handles:
                handle.unregister(self)
            for task in self.in_flight.values():
                if not task.done():
                    task.cancel()
            if self.in_flight:
                await asyncio.wait(list(self.in_flight.values()))

    def on_failure(self, error: BaseException) -> None:
        fail_future(self.fut, error)
