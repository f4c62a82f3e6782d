"""``KafkaApp``: a consume-transform-produce application, exactly-once, with state on Kafka.

One app run owns one consumer (group id = application id, ``read_committed``),
an admin client, and per assigned task a :class:`_TaskRunner`. Task n is
partition n of every input topic (they are co-partitioned; the group assigns
whole tasks, ``_assign.py``, and inputs with different partition counts fail
the start). The consumer feeds the partitions' lanes (``_lanes.py``); each
runner runs its task's sub-stream (``_task.py``) as a graph of its own, owned by
the app run: when the app run ends, every task graph, producer and store it
opened is closed. Global tables (``_global.py``) are restored before the
consumer joins the group.

Opening a task (on assignment, and again after a failure):

1. create its producer; under exactly-once it is transactional with id
   ``{application_id}-{topic}-{n}`` (one input) or ``{application_id}-task-{n}``,
   and starting it fences any other producer with that id (a zombie of a
   previous owner) and aborts or completes its open transaction;
2. read the committed offsets of its partitions and the checkpoint id committed
   with them (commit metadata);
3. restore the task's store from its changelogs (``_changelog.py``),
   reusing the local store when it is not ahead of Kafka;
4. build the sub-stream from the topology, register the lanes, seek the
   consumer to the committed offsets and resume fetching.

Revocation (and ``stop()``): the lane ends; its source commits what it read (a
last checkpoint), the runner cancels the sub-stream, closes the producer. A
failed sub-stream whose error comes from Kafka (a fenced producer, a failed
commit, a broker gone) is closed without committing and the partition is opened
again from step 1: rewound to its committed offset with its committed state.
Any other error (in user code) fails the app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from .._dsl.flow import Flow
from .._dsl.keep import Keep
from .._dsl.module import Module
from .._dsl.runnable import RunnableGraph
from .._dsl.sink import Sink
from .._dsl.source import Source
from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._state.memory import MemoryStore
from .._state.rocksdb import RocksDBStore
from .._metrics.query import QueryableStore
from .._state.store import StateStore
from ..stage import AsyncLogic, Stage
from ._assign import TaskAssignor
from ._standby import StandbyTasks
from ._changelog import (
    ChangelogBuffer,
    changelog_prefix,
    changelog_topic,
    check_table_name,
    restore_store,
    table_of,
)
from .._metrics.registry import MetricsRegistry
from ._consumer import _Listener
from ._global import GlobalTable
from ._errors import CommitError, KafkaStreamError, TransactionError
from ._lanes import Lane, LaneSet
from ._logfilter import install as install_log_filter
from ._operations import AppOperations, note_fetched
from ._settings import ConsumerSettings, ProducerSettings
from ._task import (
    AppMetrics,
    CommitSinkStage,
    LaneSourceStage,
    PartitionContext,
    PartitionTask,
    fenced_error,
    producer_name,
    reap_failed_batches,
)
from ._watermarks import RecordTimeWatermarks

log = logging.getLogger("streamlib.kafka")

ProcessingGuarantee = Literal["exactly_once", "at_least_once"]
Topology = Callable[[PartitionContext], "Flow[Any, Any, Any] | Source[Any, Any]"]

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]+$")


class AppControl:
    """Handle on a running :class:`KafkaApp`: ``stop()``, ``await wait_stopped()``, ``metrics``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.metrics = AppMetrics()
        #: The run's metrics by name (see docs/operations.md): ``registry.value(name, **labels)``.
        self.registry = MetricsRegistry()
        self.operations: AppOperations | None = None
        self._stop = asyncio.Event()
        self._done: asyncio.Future[None] = loop.create_future()

    def stop(self) -> None:
        """Commit what was read, close every partition and leave the group."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    async def wait_stopped(self) -> None:
        """Wait until the app has stopped; raises the error that stopped it, if any."""
        await asyncio.shield(self._done)

    @property
    def is_stopped(self) -> bool:
        return self._done.done()

    @property
    def is_ready(self) -> bool:
        """Joined the group, and every assigned partition is restored and processing (``/ready``)."""
        return self.operations is not None and self.operations.is_ready()

    @property
    def metrics_port(self) -> int | None:
        """The port serving ``/metrics``, ``/health``, ``/ready``, ``/state`` (once bound; None without one)."""
        server = None if self.operations is None else self.operations.server
        return None if server is None or server._server is None else server.port

    def store(self, name: str, value_type: Any = None) -> QueryableStore[Any, Any]:
        """Read-only queries of the state table ``name`` over this instance's open partitions."""
        if self.operations is None:
            raise RuntimeError("the app has not started yet: query its stores once run() returned")
        return self.operations.store(name, value_type)

    def _finish(self, error: BaseException | None) -> None:
        if self._done.done():
            return
        if error is None or isinstance(error, asyncio.CancelledError):
            self._done.set_result(None)
        else:
            self._done.set_exception(error)
            self._done.exception()  # also raised to whoever awaits wait_stopped()

    def __repr__(self) -> str:
        return f"<AppControl {'stopped' if self.is_stopped else 'running'} commits={self.metrics.commits}>"


