"""One task of a Kafka app: partition n of every input, its sub-stream, state store, producer and commits.

All input topics of an app are co-partitioned: task ``n`` reads partition ``n``
of each of them (Kafka Streams' task model). Its sub-stream is::

    LaneSource(s)  ->  topology(task context)  ->  CommitSink

* :class:`LaneSourceStage` reads one or more of the task's lanes (raw records
  from the app's consumer), deserializes them (dead letters are queued for the
  sink with the checkpoint they belong to) and emits them; reading several
  lanes it takes next the batch with the smallest record time (Kafka Streams'
  ``PartitionGroup``). A topology returning a :class:`Flow` gets one such stage
  over every lane of the task; ``context.source(topic)`` gives one per input.
  Every lane source of a task is a barrier source of the task's store (a member
  of its checkpoint coordinator), and the task has one barrier trigger
  (:meth:`PartitionTask.tick`): every ``checkpoint_interval`` seconds, when
  something happened since the last checkpoint, it decides the next barrier
  id, on a grid whose period is the interval less the time recent commits
  took, so that a record's results commit at most about one interval after it
  arrived, and wakes every lane source, idle ones included. Each emits
  ``Barrier(id)`` before anything more, stages the positions of its lanes and
  the changelog positions as the checkpoint's meta, then waits until the sink
  has committed checkpoint ``id``: checkpoints of one task are in lock step, so
  the state staged at a barrier never includes effects of records after it,
  wherever the stateful operators are in the sub-stream. A topology joining
  several inputs aligns their barriers (a join, ``Merge``) before the sink.
* The user's topology: any flow (or source) ending in :class:`ProducerRecord` records;
  its stateful operators use ``context.store``.
* :class:`CommitSinkStage` produces output records. At ``Barrier(id)`` it
  commits: under exactly-once, the changelog writes of checkpoint ``id`` (from
  the store's commit hook), the dead letters, ``send_offsets_to_transaction``
  with the positions of all the task's partitions (and ``id`` as commit
  metadata) and ``commit_transaction``, all one transaction; under
  at-least-once, the same records are produced and flushed, then the consumer
  commits the offsets.

:class:`PartitionTask` holds what these stages share for one attempt of one
task; the app makes a new one each time the task is (re)opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from .._runtime.channel import Channel, wait_any
from .._runtime.context import RunContext
from .._runtime.signals import END, Barrier, Failure, Signal, Watermark
from .._state.checkpoint import RunCheckpoints, attach
from .._metrics.registry import WindowedStat
from .._state.store import StateStore
from ..stage import AsyncLogic, Stage
from ._changelog import META_CHANGELOG, META_KAFKA, STORE_HEADER, ChangelogBuffer
from ._decode import DeadLetterRecord, RecordDecoder
from ._errors import TransactionError
from ._lanes import Lane
from ._operations import note_committed
from ._produce import RecordSender, Slot, delivery_error, record_offset
from ._records import ProducerRecord
from ._settings import ConsumerSettings, ProducerSettings
from ._wait import within

log = logging.getLogger("streamlib.kafka")


@dataclass
class AppMetrics:
    """Counters of one app run, over all its partitions.

    * ``records``: input records *processed*: read by a partition's sub-stream,
      through the topology, and covered by a checkpoint that committed (under
      exactly-once: its outputs, state changes and offset in one committed
      transaction; under at-least-once: outputs flushed, then the offset
      committed). Skipped and dead-lettered records count too. A record read
      again after a recovery (its first processing never committed) counts once.
    * ``fetched``: records the consumer handed to open partitions, re-reads
      included (it runs ahead of ``records`` by what is in flight).
    * ``committed``: per assigned partition, the committed offset (the next one
      to read), from the group when the partition opened, then from each commit.
    * ``end_offsets``: per assigned partition, the end of the input as the
      consumer last saw it in a fetch response (the high-water mark; under
      ``read_committed`` the last stable offset). ``lag`` is the difference.
    """

    commits: int = 0
    records: int = 0
    fetched: int = 0
    full_restores: int = 0
    partial_restores: int = 0
    restored_records: int = 0
    recoveries: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    #: Input records the topic deleted (retention) before they were read: below the committed
    #: offset when a task opened, or skipped when a lagging consumer fell behind the log start
    #: (each case logged as a WARNING).
    deleted_unread: int = 0
    changelog_records: int = 0
    assigned: set[TopicPartition] = field(default_factory=set)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    end_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    #: Milliseconds each checkpoint commit took (``commit-latency-avg/max``).
    commit_latency: WindowedStat = field(default_factory=WindowedStat)
    #: Milliseconds from input record times to the commit of their results (``record-e2e-latency-*``).
    e2e_latency: WindowedStat = field(default_factory=WindowedStat)
    #: Per partition (with ``watermarks=``): its watermark in epoch ms (``watermark-lag``).
    watermarks: dict[TopicPartition, int] = field(default_factory=dict)
    #: Per assigned partition being restored: changelog records left to replay.
    restore_remaining: dict[TopicPartition, int] = field(default_factory=dict)
    #: Per partition: (end offset, first and last record time) of fetched batches not committed yet.
    pending_times: dict[TopicPartition, Any] = field(default_factory=dict, repr=False)

    @property
    def lag(self) -> dict[TopicPartition, int]:
        """Per partition with a known end: records (offsets) between the committed offset and the end."""
        ends = self.end_offsets
        return {tp: max(0, ends[tp] - off) for tp, off in self.committed.items() if tp in ends}


class AppRunView(Protocol):
    """What a partition's sub-stream uses of the app run that owns it."""

    application_id: str
    exactly_once: bool
    checkpoint_interval: float
    watermark_bound_ms: int | None
    consumer_settings: ConsumerSettings
    producer_settings: ProducerSettings
    output_topic: str | None
    metrics: AppMetrics

    async def changelog_topic(self, table: str) -> str: ...

    def store_header(self, table: str) -> bytes: ...

    async def commit_offsets(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None: ...

    def check_gap(self, task: str, tp: TopicPartition, expected: int, first: int) -> None: ...


@dataclass
class PartitionContext:
    """What a topology gets for one task (partition n of every input): where it is and its state store.

    ``source(topic)`` is the task's partition of input ``topic`` as a :class:`Source`
    of :class:`KafkaRecord` (each input once), for topologies that treat their
    inputs apart (a join): such a topology returns a Source of outputs.

    >>> def topology(p: PartitionContext) -> Flow:
    ...     return Flow().key_by(lambda r: r.key).stateful_map(count, store=p.store).map(to_output)
    """

    application_id: str
    topics: tuple[str, ...]
    partition: int
    store: StateStore
    _sources: dict[str, Any] = field(default_factory=dict, repr=False)
    _taken: set[str] = field(default_factory=set, repr=False)

    @property
    def topic(self) -> str:
        """The input topic of a single-topic app."""
        if len(self.topics) != 1:
            raise ValueError(
                f"this task reads partition {self.partition} of {', '.join(self.topics)}: use .topics, or "
                ".source(topic) for one of them"
            )
        return self.topics[0]

    @property
    def topic_partition(self) -> TopicPartition:
        """The input partition of a single-topic app."""
        return TopicPartition(self.topic, self.partition)

    def source(self, topic: str) -> Any:
        """This task's partition of input ``topic``: a ``Source[KafkaRecord, None]``, usable once."""
        if topic not in self._sources:
            raise ValueError(f"{topic!r} is not an input of application {self.application_id!r} "
                             f"(inputs: {', '.join(self.topics)})")
        if topic in self._taken:
            raise ValueError(f"source({topic!r}) was already taken for this task: a partition is read once; "
                             "to use it twice, fan it out (also_to, Broadcast)")
        self._taken.add(topic)
        return self._sources[topic]

    def table(self, topic: str, *, value_type: Any = None, name: str | None = None,
              event_time: bool = False, idle_timeout: float | None = None) -> Any:
        """This task's partition of input ``topic`` (compacted, co-partitioned) as a ``Table``: the latest
        value per record key, a null value deleting it.

        Its rows live in this task's store (changelogged as table ``name``, by default the
        topic's name; ``value_type`` decodes restored values). The topic is read from the app's
        committed offset, from its beginning on the first start (``auto_offset_reset="earliest"``,
        the default). ``event_time=True``: the records' time is the table's event time, with
        watermarks that advance while the topic is quiet for ``idle_timeout`` seconds, so that a
        stream-table join ordered by event time is not held back by a table that rarely changes.
        """
        from .._table.table import Table

        source = self.source(topic)
        if event_time:
            source = source.with_timestamps(lambda r: r.timestamp, idle_timeout=idle_timeout)
        return Table.from_source(source, key=lambda r: r.key, value=lambda r: r.value, store=self.store,
                                 value_type=value_type, name=name or topic)


@dataclass
class PartitionTask:
    """Shared state of one attempt at running one task (partition ``partition`` of every input)."""

    app: AppRunView
    partition: int
    #: ``events-3`` (one input) or ``task 3`` (several): how logs and errors name the task.
    name: str
    store: StateStore
    buffer: ChangelogBuffer
    lanes: dict[TopicPartition, Lane]
    producer: Any
    start_offsets: dict[TopicPartition, int]
    changelog_positions: dict[str, int]
    #: Per checkpoint id: the position of each partition at its barrier.
    positions: dict[int, dict[TopicPartition, int]] = field(default_factory=dict)
    #: Per checkpoint id: how many input records it covers (counted as processed when it commits).
    counts: dict[int, int] = field(default_factory=dict)
    dead: list[tuple[int, list[DeadLetterRecord]]] = field(default_factory=list)
    sent: list[tuple[Any, Any]] = field(default_factory=list)
    #: Delivery futures of the checkpoint being committed (changelog writes, dead letters).
    checkpoint_sent: list[tuple[str, str, Any]] = field(default_factory=list)
    committed_id: int = 0
    #: Seconds the last commits took (from the barrier reaching the sink).
    commit_times: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    in_txn: bool = False
    #: Set by the source once everything it read before the lane ended is committed.
    closed: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    failure: BaseException | None = None
    commits: int = 0
    _waiters: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    # The barrier trigger (one per task, shared by its lane sources).
    #: The last barrier id decided (its lane sources emit every id up to it).
    pending: int = 0
    #: Input read since the last barrier was decided.
    active: bool = False
    due: float | None = None
    anchor: float | None = None
    begun: bool = False
    wakes: list[Channel] = field(default_factory=list)
    claimed: set[TopicPartition] = field(default_factory=set)
    ended: set[TopicPartition] = field(default_factory=set)

    @property
    def tps(self) -> list[TopicPartition]:
        return list(self.lanes)

    def begin(self, start_id: int, now: float) -> None:
        """A lane source started, at the store's restored checkpoint ``start_id``."""
        if not self.begun:
            self.begun = True
            self.pending = self.committed_id = start_id
            # Tasks' grids are shifted against each other so their commits do not all reach the
            # broker at the same moment.
            self.anchor = now + (self.partition * 0.6180339887 % 1.0) * self.app.checkpoint_interval

    def claim(self, lanes: Sequence[Lane]) -> None:
        for lane in lanes:
            if lane.tp in self.claimed:
                raise RuntimeError(f"the source of {lane.tp.topic}-{lane.tp.partition} can run only once")
            self.claimed.add(lane.tp)

    def tick(self, now: float, idle: bool = False) -> None:
        """Decide the next barrier when it is due and something happened; wake every lane source.

        Barriers fall on a grid (the last due time + multiples of the period), so a record
        waits at most one period for its barrier, even when it arrived during a commit. The
        period is the interval less what commits take lately: the interval bounds the time
        from a record to the commit of its results. ``idle``: a wait ended without input
        (output without input, from timers, is committed too).
        """
        if self.due is None:
            if self.active:
                interval = self.app.checkpoint_interval
                period = interval - self.commit_lead(interval)
                anchor = now if self.anchor is None else self.anchor
                self.due = anchor + (int((now - anchor) / period) + 1) * period
            elif idle and self.dirty:
                self.due = now
            else:
                return
        if now >= self.due:
            self.anchor, self.due = self.due, None
            self.decide()

    def decide(self) -> None:
        """A barrier now, if anything happened since the last one."""
        if self.active or self.dead or self.dirty:
            self.pending += 1
            self.active = False
            for wake in self.wakes:
                wake.put_nowait(_WAKE)

    def time_to_due(self, now: float) -> float:
        return self.app.checkpoint_interval if self.due is None else self.due - now

    def lanes_ended(self, tps: Sequence[TopicPartition]) -> None:
        """These lanes ended (revocation, stop): after the last one, a last barrier."""
        self.ended.update(tps)
        if len(self.ended) == len(self.lanes):
            self.decide()

    def close_if_done(self) -> bool:
        """True (and ``closed`` set) once every lane ended and everything read is committed."""
        if len(self.ended) == len(self.lanes) and self.committed_id >= self.pending:
            if not self.closed.done():
                self.closed.set_result(None)
            return True
        return False

    @property
    def dirty(self) -> bool:
        """Output was produced since the last commit (a transaction is open)."""
        return bool(self.sent) or self.in_txn

    async def wait_committed(self, checkpoint_id: int) -> None:
        if self.committed_id >= checkpoint_id:
            return
        if self.failure is not None:
            raise self.failure
        fut = self._waiters.get(checkpoint_id)
        if fut is None:
            fut = self._waiters[checkpoint_id] = asyncio.get_running_loop().create_future()
        await fut

    def _committed(self, checkpoint_id: int) -> None:
        self.committed_id = checkpoint_id
        for cid in [c for c in self._waiters if c <= checkpoint_id]:
            fut = self._waiters.pop(cid)
            if not fut.done():
                fut.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved here; the sink reports the error itself
        self._waiters.clear()

    # -- producing ----------------------------------------------------------

    async def ensure_txn(self) -> None:
        if self.app.exactly_once and not self.in_txn:
            try:
                await self.producer.begin_transaction()
            except IllegalOperation as exc:
                raise self._unusable(exc) from exc
            self.in_txn = True

    async def send(self, sender: RecordSender, element: Any) -> None:
        rec = sender.as_record(element)
        await self.ensure_txn()
        try:
            self.sent.append((rec, await sender.send(self.producer, rec)))
        except IllegalOperation as exc:
            raise self._unusable(exc) from exc

    async def send_chunk(self, sender: RecordSender, elements: list[Any]) -> None:
        """Produce a chunk's outputs as record batches (one or more per partition, in order)."""
        records = [sender.as_record(e) for e in elements]
        await self.ensure_txn()
        try:
            batches = await sender.send_batches(self.producer, records)
        except IllegalOperation as exc:
            raise self._unusable(exc) from exc
        self.sent.extend([(rec, fut) for rec, fut, _n, _p in batches])

    def _unusable(self, exc: BaseException) -> TransactionError:
        """The producer refuses to work (it was fenced or failed): say so, with the reason."""
        cause = _producer_error(self.producer)
        err = TransactionError(
            f"the producer of {self.name} (application {self.app.application_id!r}) "
            f"cannot be used any more: {cause or exc!r}"
        )
        err.__cause__ = cause or exc
        return err

    def commit_lead(self, interval: float) -> float:
        """How much earlier than the interval to start a checkpoint: recent commits' 90th percentile."""
        times = sorted(self.commit_times)
        if not times:
            return 0.0
        return min(times[int(len(times) * 0.9)], interval / 2)

    def discard(self) -> None:
        """This attempt is over: mark every delivery result as seen, now or when it fails.

        Called once the producer is closed; a delivery that fails later (or failed
        while the producer was closing) is reported by the fencing or failure it
        comes from, never as "Future exception was never retrieved".
        """
        for fut in [f for _rec, f in self.sent] + [f for _t, _topic, f in self.checkpoint_sent]:
            _mark_seen(fut)
        self.sent = []
        self.checkpoint_sent = []
        _producer_error(self.producer)

    async def commit(self, checkpoint_id: int) -> None:
        """Make checkpoint ``checkpoint_id`` durable in Kafka (see the module docstring)."""
        app = self.app
        positions: dict[TopicPartition, int] = {}
        for cid in sorted(c for c in self.positions if c <= checkpoint_id):
            positions.update(self.positions.pop(cid))
        records = 0
        for cid in [c for c in self.counts if c <= checkpoint_id]:
            records += self.counts.pop(cid)
        changelog = self.buffer.take_upto(checkpoint_id)
        dead = [d for cid, ds in self.dead if cid <= checkpoint_id for d in ds]
        self.dead = [(cid, ds) for cid, ds in self.dead if cid > checkpoint_id]
        if not positions and not changelog and not dead and not self.dirty:
            self._committed(checkpoint_id)
            return
        offsets = {tp: (position, str(checkpoint_id)) for tp, position in positions.items()}
        futures = self.checkpoint_sent
        try:
            ends, logged = await self._send_checkpoint(changelog, dead, futures)
            # Every record of the transaction delivered before it commits: aiokafka's
            # commit_transaction does not wait for batches still lingering or being retried,
            # which the broker then refuses after the commit marker (lost, with the offsets
            # committed). A failed delivery fails the checkpoint before anything commits.
            await self.producer.flush()
            for rec, fut in self.sent:
                if fut.exception() is not None:
                    raise delivery_error(rec, fut.exception())  # type: ignore[arg-type]
            for _table, topic, fut in futures:
                error = fut.exception()
                if error is not None:
                    raise TransactionError(f"writing to {topic} failed: {error!r}") from error
            if app.exactly_once:
                if offsets:
                    await self.producer.send_offsets_to_transaction(offsets, app.application_id)
                await self.producer.commit_transaction()
                self.in_txn = False
        except IllegalOperation as exc:
            raise self._unusable(exc) from exc
        except KafkaError as exc:
            raise TransactionError(
                f"committing checkpoint {checkpoint_id} of {self.name} "
                f"(application {app.application_id!r}) failed: {exc!r}"
            ) from exc
        self.sent = []
        self.checkpoint_sent = []
        for table, (fut, index) in ends.items():
            end = record_offset(fut.result(), index) + 1
            if end > self.changelog_positions.get(table, 0):
                self.changelog_positions[table] = end
        if not app.exactly_once and offsets:
            await app.commit_offsets(offsets)
        self.commits += 1
        metrics = app.metrics
        metrics.commits += 1
        metrics.records += records
        metrics.committed.update(positions)
        metrics.changelog_records += logged
        metrics.dead_lettered += len(dead)
        self._committed(checkpoint_id)

    async def _send_checkpoint(
        self, changelog: list[tuple[int, dict[str, Any]]], dead: list[DeadLetterRecord],
        futures: list[tuple[str, str, Any]],
    ) -> tuple[dict[str, Slot], int]:
        """Hand the checkpoint's changelog writes and dead letters to the producer as record batches.

        Each batch's future goes to ``futures`` as (table, or "" for dead letters, topic, future).
        Returns, per table, where its last record went (batch future, index), and how many
        changelog records were sent.
        """
        app = self.app
        await self.ensure_txn()
        partition = self.partition
        records: list[ProducerRecord[Any, Any]] = []
        last: dict[str, int] = {}  # table -> index of its last record in ``records``
        tables: dict[str, str] = {}  # changelog topic -> table
        for _cid, writes in changelog:
            for table, batch in writes.items():
                topic = await app.changelog_topic(table)
                tables[topic] = table
                header = [(STORE_HEADER, app.store_header(table))]
                records.extend([ProducerRecord(topic, value, key, partition, headers=header) for key, value in batch])
                if batch:
                    last[table] = len(records) - 1
        logged = len(records)
        records.extend([d.to_producer_record() for d in dead])
        if not records:
            return {}, 0
        slots: list[Slot] = []
        for rec, fut, _n, _partition in await RecordSender.plain(self.name).send_batches(self.producer, records, slots):
            futures.append((tables.get(rec.topic, ""), rec.topic, fut))
        return {table: slots[i] for table, i in last.items()}, logged


def _producer_error(producer: Any) -> BaseException | None:
    """The error that made a transactional producer unusable (and mark it as seen)."""
    manager = getattr(producer, "_txn_manager", None)
    waiter = getattr(manager, "_transaction_waiter", None)
    if waiter is not None and waiter.done() and not waiter.cancelled():
        return waiter.exception()  # type: ignore[no-any-return]
    return None


def _mark_seen(fut: Any) -> None:
    """Retrieve ``fut``'s exception now if it is done, else as soon as it is."""
    if fut.done():
        if not fut.cancelled():
            fut.exception()
    else:
        fut.add_done_callback(_mark_seen)


def fenced_error(producer: Any, failure: BaseException | None = None) -> ProducerFenced | None:
    """The ``ProducerFenced`` that ended this producer (from its own state or ``failure``'s causes)."""
    e: BaseException | None = _producer_error(producer)
    if isinstance(e, ProducerFenced):
        return e
    e = failure
    for _ in range(6):
        if e is None:
            return None
        if isinstance(e, ProducerFenced):
            return e
        e = e.__cause__
    return None


def producer_name(producer: Any) -> str:
    """``transactional id (epoch N)`` of a transactional producer, as logs name it."""
    manager = getattr(producer, "_txn_manager", None)
    tid = getattr(manager, "transactional_id", None)
    if tid is None:
        return "(idempotent producer)"
    epoch = getattr(manager, "producer_epoch", None)
    return f"{tid} (epoch {epoch})" if epoch is not None and epoch >= 0 else str(tid)


def reap_failed_batches(producer: Any) -> None:
    """Mark the errors of a failed producer's pending batches as seen.

    When its sender fails (e.g. fenced), aiokafka fails every pending batch,
    including internal futures nobody awaits, which would each log "Future
    exception was never retrieved" when collected.
    """
    _producer_error(producer)
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is None:
        return
    batches = [b for q in getattr(accumulator, "_batches", {}).values() for b in q]
    batches += list(getattr(accumulator, "_pending_batches", ()))
    for batch in batches:
        for fut in (getattr(batch, "future", None), getattr(batch, "_drain_waiter", None)):
            if fut is not None and fut.done() and not fut.cancelled():
                fut.exception()


# -- the barrier source ---------------------------------------------------------------


class _Wake(Signal):
    """Put into a lane source's wake channel when its task decided a barrier."""

    __slots__ = ()


_WAKE = _Wake()


class LaneSourceStage(Stage):
    inputs = 0
    outputs = 1
    emits_barriers = True  # a barrier source of the task's store

    def __init__(self, task: PartitionTask, lanes: Sequence[Lane]) -> None:
        self.task = task
        self.lanes = list(lanes)
        self.name = f"kafka_partition({','.join(f'{lane.tp.topic}-{lane.tp.partition}' for lane in self.lanes)})"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        self.task.claim(self.lanes)
        return _LaneSourceLogic(self.task, self.lanes, ctx), None


class _LaneSourceLogic(AsyncLogic):
    def __init__(self, task: PartitionTask, lanes: list[Lane], ctx: RunContext) -> None:
        self.task = task
        self.lanes = lanes
        self.clock = ctx.clock
        self.run_cp: RunCheckpoints = attach(task.store, ctx)
        self.member = self.run_cp.join("kafka-source")
        self.bound_ms = task.app.watermark_bound_ms
        self.wake = Channel(1, f"{self.member}-wake")
        task.wakes.append(self.wake)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        task = self.task
        app = task.app
        clock = self.clock
        wake = self.wake
        decoder = RecordDecoder(app.consumer_settings)
        start = self.run_cp.start
        task.begin(start.id if start is not None else 0, clock.now())
        emitted = task.pending  # barriers this source emitted (or the restored checkpoint)
        positions = {lane.tp: task.start_offsets[lane.tp] for lane in self.lanes}
        live = {lane.channel: lane.tp for lane in self.lanes}
        since = 0
        skipped = 0
        max_ts: dict[TopicPartition, int] = {}
        emitted_wm: int | None = None
        try:
            while True:
                while emitted < task.pending:  # the task decided a barrier: emit it before anything more
                    emitted += 1
                    task.positions.setdefault(emitted, {}).update(positions)
                    task.counts[emitted] = task.counts.get(emitted, 0) + since
                    since = 0
                    await out.put(Barrier(emitted))
                    self.run_cp.stage(
                        emitted, self.member,
                        meta={META_KAFKA: emitted, META_CHANGELOG: dict(task.changelog_positions)},
                    )
                    await task.wait_committed(emitted)
                if not live and task.close_if_done():
                    # Everything read is committed. The app cancels this sub-stream now (a
                    # clean stop: operators keep their state, nothing more is emitted).
                    await asyncio.get_running_loop().create_future()
                # A barrier decided while this source waited (or emitted) fills its wake channel:
                # _next then returns nothing, and the barrier goes out before the next item.
                item, tp = await _next(live, wake, task.time_to_due(clock.now()))
                if type(item) is list and item[0].offset < positions[tp]:
                    # Fetched before the seek to the committed offset: already read.
                    item = [r for r in item if r.offset >= positions[tp]] or None
                if type(item) is list:
                    if item[0].offset > positions[tp] + 1:
                        # More than a transaction marker skipped: compaction, an aborted transaction,
                        # or records deleted before they were fetched (checked in the background).
                        app.check_gap(task.name, tp, positions[tp], item[0].offset)  # type: ignore[arg-type]
                    records, dead = decoder.decode(item)
                    positions[tp] = item[-1].offset + 1
                    since += len(item)
                    task.active = True
                    app.metrics.skipped += decoder.skipped - skipped
                    skipped = decoder.skipped
                    if dead:
                        task.dead.append((task.pending + 1, dead))
                    if records:
                        await out.put(records)
                    if self.bound_ms is not None:
                        batch_max = max(r.timestamp for r in item)
                        if batch_max > max_ts.get(tp, batch_max - 1):
                            max_ts[tp] = batch_max
                        # Per input partition the largest record time; several lanes: their minimum.
                        mark = min(max_ts.values()) - self.bound_ms
                        if emitted_wm is None or mark > emitted_wm:
                            emitted_wm = mark
                            await out.put(Watermark(mark))
                elif item is END:
                    del live[_channel_of(live, tp)]
                    if not live:
                        task.lanes_ended([lane.tp for lane in self.lanes])
                    continue
                elif isinstance(item, Failure):
                    raise item.error
                task.tick(clock.now(), idle=item is None)
        finally:
            self.run_cp.leave(self.member)


def _channel_of(live: dict[Channel, TopicPartition], tp: TopicPartition | None) -> Channel:
    return next(ch for ch, t in live.items() if t == tp)


async def _next(
    live: dict[Channel, TopicPartition], wake: Channel, timeout: float
) -> tuple[Any, TopicPartition | None]:
    """The next item of the lanes (the batch with the smallest record time first; signals first),
    or (None, None) when the task's barrier trigger woke this source or ``timeout`` passed."""
    if wake.get_nowait() is not None:
        return None, None
    chans = [ch for ch in live if ch._items]
    if not chans:
        if timeout > 0:
            await within(lambda: wait_any([*live, wake]), timeout)
        if wake.get_nowait() is not None:
            return None, None
        chans = [ch for ch in live if ch._items]
        if not chans:
            return None, None
    if len(chans) > 1:
        chans.sort(key=_head_time)
    ch = chans[0]
    return ch.get_nowait(), live[ch]


def _head_time(ch: Channel) -> float:
    head = ch._items[0]
    return head[0].timestamp if type(head) is list and head else float("-inf")


# -- the committing sink ---------------------------------------------------------------


class CommitSinkStage(Stage):
    inputs = 1
    outputs = 0

    def __init__(self, task: PartitionTask) -> None:
        self.task = task
        self.name = f"kafka_commit_sink({task.name})"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, asyncio.Future[None]]:
        fut: asyncio.Future[None] = ctx.loop.create_future()
        return _CommitSinkLogic(self.task, fut, self.stage_name(), ctx), fut


class _CommitSinkLogic(AsyncLogic):
    def __init__(self, task: PartitionTask, fut: asyncio.Future[None], name: str, ctx: RunContext) -> None:
        self.task = task
        self.clock = ctx.clock
        self.fut = fut
        self.sender = RecordSender(task.app.producer_settings, task.app.output_topic, name)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        task = self.task
        sender = self.sender
        clock = self.clock
        while True:
            item = await inlet.get()
            if type(item) is list:
                if item:
                    await task.send_chunk(sender, item)
            elif isinstance(item, Barrier):
                start = clock.now()
                await task.commit(item.checkpoint_id)
                task.commit_times.append(clock.now() - start)
                note_committed(task.app.metrics, clock.now() - start)
            elif item is END:
                if not self.fut.done():
                    self.fut.set_result(None)
                return
            elif isinstance(item, Failure):
                raise item.error

    def on_failure(self, error: BaseException) -> None:
        self.task.fail(error)
        if not self.fut.done():
            if isinstance(error, asyncio.CancelledError):
                self.fut.cancel()
            else:
                self.fut.set_exception(error)
