"""State stores on Kafka: changelog topics, mirroring checkpoints to them, restoring from them.

Naming: a table ``T`` of the store of task ``p`` (partition ``p`` of every input
topic) has the compacted changelog topic ``{application_id}-{T}-changelog``,
partition ``p``. It is created (compacted, as many partitions as the input
topics) the first time a checkpoint writes to the table.

Mirroring: each partition store gets a :class:`ChangelogBuffer` as commit hook
(``StateStore.add_commit_hook``). The hook is synchronous and runs when the
store's checkpoint coordinator commits a checkpoint locally, that is before the
barrier reaches the sink; it keeps the checkpoint's write set, and the sink
produces it inside the same transaction as the interval's output records and
consumed offsets. Each record's key and value are the table's key and value
bytes (a delete is a tombstone) with a header naming the application and table.

Restoring (:func:`restore_store`): the local store's last checkpoint says which
Kafka checkpoint its state equals (``meta["kafka_checkpoint"]``) and how far it
had read each changelog (``meta["changelog"]``). Kafka's committed offset for the
input partition carries the id of the last committed checkpoint as metadata.

* local state at or behind Kafka's: replay each changelog from the recorded
  position to its end (records are whole values, so replaying a suffix again is
  harmless);
* local state ahead of Kafka's (a crash between the local commit and the
  transaction commit), or no local state: start from an empty store and replay
  each changelog from its beginning.

Reads use ``read_committed`` up to the last stable offset, after the partition's
producer has fenced any previous owner (which aborts its open transaction), so
nothing uncommitted or aborted is restored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from .._state.store import Commit, StateStore, Writes

log = logging.getLogger("streamlib.kafka")

#: Header of changelog records: ``{application_id}/{table}``.
STORE_HEADER = "streamlib.store"
#: Local checkpoint meta: the Kafka checkpoint id the local state corresponds to.
META_KAFKA = "kafka_checkpoint"
#: Local checkpoint meta: per table, the next changelog offset the local state has not read.
META_CHANGELOG = "changelog"


def changelog_prefix(application_id: str) -> str:
    return f"{application_id}-"


def changelog_topic(prefix: str, table: str) -> str:
    return f"{prefix}{table}-changelog"


def table_of(prefix: str, topic: str) -> str | None:
    """The table a changelog topic belongs to, or None when it is not one of ``prefix``."""
    suffix = "-changelog"
    if topic.startswith(prefix) and topic.endswith(suffix) and len(topic) > len(prefix) + len(suffix):
        return topic[len(prefix) : -len(suffix)]
    return None


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_table_name(table: str, application_id: str) -> None:
    if not table or not set(table) <= _TOPIC_CHARS:
        raise ValueError(
            f"state table {table!r} of application {application_id!r} cannot name a Kafka changelog topic "
            "(letters, digits, '.', '_' and '-' only): give the stateful operator a name= that can"
        )


class ChangelogBuffer:
    """Commit hook of one partition store: keeps each checkpoint's writes until the sink produces them."""

    __slots__ = ("pending", "suspended")

    def __init__(self) -> None:
        self.pending: dict[int, dict[str, Writes]] = {}
        self.suspended = False

    def __call__(self, commit: Commit) -> None:
        if self.suspended or not commit.writes:
            return
        self.pending[commit.checkpoint_id] = {t: list(w) for t, w in commit.writes.items()}

    def take_upto(self, checkpoint_id: int) -> list[tuple[int, dict[str, Writes]]]:
        """The write sets of checkpoints up to ``checkpoint_id``, oldest first (removed from the buffer)."""
        ids = sorted(i for i in self.pending if i <= checkpoint_id)
        return [(i, self.pending.pop(i)) for i in ids]

    def clear(self) -> None:
        self.pending.clear()


@dataclass
class RestoreResult:
    """What :func:`restore_store` did."""

    full: bool
    records: int
    positions: dict[str, int]
    checkpoint_id: int | None


def local_state_is_usable(store: StateStore, kafka_checkpoint: int | None) -> bool:
    """True when the local store's state is at or behind Kafka's committed checkpoint."""
    last = store.last_checkpoint()
    if last is None:
        return False
    local = last.meta.get(META_KAFKA)
    if local is None:
        return False
    return kafka_checkpoint is not None and int(local) <= kafka_checkpoint


def local_start(
    store: StateStore, make_store: Callable[[], StateStore], kafka_checkpoint: int | None
) -> tuple[StateStore, dict[str, int], bool]:
    """Where replaying the changelogs into ``store`` starts: ``(store, positions, usable)``.

    A local store at or behind Kafka's committed checkpoint is kept, with the changelog
    positions of its last checkpoint; any other is replaced by ``make_store()`` (empty,
    positions ``{}``: from the beginning). Restores and standby replicas both start here.
    """
    if local_state_is_usable(store, kafka_checkpoint):
        last = store.last_checkpoint()
        assert last is not None
        return store, dict(last.meta.get(META_CHANGELOG, {})), True
    last = store.last_checkpoint()
    if last is not None:
        log.info("local state (checkpoint %s) is ahead of Kafka's (%s) or unknown: rebuilding from changelogs",
                 last.meta.get(META_KAFKA), kafka_checkpoint)
    return make_store(), {}, False