class KafkaApp:
    """A consume-transform-produce application over Kafka, exactly-once by default, with state.

    ``topology(partition)`` returns the :class:`Flow` from :class:`KafkaRecord` to
    :class:`ProducerRecord` (or bare values, with ``output_topic``) run for each
    assigned task: partition n of every input topic (the inputs are co-partitioned;
    a Flow gets the records of all of them, a topology returning a :class:`Source`
    builds it from ``partition.source(topic)``, e.g. a join). Its stateful
    operators use ``partition.store``,
    whose tables are mirrored to compacted changelog topics and restored on
    assignment. With ``processing_guarantee="exactly_once"`` the outputs, the
    changelog writes and the consumed offsets of each ``checkpoint_interval``
    commit in one Kafka transaction per partition; consumers of the output read
    with ``read_committed``. Instances with the same ``application_id`` share the
    partitions (and their state) between them. Dead letters (``DeadLetter`` policy)
    go through the partition's own producer, inside its transactions. In-memory
    stores (no ``state_dir``) live in this object, so run one instance of it at a time.
    With ``num_standby_replicas=k`` each task's store is also kept warm by k other
    instances tailing its changelogs, so a task that fails over to one of them
    restores only the last records (see docs/operations.md).

    >>> def topology(p):
    ...     return Flow().key_by(lambda r: r.key).stateful_map(count, store=p.store).map(to_record)
    >>> app = KafkaApp("counter", consumer=ConsumerSettings(servers), producer=ProducerSettings(servers),
    ...                topics="numbers", topology=topology, state_dir="/var/lib/counter")
    >>> control = app.run()          # inside a running event loop
    >>> control.stop(); await control.wait_stopped()
    """

    def __init__(
        self,
        application_id: str,
        *,
        consumer: ConsumerSettings,
        producer: ProducerSettings,
        topics: str | Sequence[str],
        topology: Topology,
        processing_guarantee: ProcessingGuarantee = "exactly_once",
        checkpoint_interval: float = 0.1,
        state_dir: str | os.PathLike[str] | None = None,
        output_topic: str | None = None,
        watermarks: RecordTimeWatermarks | None = None,
        changelog_replication_factor: int | None = None,
        max_retries: int = 20,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        advertised_host: str | None = None,
        global_tables: Sequence[GlobalTable[Any, Any]] = (),
        num_standby_replicas: int = 0,
    ) -> None:
        if not isinstance(application_id, str) or not _VALID_ID.match(application_id):
            raise ValueError(
                f"application_id must be letters, digits, '.', '_' or '-' (it names topics and "
                f"transactional ids), got {application_id!r}"
            )
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names or not all(isinstance(t, str) and t for t in names):
            raise ValueError(f"KafkaApp needs one or more input topic names, got {topics!r}")
        if len(names) > 1 and "partition_assignment_strategy" in consumer.properties:
            raise ValueError(
                "a KafkaApp with several input topics assigns partition n of every input to one instance (they "
                "form one task); remove partition_assignment_strategy from the consumer properties"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"KafkaApp input topics must differ, got {names!r}")
        if not callable(topology):
            raise TypeError(f"topology must be a function (PartitionContext) -> Flow, got {topology!r}")
        if processing_guarantee not in ("exactly_once", "at_least_once"):
            raise ValueError(
                f"processing_guarantee must be 'exactly_once' or 'at_least_once', got {processing_guarantee!r}"
            )
        if not checkpoint_interval > 0:
            raise ValueError(f"checkpoint_interval must be positive, got {checkpoint_interval!r}")
        if type(num_standby_replicas) is not int or num_standby_replicas < 0:
            raise ValueError(f"num_standby_replicas must be an int >= 0 (warm copies of each task's state kept by "
                             f"other instances; 0: none), got {num_standby_replicas!r}")
        if num_standby_replicas and "partition_assignment_strategy" in consumer.properties:
            raise ValueError("num_standby_replicas needs the app's own task assignor to place the standbys: remove "
                             "partition_assignment_strategy from the consumer properties")
        self.application_id = application_id
        self.consumer = consumer
        self.producer = producer
        self.topics = tuple(names)
        self.topology = topology
        self.processing_guarantee = processing_guarantee
        self.checkpoint_interval = float(checkpoint_interval)
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        self.output_topic = output_topic
        self.watermarks = watermarks
        self.changelog_replication_factor = changelog_replication_factor
        self.max_retries = max_retries
        if metrics_port is not None and (not isinstance(metrics_port, int) or not 0 <= metrics_port <= 65535):
            raise ValueError(f"metrics_port must be an int from 0 to 65535 (0: any free port), got {metrics_port!r}")
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.advertised_host = advertised_host
        self._control: AppControl | None = None
        self.global_tables = tuple(global_tables)
        self.num_standby_replicas = num_standby_replicas
        for table in self.global_tables:
            if not isinstance(table, GlobalTable):
                raise TypeError(f"global_tables takes GlobalTable objects, got {table!r}")
        self._stores: dict[str, StateStore] = {}

    def store(self, name: str, value_type: Any = None) -> QueryableStore[Any, Any]:
        """Read-only queries of the state table ``name`` (an operator's ``name=``) of the running app.

        Reads this instance's open partitions: ``get(key)``, ``range(lo, hi)``, ``items()``,
        ``fetch(key, time_from, time_to)`` for windows; values as of the last committed checkpoint.
        """
        if self._control is None:
            raise RuntimeError(f"{self!r} is not running: call run() first, then query its stores")
        return self._control.store(name, value_type)

    def runnable(self) -> RunnableGraph[AppControl]:
        """The app as a closed graph; ``.run()`` starts it and returns its :class:`AppControl`."""
        return RunnableGraph(Module.of(_AppStage(self)))

    def run(self) -> AppControl:
        """Start the app on the running event loop; returns its :class:`AppControl` at once."""
        return self.runnable().run()

    def __repr__(self) -> str:
        return f"KafkaApp({self.application_id!r}, topics={list(self.topics)}, {self.processing_guarantee})"


