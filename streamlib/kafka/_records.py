"""The elements Kafka sources emit and Kafka sinks take.

* :class:`KafkaRecord`: one consumed record, key and value deserialized.
* :class:`CommittableRecord`: a consumed record that also knows how to commit
  its offset (through a committer sink, after it was processed).
* :class:`CommittableOffset`: only the offset part of a committable record, for
  carrying through a flow as a pass-through.
* :class:`ProducerRecord`: a record to produce; ``passthrough`` rides along to
  the producer flow's :class:`ProducerResult` (typically a committable offset).
* :class:`CommitHandle`: the consumer of one committable-source run, which the
  records it emitted commit through (``_committer.py`` holds the committers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import msgspec
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition

from ._errors import CommitError
from ._wait import event_within

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

K = TypeVar("K")
V = TypeVar("V")

Headers = Sequence[tuple[str, bytes]]

log = logging.getLogger("streamlib.kafka")

#: Seconds a stopping committable source waits for a first committer to show up.
NO_COMMITTER_GRACE = 0.5


class KafkaRecord(msgspec.Struct, Generic[K, V], frozen=True):
    """A consumed record: where it came from, its record time (epoch ms), key, value and headers."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: K | None
    value: V | None
    headers: Headers = ()

    @property
    def position(self) -> str:
        """``topic-partition@offset``, as errors and logs name a record."""
        return f"{self.topic}-{self.partition}@{self.offset}"


class CommittableOffset(msgspec.Struct, frozen=True):
    """The offset of one consumed record, committable through the source that read it.

    Committing it commits ``offset + 1`` for its partition (Kafka's "next offset to read").
    """

    topic: str
    partition: int
    offset: int
    handle: CommitHandle

    @property
    def group_id(self) -> str:
        return self.handle.group_id


class CommittableRecord(KafkaRecord[K, V], frozen=True):
    """A consumed record from a committable source; commit it with ``Committer.sink()``."""

    handle: CommitHandle | None = None

    @property
    def committable_offset(self) -> CommittableOffset:
        """This record's offset, to carry through a flow (e.g. as a producer pass-through)."""
        assert self.handle is not None
        return CommittableOffset(self.topic, self.partition, self.offset, self.handle)


class ProducerRecord(msgspec.Struct, Generic[K, V], frozen=True):
    """A record to produce. ``partition`` None lets the partitioner choose from the key;
    ``timestamp_ms`` None lets the producer use the current time; ``passthrough`` is
    not produced, it is handed back in the :class:`ProducerResult`.
    """

    topic: str
    value: V | None
    key: K | None = None
    partition: int | None = None
    timestamp_ms: int | None = None
    headers: Headers = ()
    passthrough: Any = None


class ProducerResult(msgspec.Struct, Generic[K, V], frozen=True):
    """A produced record and where it landed."""

    record: ProducerRecord[K, V]
    partition: int
    offset: int

    @property
    def passthrough(self) -> Any:
        return self.record.passthrough


class Committing(Protocol):
    """A committer sink's run, as a :class:`CommitHandle` sees it."""

    async def flush(self, handle: CommitHandle, partitions: set[TopicPartition]) -> None: ...


class CommitHandle:
    """The consumer of one committable-source run, as seen by committers."""

    __slots__ = ("consumer", "group_id", "emitted", "committed", "_progress", "_committers", "_seen_committer",
                 "_lock", "closed")

    def __init__(self, consumer: AIOKafkaConsumer, group_id: str) -> None:
        self.consumer = consumer
        self.group_id = group_id
        #: Per partition: one past the last offset the source emitted.
        self.emitted: dict[TopicPartition, int] = {}
        #: Per partition: the last offset committed through this handle.
        self.committed: dict[TopicPartition, int] = {}
        self._progress = asyncio.Event()
        self._committers: set[Committing] = set()
        self._seen_committer = False
        self._lock = asyncio.Lock()
        self.closed = False

    def register(self, committer: Committing) -> None:
        self._committers.add(committer)
        self._seen_committer = True

    def unregister(self, committer: Committing) -> None:
        self._committers.discard(committer)
        self._progress.set()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (next offsets to read) for the partitions still assigned.

        Commits through one handle go one at a time and never move a partition back.
        """
        async with self._lock:
            await self._commit(offsets)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` were revoked: whoever gets them next starts from what Kafka has."""
        for tp in partitions:
            self.emitted.pop(tp, None)
            self.committed.pop(tp, None)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.closed:
            log.warning("offsets %s not committed: the source's consumer is closed", _fmt(offsets))
            return
        assigned = self.consumer.assignment()
        committed = self.committed
        mine = {tp: off for tp, off in offsets.items() if tp in assigned and off > committed.get(tp, -1)}
        gone = {tp: off for tp, off in offsets.items() if tp not in assigned}
        if gone:
            log.info("not committing %s: partitions no longer assigned", _fmt(gone))
        if not mine:
            return
        try:
            await self.consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit of %s failed after a rebalance (records will be read again): %s", _fmt(mine), exc)
            return
        except KafkaError as exc:
            raise CommitError(f"committing {_fmt(mine)} for group {self.group_id!r} failed: {exc!r}") from exc
        for tp, off in mine.items():
            if off > self.committed.get(tp, -1):
                self.committed[tp] = off
        self._progress.set()

    async def flush_committers(self, partitions: set[TopicPartition]) -> None:
        """Before ``partitions`` are revoked: every committer commits what it holds for them."""
        for committer in list(self._committers):
            try:
                await committer.flush(self, partitions)
            except Exception as exc:  # noqa: BLE001 - a failed commit only means re-reading
                log.warning("commit before rebalance failed: %r", exc)

    def drained(self) -> bool:
        assigned = self.consumer.assignment()
        return all(self.committed.get(tp, -1) >= off for tp, off in self.emitted.items() if tp in assigned)

    def committers_done(self) -> bool:
        """Some committer used this handle and every one of them has finished."""
        return self._seen_committer and not self._committers

    async def wait_drained(self, timeout: float) -> None:
        """Wait until every emitted offset is committed, every committer finished, or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A committer joins when the first offset reaches it; none within a moment after
        # the end means there is none (the stream was consumed without committing).
        unseen_deadline = loop.time() + min(timeout, NO_COMMITTER_GRACE)
        while not self.drained() and not self.committers_done():
            if not self._seen_committer and loop.time() >= unseen_deadline:
                return
            left = deadline - loop.time()
            if left <= 0:
                log.warning("stopping with uncommitted offsets: emitted %s, committed %s",
                            _fmt(self.emitted), _fmt(self.committed))
                return
            self._progress.clear()
            await event_within(self._progress, min(left, 0.1))


def _fmt(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}-{tp.partition}:{off}" for tp, off in sorted(offsets.items())) or "nothing"
