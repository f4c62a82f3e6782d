"""What a running ``KafkaApp`` shows operators: its metrics, readiness, state queries and HTTP port.

:class:`AppOperations` belongs to one app run. It

* reads the run's counters into the app's :class:`MetricsRegistry` when the
  registry is read (lag per partition, commit latency, end-to-end latency,
  watermark lag, store sizes, restore progress; see ``docs/operations.md``);
* says whether the run is ready: it joined the group and every assigned
  partition is restored and open;
* answers state queries: :meth:`store` over the open partitions' stores, and
  ``/state/{store}/{key}`` locally or with the address of the instance that owns
  the key's partition (learnt from the group assignment, ``_assignor.py``);
* serves ``/metrics``, ``/health``, ``/ready`` and ``/state`` when the app has a
  ``metrics_port``.
"""

from __future__ import annotations

import math
import socket
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import msgspec
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from .._metrics.http import MetricsServer, StateAnswer
from .._metrics.query import QueryableStore, table_stats
from .._metrics.registry import Rate, Sample, sample
from .._state.store import StateStore
from ._assignor import EndpointAssignor, Owners

if TYPE_CHECKING:
    from ._app import _AppRun


def partition_for_key(key_bytes: bytes | None, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client) puts ``key_bytes`` in."""
    if key_bytes is None:
        raise ValueError("a null key has no partition")
    return (murmur2(key_bytes) & 0x7FFFFFFF) % partitions


def parse_key(text: str, query: dict[str, str]) -> Any:
    """A ``/state`` key from the URL: text, or ``?type=int`` / ``?type=json`` (arrays become tuples)."""
    kind = query.get("type", "str")
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "json":
        value = msgspec.json.decode(text.encode())

        def freeze(v: Any) -> Any:
            return tuple(freeze(x) for x in v) if isinstance(v, list) else v

        return freeze(value)
    raise ValueError(f"unknown key type {kind!r}: use ?type=str (default), int or json")


class AppOperations:
    """Metrics, readiness, queries and the HTTP port of one app run."""

    def __init__(self, run: _AppRun) -> None:
        self.run = run
        app = run.app
        self.application_id = app.application_id
        self.registry = run.control.registry
        self.owners: Owners = {}
        self.joined = False
        self._commit_rate = Rate()
        self.server: MetricsServer | None = None
        self.endpoint: str | None = None
        if app.metrics_port is not None:
            self.server = MetricsServer(self.registry, host=app.metrics_host, port=app.metrics_port,
                                        ready=self.ready_details, state=self.answer_state)
        self.registry.add_collector(self.collect)

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Bind the HTTP port (before joining the group: the endpoint goes into the subscription)."""
        if self.server is None:
            return
        await self.server.start()
        host = self.run.app.advertised_host or socket.gethostname()
        self.endpoint = f"{host}:{self.server.port}"

    async def stop(self) -> None:
        self.registry.remove_collector(self.collect)
        if self.server is not None:
            await self.server.stop()

    def consumer_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """``overrides`` for the consumer with its assignors advertising this instance's endpoint.

        Wraps whichever assignors the consumer would use (``overrides``, else the
        settings' ``partition_assignment_strategy``, else aiokafka's round robin).
        """
        if self.endpoint is None:
            return overrides
        kwargs = {**self.run.consumer_settings.consumer_kwargs(), **overrides}
        strategies = kwargs.get("partition_assignment_strategy", (RoundRobinPartitionAssignor,))
        return {**overrides, "partition_assignment_strategy": tuple(
            EndpointAssignor(s, self.endpoint, self._set_owners) for s in strategies
        )}

    def restoring(self, runner: Any, remaining: int) -> None:
        """Restore progress of a task: changelog records left (0 once restored)."""
        left = self.run.metrics.restore_remaining
        for tp in runner.tps:
            left[tp] = remaining

    def _set_owners(self, owners: Owners) -> None:
        self.owners = owners

    # -- readiness --------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.ready_details()[0]

    def ready_details(self) -> tuple[bool, dict[str, Any]]:
        run = self.run
        if run.control.is_stopped or run.control.stop_requested:
            return False, {"reason": "stopping"}
        if not self.joined:
            return False, {"reason": "not yet assigned partitions by the group"}
        runners = list(run.runners.values())
        waiting = sorted(f"{tp.topic}-{tp.partition}" for r in runners if not r.opened.is_set() for tp in r.tps)
        if waiting:
            return False, {"reason": "restoring", "partitions": waiting}
        return True, {"partitions": sorted(f"{tp.topic}-{tp.partition}" for r in runners for tp in r.tps)}

    # -- queries ----------------------------------------------------------------

    def open_stores(self) -> dict[TopicPartition, StateStore]:
        """The stores of the partitions open now (assigned, restored, running)."""
        out = {}
        for runner in list(self.run.runners.values()):
            store = runner._store
            if runner.opened.is_set() and store is not None:
                for tp in runner.tps:
                    out[tp] = store
        return out

    def store(self, name: str, value_type: Any = None) -> QueryableStore[Any, Any]:
        return QueryableStore(lambda: list(self.open_stores().values()), name, value_type)

    def partition_of(self, key: Any) -> TopicPartition:
        """The input partition the record key ``key`` goes to (default partitioner, the consumer's key serde)."""
        run = self.run
        topic = run.app.topics[0]
        count = len(run.consumer.partitions_for_topic(topic) or ()) if run.consumer is not None else 0
        if not count:
            raise LookupError(f"the partitions of {topic!r} are not known yet")
        key_bytes = run.consumer_settings.key_serde.serialize(key)
        return TopicPartition(topic, partition_for_key(key_bytes, count))

    def answer_state(self, store: str, key_text: str, query: dict[str, str]) -> StateAnswer:
        try:
            key = parse_key(key_text, query)
        except (ValueError, msgspec.DecodeError) as error:
            return 400, {"error": f"bad key {key_text!r}: {error}"}, {}
        try:
            tp = self.partition_of(key)
        except Exception as error:  # noqa: BLE001 - a key the serde refuses, partitions unknown
            return 503 if isinstance(error, LookupError) else 400, {"error": str(error)}, {}
        where = {"store": store, "key": key, "topic": tp.topic, "partition": tp.partition}
        stores = self.open_stores()
        local = stores.get(tp)
        if local is not None:
            view: QueryableStore[Any, Any] = QueryableStore(local, store)
            if store not in local.table_names():
                known = view.table_names()
                return 404, {**where, "error": f"no store named {store!r} here; stores: {known}"}, {}
            value = view.get(key)
            if value is None:
                return 404, {**where, "value": None, "owner": self.endpoint}, {}
            return 200, {**where, "value": value, "owner": self.endpoint}, {}
        owner = self.owners.get(tp)
        if tp.partition in self.run.runners or (owner is not None and owner == self.endpoint):
            return 503, {**where, "error": "the partition is being restored here; retry shortly",
                         "owner": self.endpoint}, {"Retry-After": "1"}
        if owner is None:
            return 503, {**where, "error": "no instance owns the partition now (rebalancing?); retry shortly"}, \
                {"Retry-After": "1"}
        location = f"http://{owner}/state/{quote(store, safe='')}/{quote(key_text, safe='')}"
        if query:
            location += "?" + urlencode(query)
        return 307, {**where, "owner": owner, "location": location}, {"Location": location}

    # -- metrics ----------------------------------------------------------------

    def collect(self) -> Iterator[Sample]:
        run = self.run
        m = run.metrics
        app = self.application_id
        yield sample("records-processed-total", m.records, "counter",
                     "Input records processed and committed", app=app)
        yield sample("records-consumed-total", m.fetched, "counter",
                     "Input records handed to partitions, re-reads included", app=app)
        yield sample("commit-total", m.commits, "counter", "Checkpoints committed", app=app)
        yield sample("commit-rate", self._commit_rate.read(m.commits), "gauge",
                     "Checkpoints committed per second (last 30 s)", app=app)
        avg, mx = m.commit_latency.avg(), m.commit_latency.max()
        yield sample("commit-latency-avg", math.nan if avg is None else avg, "gauge",
                     "Milliseconds a checkpoint commit took, average over the last 30 s", app=app)
        yield sample("commit-latency-max", math.nan if mx is None else mx, "gauge",
                     "Milliseconds a checkpoint commit took, maximum over the last 30 s", app=app)
        e2e = m.e2e_latency
        for stat, value in (("avg", e2e.avg()), ("max", e2e.max()), ("min", e2e.min())):
            yield sample(f"record-e2e-latency-{stat}", math.nan if value is None else value, "gauge",
                         f"Milliseconds from an input record's timestamp to the commit of its results "
                         f"({stat} over the last 30 s)", app=app)
        for name, value, what in (
            ("dropped-records-total", m.skipped, "Input records skipped (undecodable, policy 'skip')"),
            ("dead-lettered-records-total", m.dead_lettered, "Input records written to the dead-letter topic"),
            ("deleted-unread-records-total", m.deleted_unread,
             "Input records deleted from their topic (retention) before the app read them"),
            ("restored-records-total", m.restored_records, "Changelog records replayed into stores"),
            ("recoveries-total", m.recoveries, "Partitions reopened after a Kafka error"),
            ("changelog-records-total", m.changelog_records, "Changelog records written"),
        ):
            yield sample(name, value, "counter", what, app=app)
        yield sample("assigned-partitions", len(m.assigned), "gauge", "Input partitions assigned here", app=app)
        for tp, lag in sorted(m.lag.items()):
            yield sample("records-lag", lag, "gauge", "Offsets between the committed offset and the end of the input",
                         app=app, topic=tp.topic, partition=tp.partition)
        now_ms = time.time() * 1000
        for tp, wm in sorted(m.watermarks.items()):
            yield sample("watermark-lag", max(0.0, now_ms - wm), "gauge",
                         "Milliseconds the partition's watermark is behind the wall clock",
                         app=app, topic=tp.topic, partition=tp.partition)
        for tp in sorted(m.assigned):
            yield sample("restore-remaining-records", m.restore_remaining.get(tp, 0), "gauge",
                         "Changelog records left to replay before the partition opens",
                         app=app, topic=tp.topic, partition=tp.partition)
        stores: dict[int, StateStore] = {tp.partition: s for tp, s in self.open_stores().items()}
        for task, store in sorted(stores.items()):
            for table, (rows, size) in sorted(table_stats(store).items()):
                yield sample("state-store-rows", rows, "gauge", "Rows of a state table (RocksDB: its estimate)",
                             app=app, store=table, task=task)
                yield sample("state-store-bytes", size, "gauge", "Bytes of a state table (RocksDB: its estimate)",
                             app=app, store=table, task=task)