class _AppStage(Stage):
    inputs = 0
    outputs = 0

    def __init__(self, app: KafkaApp) -> None:
        self.app = app
        self.name = f"kafka_app({app.application_id})"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, AppControl]:
        control = AppControl(ctx.loop)
        return _AppRun(self.app, ctx, control), control


def _retriable(error: BaseException) -> bool:
    """Errors from Kafka (directly or as the cause) are retried by reopening the partition."""
    e: BaseException | None = error
    for _ in range(5):
        if e is None:
            return False
        if isinstance(e, (KafkaError, TransactionError, TimeoutError, ConnectionError)):
            return True
        e = e.__cause__
    return False


class _AppRun(AsyncLogic):
    """One run of a KafkaApp (the logic of its single stage)."""

    def __init__(self, app: KafkaApp, ctx: RunContext, control: AppControl) -> None:
        self.app = app
        self.ctx = ctx
        self.control = control
        self.metrics = control.metrics
        self.application_id = app.application_id
        self.exactly_once = app.processing_guarantee == "exactly_once"
        settings = app.consumer.with_group_id(app.application_id)
        if self.exactly_once:
            settings = dataclasses.replace(settings, isolation_level="read_committed")
        self.consumer_settings = settings
        self.producer_settings = app.producer
        self.output_topic = app.output_topic
        self.checkpoint_interval = app.checkpoint_interval
        self.watermark_bound_ms = None if app.watermarks is None else app.watermarks.bound_ms
        self.topics = app.topics
        self.lanes = LaneSet(ctx.clock)
        self.runners: dict[int, _TaskRunner] = {}
        self.consumer: Any = None
        self.admin: Any = None
        self.fatal: BaseException | None = None
        self.shutting_down = False  # set once the run closes its tasks: no new task starts after that
        self._created: set[str] = set()
        self._replication: int | None = app.changelog_replication_factor
        self._create_lock = asyncio.Lock()
        self._started_tables: list[GlobalTable[Any, Any]] = []
        self._gap_checks: dict[TopicPartition, asyncio.Task[None]] = {}
        self.log_filter = install_log_filter() if self.exactly_once else None
        self.operations = control.operations = AppOperations(self)
        self.standbys = StandbyTasks(self) if app.num_standby_replicas else None
        app._control = control

    # -- services used by the partition tasks ------------------------------------------

    def store_header(self, table: str) -> bytes:
        return f"{self.application_id}/{table}".encode()

    async def changelog_topic(self, table: str) -> str:
        """The changelog topic of the tasks' table ``table``; created the first time."""
        check_table_name(table, self.application_id)
        name = changelog_topic(changelog_prefix(self.application_id), table)
        if name in self._created:
            return name
        async with self._create_lock:
            if name in self._created:
                return name
            existing = set(await self.admin.list_topics())
            if name not in existing:
                partitions = len(self.consumer.partitions_for_topic(self.topics[0]) or ())
                if not partitions:
                    raise KafkaStreamError(f"input topic {self.topics[0]!r} has no known partitions")
                if self._replication is None:
                    brokers = (await self.admin.describe_cluster())["brokers"]
                    self._replication = max(1, min(3, len(brokers)))
                response = await self.admin.create_topics(
                    [NewTopic(name, partitions, self._replication,
                              topic_configs={"cleanup.policy": "compact"})]
                )
                for _topic, code, *_rest in response.topic_errors:
                    if code not in (0, 36):  # 36: already exists (another instance made it)
                        raise KafkaStreamError(f"creating changelog topic {name!r} failed with error code {code}")
                await self._wait_for_leaders(name)
                log.info("created changelog topic %s (%d partitions)", name, partitions)
            self._created.add(name)
        return name

    async def _check_copartitioned(self) -> None:
        """Fail when the inputs (partition n of each forms one task) have different partition counts."""
        counts: dict[str, int] = {}
        for meta in await self.admin.describe_topics(list(self.topics)):
            if meta["error_code"] != 0 or not meta["partitions"]:
                raise KafkaStreamError(
                    f"input topic {meta['topic']!r} of application {self.application_id!r} does not exist "
                    f"(error code {meta['error_code']}): create the inputs (with equal partition counts) first"
                )
            counts[meta["topic"]] = len(meta["partitions"])
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{t} has {n}" for t, n in sorted(counts.items()))
            raise KafkaStreamError(
                f"the inputs of application {self.application_id!r} are co-partitioned (partition n of each forms "
                f"one task with one state store) but have different partition counts: {shown}. Give them the "
                "same number of partitions (e.g. repartition one into a topic of the other's count)"
            )

    async def _wait_for_leaders(self, topic: str, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            (meta,) = await self.admin.describe_topics([topic])
            parts = meta["partitions"]
            if meta["error_code"] == 0 and parts and all(p["leader"] >= 0 for p in parts):
                return
            if loop.time() > deadline:
                raise KafkaStreamError(f"changelog topic {topic!r} has no leader after {timeout}s")
            await asyncio.sleep(0.05)

    async def changelogs(self) -> dict[str, str]:
        """Table name -> changelog topic of every changelog of this app."""
        prefix = changelog_prefix(self.application_id)
        found = {}
        for name in await self.admin.list_topics():
            table = table_of(prefix, name)
            if table is not None:
                found[table] = name
        return found

    async def commit_offsets(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            raise CommitError(f"committing {offsets} for application {self.application_id!r} failed: {exc!r}") from exc

    def report_deleted(self, task: str, tp: TopicPartition, first: int, last: int) -> None:
        """Records ``first`` to ``last`` of ``tp`` were deleted before this app read them: say so, count them."""
        log.warning(
            "%s: records %d to %d of %s-%d were deleted from the topic (retention or delete_records) before "
            "application %r read them; reading on from offset %d", task, first, last, tp.topic, tp.partition,
            self.application_id, last + 1,
            extra={"event": "records_deleted_unread", "partition": f"{tp.topic}-{tp.partition}",
                   "first": first, "last": last},
        )
        self.metrics.deleted_unread += last - first + 1

    def check_gap(self, task: str, tp: TopicPartition, expected: int, first: int) -> None:
        """A batch of ``tp`` starts at ``first``, after offset ``expected`` was due: if the partition's
        log start moved past ``expected``, records were deleted unread (a consumer behind the log
        start is reset to it). Checked in the background, one check per partition at a time."""
        if tp in self._gap_checks or self.consumer is None or self.shutting_down:
            return
        check = asyncio.ensure_future(self._check_gap(self.consumer, task, tp, expected, first))
        self._gap_checks[tp] = check
        check.add_done_callback(lambda _c: self._gap_checks.pop(tp, None))

    async def _check_gap(self, consumer: Any, task: str, tp: TopicPartition, expected: int, first: int) -> None:
        try:
            start = (await consumer.beginning_offsets([tp]))[tp]
        except KafkaError:  # the broker did not answer: the next gap is checked again
            return
        if start > expected:
            self.report_deleted(task, tp, expected, min(start, first) - 1)

    async def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int | None, int | None]]:
        """Per partition, (committed offset, checkpoint id committed with it); Nones when none."""
        offsets = await self.admin.list_consumer_group_offsets(self.application_id, partitions=list(tps))
        found: dict[TopicPartition, tuple[int | None, int | None]] = {}
        for tp in tps:
            meta = offsets.get(tp)
            if meta is None or meta.offset < 0:
                found[tp] = (None, None)
                continue
            try:
                checkpoint = int(meta.metadata) if meta.metadata else None
            except ValueError:
                checkpoint = None
            found[tp] = (meta.offset, checkpoint)
        return found

    def task_key(self, partition: int) -> str:
        """Task ``partition``'s name in transactional ids and store directories.

        One input: ``{topic}-{partition}`` (as before tasks spanned topics); several:
        ``task-{partition}``.
        """
        return f"{self.topics[0]}-{partition}" if len(self.topics) == 1 else f"task-{partition}"

    def task_name(self, partition: int) -> str:
        """How logs and errors name task ``partition``."""
        return self.task_key(partition) if len(self.topics) == 1 else f"task {partition} ({', '.join(self.topics)})"

    def transactional_id(self, partition: int) -> str:
        return f"{self.application_id}-{self.task_key(partition)}"

    def store_path(self, partition: int) -> str | None:
        if self.app.state_dir is None:
            return None
        return os.path.join(self.app.state_dir, self.application_id, self.task_key(partition))

    def store_for(self, partition: int) -> StateStore:
        """The task's store as left by its last run in this process (or on this disk)."""
        store = self.app._stores.get(self.task_key(partition))
        if store is None:
            store = self.app._stores[self.task_key(partition)] = self._make_store(partition)
        return store

    def new_store(self, partition: int, old: StateStore) -> StateStore:
        """An empty store for task ``partition``, replacing ``old`` (whose data is dropped)."""
        old.close()
        path = self.store_path(partition)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        store = self.app._stores[self.task_key(partition)] = self._make_store(partition)
        return store

    def _make_store(self, partition: int) -> StateStore:
        path = self.store_path(partition)
        store: StateStore = MemoryStore() if path is None else RocksDBStore(path, sync=False)
        store.add_commit_hook(ChangelogBuffer())
        return store

    def set_fatal(self, error: BaseException) -> None:
        if self.fatal is None:
            self.fatal = error
            self.control._stop.set()

    # -- rebalances -----------------------------------------------------------------------

    def _log_rebalance(self, event: str, partitions: set[TopicPartition]) -> None:
        # The generation is the group's rebalance count: equal generations, no rebalance in between.
        generation = getattr(getattr(self.consumer, "_coordinator", None), "generation", None)
        names = sorted(f"{tp.topic}-{tp.partition}" for tp in partitions)
        log.info("%s %s (group %s, generation %s)", event.replace("_", " "), ", ".join(names) or "nothing",
                 self.application_id, generation,
                 extra={"event": event, "partitions": names, "generation": generation})

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        consumer = self.consumer
        if self.shutting_down or consumer is None:
            return  # an assignment completing while the consumer leaves the group: nothing to start
        self._log_rebalance("partitions_assigned", partitions)
        self.control.metrics.assigned |= partitions
        self.operations.joined = True
        tasks: dict[int, set[str]] = {}
        for tp in partitions:
            consumer.pause(tp)
            tasks.setdefault(tp.partition, set()).add(tp.topic)
        if self.standbys is not None:
            # A standby of a task now active here stops (a last local checkpoint) before the task opens.
            await self.standbys.update(set(tasks) | set(self.runners))
            if self.shutting_down:
                return
        for n, topics in sorted(tasks.items()):
            if n in self.runners:
                continue
            if topics != set(self.topics):
                # Cannot happen with the app's assignor; a member with another one in the group could.
                self.set_fatal(KafkaStreamError(
                    f"application {self.application_id!r} was assigned partition {n} of {', '.join(sorted(topics))} "
                    f"without that of {', '.join(sorted(set(self.topics) - topics))}: its inputs are co-partitioned "
                    "(partition n of each forms one task) and must be assigned together; every instance of the "
                    "application must run this version of streamlib"
                ))
                return
            runner = _TaskRunner(self, n)
            self.runners[n] = runner
            runner.start()

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self._log_rebalance("partitions_revoked", partitions)
        metrics = self.control.metrics
        metrics.assigned -= partitions
        numbers = sorted({tp.partition for tp in partitions})
        runners = [self.runners.pop(n) for n in numbers if n in self.runners]
        await asyncio.gather(*(r.close(graceful=self.fatal is None) for r in runners))
        for tp in partitions:
            metrics.committed.pop(tp, None)
            metrics.end_offsets.pop(tp, None)
            metrics.watermarks.pop(tp, None)
            metrics.restore_remaining.pop(tp, None)
            metrics.pending_times.pop(tp, None)

    # -- the run ---------------------------------------------------------------------------

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        control = self.control
        error: BaseException | None = None
        try:
            self.admin = AIOKafkaAdminClient(**_admin_kwargs(self.consumer_settings))
            await self.admin.start()
            if len(self.topics) > 1:
                await self._check_copartitioned()
            for table in self.app.global_tables:  # restored before anything is processed
                if not table.running:
                    self._started_tables.append(table)
                    await table.start()
            await self.operations.start()  # binds the port that the group assignment advertises
            self.consumer = self.consumer_settings.create_consumer(
                **self.operations.consumer_overrides(_assignment(self.consumer_settings, TaskAssignor(
                    self.app.num_standby_replicas, None if self.standbys is None else self.standbys.on_assignment)))
            )
            await self.consumer.start()
            self.consumer.subscribe(list(self.app.topics), listener=_Listener(self))
            await self._fetch_loop()
            if self.fatal is not None:
                raise self.fatal
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                await self._shutdown(graceful=error is None and self.fatal is None)
            finally:
                try:
                    await self.operations.stop()
                finally:
                    control._finish(error if error is not None else self.fatal)

    async def _fetch_loop(self) -> None:
        control = self.control
        clock = self.ctx.clock
        poll_ms = int(self.consumer_settings.poll_timeout * 1000)
        max_chunk = self.ctx.max_chunk
        lanes = self.lanes.lanes
        consumer = self.consumer
        stop = control._stop
        metrics = control.metrics
        ends = metrics.end_offsets
        committed_only = self.consumer_settings.isolation_level == "read_committed"
        tables = self.app.global_tables
        while not stop.is_set():
            for table in tables:
                if table.error is not None:
                    self.set_fatal(table.error)
            batches = await self.lanes.poll(consumer, poll_ms, max_chunk)
            if not batches:
                continue
            now = clock.now()
            records = 0
            for tp, raws in batches.items():
                lane = lanes.get(tp)
                if lane is None or lane.closed or not raws:
                    continue  # not open (yet): the partition is read again from its committed offset
                records += len(raws)
                lane.offer(raws, now)
                note_fetched(metrics, tp, raws, self.watermark_bound_ms)
            metrics.fetched += records
            assigned = consumer.assignment()
            for tp in lanes:
                if tp in assigned:
                    end = _end_offset(consumer, tp, committed_only)
                    if end is not None:
                        ends[tp] = end

    async def _shutdown(self, graceful: bool) -> None:
        self.shutting_down = True
        checks = list(self._gap_checks.values())
        for check in checks:
            check.cancel()
        if checks:
            await asyncio.wait(checks)
        runners = list(self.runners.values())
        self.runners.clear()
        try:
            await asyncio.gather(*(r.close(graceful=graceful) for r in runners), return_exceptions=True)
            if self.standbys is not None:
                await self.standbys.stop()
        finally:
            self.lanes.end_all()
            consumer, self.consumer = self.consumer, None
            admin, self.admin = self.admin, None
            try:
                if consumer is not None:
                    await consumer.stop()
            finally:
                try:
                    if admin is not None:
                        await admin.close()
                finally:
                    tables, self._started_tables = self._started_tables, []
                    for table in tables:
                        await table.stop()


