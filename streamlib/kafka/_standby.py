"""Standby replicas: warm copies of other instances' task stores, kept by tailing their changelogs.

With ``KafkaApp(num_standby_replicas=k)`` the group assignment (``_assign.py``)
gives each task k standby members besides its active owner. For each of its
standby tasks a member keeps the task's store in its own state directory (the
very store the task uses when it is active here) and tails the task's changelog
partitions into it, ``read_committed`` (only what committed checkpoints wrote).
About once a second it commits a local checkpoint of that store whose meta is
what a restore reads (``_changelog.py``): the task's Kafka checkpoint id as last
seen committed, and per table the next changelog offset not applied yet.

When the group later makes this member the task's active owner, the standby
stops first (one last local checkpoint), then the task opens as always: its
restore finds a local store at or behind Kafka's committed state and replays
only the changelog records after the standby's position. There is one restore
path; a standby only keeps its starting point close to the end.

One consumer without a group serves every standby task of an app run (Kafka
Streams' restore consumer in standby mode); a standby processes nothing: no
producer, no transaction, no sub-stream. With a single instance, or
``num_standby_replicas=0``, there is nothing to do and nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.structs import TopicPartition

from .._metrics.registry import Sample, sample
from .._state.store import StateStore
from ._changelog import apply_records, changelog_consumer, checkpoint_replayed, local_start

if TYPE_CHECKING:
    from ._app import _AppRun

log = logging.getLogger("streamlib.kafka")


@dataclass
class _Standby:
    """One standby task: its store and how far each of its changelogs has been applied."""

    partition: int
    name: str
    store: StateStore
    #: Table -> next changelog offset not applied (absent: from the beginning).
    positions: dict[str, int]
    #: The task's committed Kafka checkpoint id as last read (None: nothing committed yet).
    kafka_checkpoint: int | None
    dirty: bool = False
    tps: dict[TopicPartition, str] = field(default_factory=dict)


class StandbyTasks:
    """The standby tasks of one app run (see the module docstring)."""

    #: Seconds between local checkpoints of the standby stores (and looks for new changelog topics).
    CHECKPOINT_EVERY = 1.0

    def __init__(self, run: _AppRun) -> None:
        self.run = run
        self.tasks: dict[int, _Standby] = {}
        #: Changelog records applied to standby stores by this run.
        self.records = 0
        #: Standby task numbers from the last group assignment (set by the assignor).
        self.assigned: set[int] = set()
        self._wanted: set[int] = set()
        self._lock = asyncio.Lock()
        self._consumer: Any = None
        self._loop: asyncio.Task[None] | None = None
        self._changelogs: dict[str, str] = {}
        self._by_tp: dict[TopicPartition, _Standby] = {}
        self._stopped = False
        run.control.registry.add_collector(self.collect)

    def on_assignment(self, tasks: set[int]) -> None:
        """The group assigned these standby tasks to this member (called by the assignor)."""
        self.assigned = set(tasks)

    async def update(self, active: set[int]) -> None:
        """Keep standbys for the assigned standby tasks not in ``active`` (the tasks open here).

        Standbys no longer wanted (e.g. now active here) stop at once with a last
        checkpoint and close their stores; new ones are started by the tail loop.
        """
        wanted = self.assigned - active
        async with self._lock:
            self._wanted = wanted
            gone = [n for n in self.tasks if n not in wanted]
            for n in gone:
                await self._drop(n)
            if gone:
                self._reassign()
        if wanted and self._loop is None and not self._stopped:
            self._loop = asyncio.ensure_future(self._tail())

    async def stop(self) -> None:
        """Stop tailing; every standby store gets a last checkpoint and is closed."""
        self._stopped = True
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            await asyncio.wait([loop])
        try:
            async with self._lock:
                for n in list(self.tasks):
                    await self._drop(n)
        finally:
            self.run.control.registry.remove_collector(self.collect)
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await consumer.stop()

    # -- the tail loop --------------------------------------------------------------

    async def _tail(self) -> None:
        run = self.run
        try:
            self._consumer = consumer = changelog_consumer(run.consumer_settings.consumer_kwargs())
            await consumer.start()
            due = 0.0
            while True:
                async with self._lock:
                    now = time.monotonic()
                    if now >= due:
                        due = now + self.CHECKPOINT_EVERY
                        await self._refresh()
                    if self._by_tp:
                        batches = await consumer.getmany(*self._by_tp, timeout_ms=200, max_records=10_000)
                        for tp, records in batches.items():
                            sb = self._by_tp.get(tp)
                            if sb is not None and records:
                                table = sb.tps[tp]
                                self.records += apply_records(sb.store, table, records, run.store_header(table))
                        for tp, sb in self._by_tp.items():
                            pos = await consumer.position(tp)
                            table = sb.tps[tp]
                            if sb.positions.get(table) != pos:
                                sb.positions[table] = pos
                                sb.dirty = True
                if not self._by_tp:
                    await asyncio.sleep(0.2)  # no changelog to tail yet: the tasks have not written state
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a standby is an optimisation: the app goes on without it
            log.warning("standby replicas stopped (%r): tasks that move here restore from their local "
                        "checkpoints or from the beginning of their changelogs", exc)

    async def _refresh(self) -> None:
        """Start wanted standbys, pick up new changelog topics, checkpoint what was applied."""
        run = self.run
        changelogs = await run.changelogs()
        changed = changelogs != self._changelogs
        self._changelogs = changelogs
        new = sorted(self._wanted - set(self.tasks))
        if new or self.tasks:
            tps = [TopicPartition(t, n) for n in sorted(set(self.tasks) | set(new)) for t in run.topics]
            committed = await run.committed(tps)
            for n in new:
                self.tasks[n] = self._open(n, _checkpoint_of(committed, n))
                changed = True
            for n, sb in self.tasks.items():
                cid = _checkpoint_of(committed, n)
                if cid is not None:
                    sb.kafka_checkpoint = cid
        if changed:
            self._reassign()
        for sb in self.tasks.values():
            self._checkpoint(sb)

    def _open(self, n: int, kafka_checkpoint: int | None) -> _Standby:
        run = self.run
        old = run.store_for(n)
        store, positions, usable = local_start(old, lambda: run.new_store(n, old), kafka_checkpoint)
        name = run.task_name(n)
        log.info("standby replica of %s: tailing its changelogs from %s", name,
                 "its local checkpoint" if usable else "the beginning")
        return _Standby(n, name, store, positions, kafka_checkpoint, dirty=not usable)

    def _reassign(self) -> None:
        """Point the consumer at the changelog partitions of every standby task, at their positions."""
        by_tp: dict[TopicPartition, _Standby] = {}
        for sb in self.tasks.values():
            sb.tps = {TopicPartition(topic, sb.partition): table for table, topic in self._changelogs.items()}
            for tp in sb.tps:
                by_tp[tp] = sb
        self._by_tp = by_tp
        consumer = self._consumer
        if consumer is None:
            return
        consumer.assign(list(by_tp))
        for tp, sb in by_tp.items():
            consumer.seek(tp, sb.positions.get(sb.tps[tp], 0))  # below the log start: reset to the earliest

    def _checkpoint(self, sb: _Standby) -> None:
        if sb.dirty:
            checkpoint_replayed(sb.store, sb.kafka_checkpoint, sb.positions)
            sb.dirty = False

    async def _drop(self, n: int) -> None:
        sb = self.tasks.pop(n)
        for tp in sb.tps:
            self._by_tp.pop(tp, None)
        try:
            if self._consumer is not None and sb.dirty:
                committed = await self.run.committed([TopicPartition(t, n) for t in self.run.topics])
                cid = _checkpoint_of(committed, n)
                if cid is not None:
                    sb.kafka_checkpoint = cid
            self._checkpoint(sb)
            log.info("standby replica of %s stopped at changelog offsets %s", sb.name, sb.positions)
        finally:
            sb.store.close()

    # -- metrics --------------------------------------------------------------------

    def collect(self) -> Iterator[Sample]:
        app = self.run.application_id
        yield sample("standby-tasks", len(self.tasks), "gauge", "Tasks kept here as standby replicas", app=app)
        yield sample("standby-records-total", self.records, "counter",
                     "Changelog records applied to standby replicas", app=app)
        consumer = self._consumer
        for n, sb in sorted(self.tasks.items()):
            lag = 0
            for tp, table in sb.tps.items():
                end = None if consumer is None else consumer.last_stable_offset(tp)
                if end is None or end < 0:
                    end = None if consumer is None else consumer.highwater(tp)
                if end is not None:
                    lag += max(0, end - sb.positions.get(table, 0))
            yield sample("standby-records-lag", lag, "gauge",
                         "Changelog records a standby replica has not applied yet (as of its last fetch)",
                         app=app, task=n)


def _checkpoint_of(committed: dict[TopicPartition, tuple[int | None, int | None]], n: int) -> int | None:
    """Task ``n``'s committed Kafka checkpoint id (one transaction commits all its partitions with it)."""
    ids = [cid for tp, (_off, cid) in committed.items() if tp.partition == n and cid is not None]
    return max(ids) if ids else None