def note_fetched(metrics: Any, tp: TopicPartition, raws: list[Any], bound_ms: int | None) -> None:
    """A fetched batch of ``tp`` (once per batch): its end offset and first and last record times,
    for the end-to-end latency once its results commit; and the partition's watermark."""
    first, last = raws[0].timestamp, raws[-1].timestamp
    pending = metrics.pending_times.get(tp)
    if pending is None:
        pending = metrics.pending_times[tp] = deque(maxlen=10_000)
    pending.append((raws[-1].offset + 1, first, last))
    if bound_ms is not None:
        wm = max(first, last) - bound_ms
        if wm > metrics.watermarks.get(tp, -(2**62)):
            metrics.watermarks[tp] = wm


def note_committed(metrics: Any, latency_s: float) -> None:
    """A checkpoint committed (once per commit): its latency, and the end-to-end latency of the
    fetched batches its committed offsets now cover (from their oldest and newest record times)."""
    metrics.commit_latency.record(latency_s * 1000)
    now_ms = time.time() * 1000
    committed = metrics.committed
    e2e = metrics.e2e_latency
    for tp, pending in metrics.pending_times.items():
        offset = committed.get(tp)
        if offset is None:
            continue
        while pending and pending[0][0] <= offset:
            _end, first, last = pending.popleft()
            e2e.record(max(0.0, now_ms - min(first, last)))
            e2e.record(max(0.0, now_ms - max(first, last)))