def _end_offset(consumer: Any, tp: TopicPartition, committed_only: bool) -> int | None:
    """The end of ``tp`` from the consumer's last fetch response (None before the first one).

    Under ``read_committed`` that is the last stable offset (where an open
    transaction begins): the end such a consumer can reach.
    """
    if committed_only:
        lso = consumer.last_stable_offset(tp)
        if lso is not None and lso >= 0:
            return lso  # type: ignore[no-any-return]
    return consumer.highwater(tp)  # type: ignore[no-any-return]


def _assignment(settings: ConsumerSettings, tasks: TaskAssignor) -> dict[str, Any]:
    """The group assignor: whole tasks to one member.

    One assignor only: aiokafka sends a JoinGroup request per configured assignor, each with a
    longer protocol list, and the coordinator takes a member's changed protocols for a new
    rebalance; with two assignors, members that do not join in step (a loaded machine) trigger
    each other's rebalances without end.
    """
    if "partition_assignment_strategy" in settings.properties:
        return {}
    return {"partition_assignment_strategy": (tasks,)}


def _admin_kwargs(settings: ConsumerSettings) -> dict[str, Any]:
    kwargs = settings.consumer_kwargs()
    keep = {"bootstrap_servers", "client_id", "request_timeout_ms", "connections_max_idle_ms",
            "retry_backoff_ms", "metadata_max_age_ms", "security_protocol", "ssl_context", "sasl_mechanism",
            "sasl_plain_username", "sasl_plain_password", "sasl_kerberos_service_name",
            "sasl_kerberos_domain_name", "sasl_oauth_token_provider"}
    return {k: v for k, v in kwargs.items() if k in keep}