def checkpoint_replayed(store: StateStore, kafka_checkpoint: int | None, positions: dict[str, int]) -> int:
    """Commit what was replayed into ``store`` as a local checkpoint; returns its id.

    Its meta says the state is that of Kafka checkpoint ``kafka_checkpoint`` (or a
    later one) and how far each changelog was read: a later restore replays only
    what follows. The store's changelog hook does not see it (nothing to send).
    """
    last = store.last_checkpoint()
    new_id = max(last.id if last is not None else 0, kafka_checkpoint or 0) + 1
    buffer = _buffer_of(store)
    if buffer is not None:
        buffer.suspended = True
    try:
        store.checkpoint(new_id, {META_KAFKA: kafka_checkpoint, META_CHANGELOG: dict(positions)})
    finally:
        if buffer is not None:
            buffer.suspended = False
    return new_id


def apply_records(store: StateStore, table: str, records: list[Any], header: bytes) -> int:
    """Write changelog ``records`` of ``table`` (those with this app's ``header``) into ``store``."""
    batch = [(r.key, r.value) for r in records if _header(r) == header]
    if batch:
        store.table(table).write(batch)
    return len(batch)


def changelog_consumer(consumer_kwargs: dict[str, Any]) -> AIOKafkaConsumer:
    """A (not started) consumer of changelogs: no group, committed records only, from the earliest
    offset when a position is gone (compacted away)."""
    return AIOKafkaConsumer(**{**consumer_kwargs, "group_id": None, "isolation_level": "read_committed",
                               "enable_auto_commit": False, "auto_offset_reset": "earliest"})


async def restore_store(
    store: StateStore,
    *,
    make_store: Callable[[], StateStore],
    consumer_kwargs: dict[str, Any],
    changelogs: dict[str, str],
    partition: int,
    kafka_checkpoint: int | None,
    store_header: Callable[[str], bytes],
    timeout: float = 300.0,
    progress: Callable[[int], None] | None = None,
    name: str = "",
) -> tuple[StateStore, RestoreResult]:
    """Bring ``store`` to Kafka's committed state; returns the store to use (a fresh one after a wipe).

    ``changelogs`` maps table name to changelog topic. ``make_store`` makes an
    empty store when the local one cannot be reused. ``progress(records_left)`` is
    called as the replay goes (the ``restore-remaining-records`` metric); the
    replay logs its start, its progress every few seconds and its end, naming the
    task ``name``. A store kept warm by a standby replica is a local store like
    any other: only what follows its last checkpoint is replayed.
    """
    store, start_positions, usable = local_start(store, make_store, kafka_checkpoint)
    last = store.last_checkpoint()
    positions = dict(start_positions)
    records = 0
    if changelogs:
        records, positions = await _replay(store, consumer_kwargs, changelogs, partition, start_positions,
                                           store_header, timeout, progress, name or f"task {partition}",
                                           "its local checkpoint" if usable else "an empty store")
    if records or not usable:
        new_id = checkpoint_replayed(store, kafka_checkpoint, positions)
        return store, RestoreResult(not usable, records, positions, new_id)
    return store, RestoreResult(False, 0, positions, last.id if last else None)


def _buffer_of(store: StateStore) -> ChangelogBuffer | None:
    for hook in getattr(store, "_hooks", ()):
        if isinstance(hook, ChangelogBuffer):
            return hook
    return None


async def _replay(
    store: StateStore,
    consumer_kwargs: dict[str, Any],
    changelogs: dict[str, str],
    partition: int,
    start: dict[str, int],
    store_header: Callable[[str], bytes],
    timeout: float,
    progress: Callable[[int], None] | None = None,
    name: str = "",
    origin: str = "",
) -> tuple[int, dict[str, int]]:
    consumer = changelog_consumer(consumer_kwargs)
    try:
        await consumer.start()  # inside: a partition closed while this starts still closes it
        tps = {TopicPartition(topic, partition): table for table, topic in changelogs.items()}
        consumer.assign(list(tps))
        begin = await consumer.beginning_offsets(list(tps))
        ends = await consumer.end_offsets(list(tps))
        positions: dict[str, int] = {}
        remaining = set()
        for tp, table in tps.items():
            pos = max(int(start.get(table, 0)), begin[tp])
            consumer.seek(tp, pos)
            positions[table] = pos
            if pos < ends[tp]:
                remaining.add(tp)
        records = 0
        started = time.monotonic()
        deadline = started + timeout
        total = sum(ends[tp] - positions[tps[tp]] for tp in remaining)
        if progress is not None:
            progress(total)
        if total:
            log.info("restoring %s: up to %d changelog records to replay from %s", name, total, origin)
        report = started + _REPORT_EVERY
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring from {sorted(tp.topic for tp in remaining)} took over {timeout}s")
            batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=10_000)
            for tp, recs in batches.items():
                table = tps[tp]
                records += apply_records(store, table, recs, store_header(table))
            for tp in list(remaining):
                pos = await consumer.position(tp)
                positions[tps[tp]] = pos
                if pos >= ends[tp]:
                    remaining.discard(tp)
            left = sum(max(0, ends[tp] - positions[tps[tp]]) for tp in remaining)
            if progress is not None:
                progress(left)
            if remaining and time.monotonic() >= report:
                report += _REPORT_EVERY
                log.info("restoring %s: %d records replayed, %d left", name, records, left)
        if total:
            log.info("restored %s: %d records replayed in %.1fs", name, records, time.monotonic() - started)
        return records, positions
    finally:
        await consumer.stop()


#: Seconds between the progress lines of a restore.
_REPORT_EVERY = 5.0


def _header(record: Any) -> bytes | None:
    for k, v in record.headers or ():
        if k == STORE_HEADER:
            return v  # type: ignore[no-any-return]
    return None
