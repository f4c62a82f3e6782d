"""``GlobalTable``: a (compacted) topic replicated whole on every instance, for lookups.

Every instance reads every partition of the topic with a consumer of its own
(no group, ``read_committed``): :meth:`GlobalTable.start` reads from the
beginning up to the end offsets it finds (the last stable offsets) and returns
once the table holds all of it; a background task then keeps applying new
records. The latest value per key is kept in memory (a record with a null
value deletes its key), so it suits small reference data: customers,
products, exchange rates. Unlike a task's table it is not co-partitioned with
anything and has no changelog: the topic itself is its changelog.

A :class:`KafkaApp` given ``global_tables=[...]`` starts (restores) them before
it joins its group and stops them when it stops. Lookups see whatever the
table holds when the element is processed: a record processed again after a
crash may see a newer value (Kafka Streams' global tables behave alike).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from aiokafka.structs import TopicPartition

from .._table.view import TableView
from ._decode import RecordDecoder
from ._errors import KafkaStreamError
from ._settings import ConsumerSettings, DeadLetter

log = logging.getLogger("streamlib.kafka")

K = TypeVar("K")
V = TypeVar("V")


class GlobalTable(TableView[K, V]):
    """The latest value per key of every partition of ``topic``, on every instance; ``get(key)``.

    Keys and values are decoded with ``consumer``'s serdes (its group id is not
    used). ``await table.start()`` restores it (reads the topic to its end) and
    keeps it up to date until ``await table.stop()``; or ``async with table:``;
    or pass it to ``KafkaApp(global_tables=[table])``, which restores it before
    processing anything.

    >>> customers = GlobalTable("customers", ConsumerSettings(servers, key_serde=StrSerde(),
    ...                                                      value_serde=JsonSerde(Customer)))
    >>> async with customers:
    ...     customers.get("c-17")      # Customer(...) or None
    """

    def __init__(self, topic: str, consumer: ConsumerSettings, *, restore_timeout: float = 300.0) -> None:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"GlobalTable needs a topic name, got {topic!r}")
        if isinstance(consumer.on_deserialization_error, DeadLetter):
            raise ValueError(
                f"GlobalTable({topic!r}) reads with its own consumer and no producer: on_deserialization_error "
                "must be 'fail' or 'skip', not a DeadLetter"
            )
        self.topic = topic
        self.settings = dataclasses.replace(consumer, isolation_level="read_committed")
        self.restore_timeout = restore_timeout
        self._rows: dict[K, V] = {}
        self._consumer: Any = None
        self._follower: asyncio.Task[None] | None = None
        self._decoder = RecordDecoder(self.settings)
        self._tps: list[TopicPartition] = []
        self.error: BaseException | None = None
        #: Records applied (restore and updates).
        self.records = 0

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: K, default: V | None = None) -> V | None:
        """The latest value of ``key``, or ``default`` when the topic has none (or a tombstone)."""
        return self._rows.get(key, default)

    def as_of(self, key: K, timestamp: int) -> V | None:
        raise TypeError(f"GlobalTable({self.topic!r}) keeps the latest value per key only, no history")

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self._rows.items()))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @property
    def running(self) -> bool:
        """Started, and its background consumer is still reading."""
        return self._follower is not None and not self._follower.done()

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the topic from the beginning to its current end, then keep up in the background."""
        if self._consumer is not None:
            raise RuntimeError(f"GlobalTable({self.topic!r}) is already started")
        consumer = self.settings.create_consumer(group_id=None, enable_auto_commit=False,
                                                 auto_offset_reset="earliest")
        self._consumer = consumer
        try:
            await consumer.start()
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                cluster = await consumer._client.fetch_all_metadata()
                partitions = cluster.partitions_for_topic(self.topic)
            if not partitions:
                raise KafkaStreamError(f"the topic {self.topic!r} of GlobalTable does not exist; create it first")
            self._tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(self._tps)
            await consumer.seek_to_beginning(*self._tps)
            self._rows.clear()
            await self.caught_up(self.restore_timeout)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        log.info("global table %s restored: %d keys from %d records", self.topic, len(self._rows), self.records)
        self._follower = asyncio.ensure_future(self._follow())

    async def caught_up(self, timeout: float = 60.0) -> None:
        """Wait until the table holds every record committed to the topic when this is called."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError(f"GlobalTable({self.topic!r}) is not started")
        ends = await consumer.end_offsets(self._tps)  # last stable offsets (read_committed)
        deadline = time.monotonic() + timeout
        while True:
            if self.error is not None:
                raise self.error
            behind = [tp for tp in self._tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"GlobalTable({self.topic!r}) did not read {behind} to their end in {timeout}s")
            if self._follower is None:
                self._apply(await consumer.getmany(timeout_ms=200, max_records=10_000))
            else:
                await asyncio.sleep(0.02)

    async def _follow(self) -> None:
        consumer = self._consumer
        try:
            while True:
                self._apply(await consumer.getmany(timeout_ms=500, max_records=10_000))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - kept for readers (caught_up, KafkaApp) to raise
            log.error("global table %s stopped following its topic: %r", self.topic, exc)
            self.error = exc

    def _apply(self, batches: dict[TopicPartition, list[Any]]) -> None:
        rows = self._rows
        for raws in batches.values():
            records, _dead = self._decoder.decode(raws)
            self.records += len(raws)
            for rec in records:
                if rec.value is None:
                    rows.pop(rec.key, None)
                else:
                    rows[rec.key] = rec.value

    async def stop(self) -> None:
        """Stop following the topic (the rows stay readable)."""
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            await asyncio.wait([follower])
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> GlobalTable[K, V]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"GlobalTable({self.topic!r}, {len(self._rows)} keys{', running' if self.running else ''})"