def _task_graph(app: _AppRun, task: PartitionTask) -> RunnableGraph[asyncio.Future[None]]:
    """The task's sub-stream: its lane sources, the topology, the commit sink."""
    sources: dict[str, Source[Any, None]] = {
        tp.topic: Source(Module.of(LaneSourceStage(task, [lane]))) for tp, lane in task.lanes.items()
    }
    context = PartitionContext(app.application_id, app.topics, task.partition, task.store, sources)
    shape = app.app.topology(context)
    sink: Sink[Any, asyncio.Future[None]] = Sink(Module.of(CommitSinkStage(task)))
    if isinstance(shape, Flow):
        if context._taken:
            raise TypeError(
                f"the topology of {app.application_id!r} took context.source({sorted(context._taken)[0]!r}) but "
                "returned a Flow: a Flow gets every input (merged); a topology using context.source(...) returns "
                "the Source of its outputs"
            )
        merged: Source[Any, None] = Source(Module.of(LaneSourceStage(task, list(task.lanes.values()))))
        return merged.via(shape).to_mat(sink, Keep.right)
    if isinstance(shape, Source):
        return shape.to_mat(sink, Keep.right)
    raise TypeError(f"the topology of {app.application_id!r} must return a Flow (from the task's records) or a "
                    f"Source (built from context.source(topic)), got {shape!r}")


class _TaskRunner:
    """Opens, supervises, reopens after Kafka errors, and closes one assigned task (partition n of every input)."""

    #: Seconds a revoked task may take to commit what it read before it is cancelled.
    CLOSE_TIMEOUT = 30.0

    def __init__(self, app: _AppRun, partition: int) -> None:
        self.app = app
        self.partition = partition
        self.name = app.task_name(partition)
        self.tps = [TopicPartition(t, partition) for t in app.topics]
        self.noun = "partition" if len(self.tps) == 1 else "task"
        self.task: PartitionTask | None = None
        self.graph: Any = None
        self.sink_done: asyncio.Future[None] | None = None
        self.closing = False
        self._producer: Any = None
        self._store: StateStore | None = None
        self.supervisor: asyncio.Task[None] | None = None
        self.opened = asyncio.Event()

    def start(self) -> None:
        self.supervisor = asyncio.ensure_future(self._supervise())

    async def close(self, graceful: bool) -> None:
        """Commit what was read (when ``graceful``) and release everything of this partition."""
        self.closing = True
        sup = self.supervisor
        if sup is None or sup.done():
            return
        task = self.task
        if graceful and task is not None and self.opened.is_set():
            for lane in task.lanes.values():
                lane.end()
            done, _ = await asyncio.wait([sup], timeout=self.CLOSE_TIMEOUT)
            if done:
                return
            log.warning("%s did not commit within %ss; closing it without", self.name, self.CLOSE_TIMEOUT)
        sup.cancel()
        await asyncio.wait([sup])

    async def _supervise(self) -> None:
        """Run the task, reopening it after retriable failures with a doubling delay (reset by commits)."""
        app = self.app
        attempts = 0
        delay = 0.1
        try:
            while not self.closing:
                failure, fenced, opened, committed = await self._run_once()
                if failure is None:
                    if fenced is not None:
                        self._report_fenced(fenced, None)
                    return
                if not _retriable(failure) or attempts >= app.app.max_retries:
                    app.set_fatal(failure)
                    return
                if committed:
                    attempts, delay = 0, 0.1
                attempts += 1
                if opened:
                    app.control.metrics.recoveries += 1
                if fenced is not None:
                    delay = self._fenced_delay(delay)
                    self._report_fenced(fenced, delay)
                elif opened:
                    log.warning("%s failed (%r); reopening it from its committed offsets", self.name, failure)
                else:
                    log.warning("opening %s failed (%r); retrying in %.1fs", self.name, failure, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        finally:
            fenced = await self._teardown()
            if fenced is not None:
                self._report_fenced(fenced, None)

    async def _run_once(self) -> tuple[BaseException | None, str | None, bool, bool]:
        """Open the task and run it until it ends; release it.

        Returns (the failure, None when it ended cleanly: revoked, stopped or closing; the
        fenced producer's name or None; whether it had opened; whether it committed).
        """
        try:
            await self._open()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc, await self._teardown(), False, False
        task, sink_done = self.task, self.sink_done
        assert task is not None and sink_done is not None
        await asyncio.wait([sink_done, task.closed], return_when=asyncio.FIRST_COMPLETED)
        if task.closed.done() and not sink_done.done():  # revoked or stopped: everything read is committed
            return None, await self._teardown(), True, True
        failure = sink_done.exception() if not sink_done.cancelled() else None
        fenced = await self._teardown()
        return (None if self.closing else failure), fenced, True, bool(task.commits)

    async def _open(self) -> None:
        app = self.app
        n = self.partition
        consumer = app.consumer
        settings = app.producer_settings
        tid = app.transactional_id(n) if app.exactly_once else None
        producer = settings.create_producer(transactional_id=tid) if tid else settings.create_producer(
            enable_idempotence=True
        )
        self._producer = producer
        if app.log_filter is not None:
            app.log_filter.watch(producer)
        await producer.start()  # a transactional producer fences the previous owner here
        offsets: dict[TopicPartition, int] = {}
        checkpoint: int | None = None
        committed = await app.committed(self.tps)
        starts = await consumer.beginning_offsets(self.tps)
        for tp, (offset, cid) in committed.items():
            if offset is None:
                if app.consumer_settings.auto_offset_reset == "earliest":
                    offset = starts[tp]
                else:
                    offset = (await consumer.end_offsets([tp]))[tp]
            elif offset < starts[tp]:
                app.report_deleted(self.name, tp, offset, starts[tp] - 1)
                offset = starts[tp]
            offsets[tp] = offset
            # One transaction commits every partition of the task with the same checkpoint id.
            checkpoint = cid if checkpoint is None or (cid is not None and cid > checkpoint) else checkpoint
        app.metrics.committed.update(offsets)
        store = self._store = app.store_for(n)
        store, result = await restore_store(
            store,
            make_store=lambda: app.new_store(n, store),
            consumer_kwargs=app.consumer_settings.consumer_kwargs(),
            changelogs=await app.changelogs(),
            partition=n,
            kafka_checkpoint=checkpoint,
            store_header=app.store_header,
            progress=lambda left: app.operations.restoring(self, left),
            name=self.name,
        )
        self._store = store
        app.operations.restoring(self, 0)
        metrics = app.control.metrics
        if result.full:
            metrics.full_restores += 1
        elif result.records:
            metrics.partial_restores += 1
        metrics.restored_records += result.records
        buffer = next(h for h in getattr(store, "_hooks", ()) if isinstance(h, ChangelogBuffer))
        buffer.clear()
        lanes = {tp: Lane(tp, app.ctx.channel_capacity) for tp in self.tps}
        task = PartitionTask(app, n, self.name, store, buffer, lanes, producer, offsets, dict(result.positions))
        blueprint = _task_graph(app, task)
        ctx = RunContext(app.ctx.loop, clock=app.ctx.clock, max_chunk=app.ctx.max_chunk,
                         channel_capacity=app.ctx.channel_capacity, meters=app.control.registry.operators)
        sink_done, graph = blueprint._module.run(ctx, name=f"{app.application_id}:{app.task_key(n)}")
        self.task, self.graph, self.sink_done = task, graph, sink_done
        if task.claimed != set(lanes):
            unread = sorted(tp.topic for tp in set(lanes) - task.claimed)
            raise TypeError(f"the topology of {app.application_id!r} returned a Source that does not read "
                            f"{', '.join(unread)}: every input must be read (take each with context.source(topic) "
                            "and build the returned Source from them)")
        # No await from here on: the lanes are registered before the positions change.
        assigned = consumer.assignment()
        for tp, lane in lanes.items():
            app.lanes.lanes[tp] = lane
            if tp in assigned:
                consumer.seek(tp, offsets[tp])
                consumer.resume(tp)
        self.opened.set()

    async def _teardown(self) -> str | None:
        """Release this attempt; returns the producer's name when it had been fenced."""
        self.opened.clear()
        app = self.app
        for tp in self.tps:
            lane = app.lanes.lanes.get(tp)
            if lane is not None and self.task is not None and lane is self.task.lanes.get(tp):
                del app.lanes.lanes[tp]
                lane.end()
            if app.consumer is not None and tp in app.consumer.assignment():
                app.consumer.pause(tp)
        graph, self.graph = self.graph, None
        if graph is not None:
            graph.cancel()
            await graph.wait()
        fut, self.sink_done = self.sink_done, None
        failure = None
        if fut is not None and fut.done() and not fut.cancelled():
            failure = fut.exception()
        if self.task is not None:
            self.task.discard()  # also marks deliveries that fail while the producer closes
        self.task = None
        store, self._store = self._store, None
        if store is not None:
            store.close()  # after the run left it; reopened (RocksDB) on the next use
        producer, self._producer = self._producer, None
        if producer is None:
            return None
        name = producer_name(producer)
        try:
            await producer.stop()
        except Exception as exc:  # noqa: BLE001 - a fenced producer may fail to close cleanly
            log.debug("closing the producer of %s: %r", self.name, exc)
        finally:
            reap_failed_batches(producer)
        return name if fenced_error(producer, failure) is not None else None

    def _report_fenced(self, producer: str, reopen_in: float | None) -> None:
        """One line per fenced producer: which one, why, and what happens to the partition now."""
        if reopen_in is None:
            then = f"the {self.noun} is closed here without committing (this instance no longer owns it)"
        else:
            then = (f"closing the {self.noun} without committing and reopening it from its committed offsets "
                    f"in {reopen_in:.1f}s, unless the group moves it away first")
        log.warning(
            "producer %s of %s was fenced: a newer producer with its transactional id started (another "
            "instance took the %s over, e.g. after this one missed its session timeout); its open "
            "transaction is aborted, nothing of it is committed; %s",
            producer, self.name, self.noun, then,
        )

    def _fenced_delay(self, delay: float) -> float:
        """Before reopening a fenced partition, give the consumer one heartbeat to learn whether the
        group moved the partition away (reopening then would fence its new owner in turn)."""
        props = self.app.consumer_settings.properties
        return max(delay, props.get("heartbeat_interval_ms", 3000) / 1000)
