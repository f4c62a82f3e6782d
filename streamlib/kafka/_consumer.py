"""What every Kafka source run shares: its consumer, subscription, rebalances and dead letters.

A source run owns exactly one ``AIOKafkaConsumer``: created and started when
the run starts, subscribed (group assignment) or assigned (explicit
partitions), closed when the run ends however it ends. Rebalance callbacks go
to the run's ``on_assigned``/``on_revoked`` (awaited: the group waits for them).
Dead letters are produced by a producer the run creates on the first bad record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from ._decode import DeadLetterRecord
from ._errors import ProduceError
from ._produce import RecordSender
from ._settings import ConsumerSettings, DeadLetter

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

log = logging.getLogger("streamlib.kafka")

Topics = str | Sequence[str] | Sequence[TopicPartition]


def parse_topics(topics: Topics) -> tuple[tuple[str, ...], tuple[TopicPartition, ...]]:
    """(topic names to subscribe to, or explicit partitions to assign); exactly one is non-empty."""
    if isinstance(topics, str):
        topics = [topics]
    items = list(topics)
    if not items:
        raise ValueError("a Kafka source needs at least one topic (or topic-partition)")
    if all(isinstance(t, TopicPartition) for t in items):
        return (), tuple(items)  # type: ignore[arg-type]
    if all(isinstance(t, str) and t for t in items):
        return tuple(items), ()  # type: ignore[arg-type]
    raise TypeError(f"topics must be topic names or TopicPartitions (not mixed), got {items!r}")


class RebalanceHooks(Protocol):
    async def on_assigned(self, partitions: set[TopicPartition]) -> None: ...

    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RebalanceHooks) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.owner.on_revoked(set(revoked))
        except Exception:
            log.exception("handling the revocation of %s failed", sorted(revoked))
            raise

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self.owner.on_assigned(set(assigned))
        except Exception:
            log.exception("handling the assignment of %s failed", sorted(assigned))
            raise


class ConsumerRun:
    """One run's consumer; subclasses implement the fetch loop and the rebalance hooks."""

    def __init__(self, settings: ConsumerSettings, topics: Topics, **consumer_overrides: Any) -> None:
        self.settings = settings
        self.topic_names, self.explicit = parse_topics(topics)
        self.consumer_overrides = consumer_overrides
        self.consumer: AIOKafkaConsumer | None = None
        self.dead_producer: AIOKafkaProducer | None = None
        self._known: set[TopicPartition] = set()

    async def start_consumer(self) -> AIOKafkaConsumer:
        consumer = self.settings.create_consumer(**self.consumer_overrides)
        self.consumer = consumer
        await consumer.start()
        if self.explicit:
            consumer.assign(list(self.explicit))
            await self.on_assigned(set(self.explicit))
        else:
            consumer.subscribe(list(self.topic_names), listener=_Listener(self))
        return consumer

    @property
    def tracks_assignment(self) -> bool:
        """True when no group calls the rebalance hooks: ``sync_assignment`` must be polled."""
        return not self.explicit and self.settings.group_id is None

    async def sync_assignment(self) -> None:
        """Without a group, aiokafka assigns every partition itself and calls no listener:
        compare its assignment with the last one seen and call the hooks for the difference."""
        consumer = self.consumer
        assert consumer is not None
        now = set(consumer.assignment())
        known = self._known
        if now != known:
            self._known = now
            if known - now:
                await self.on_revoked(known - now)
            if now - known:
                await self.on_assigned(now - known)

    async def close_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        producer, self.dead_producer = self.dead_producer, None
        try:
            if consumer is not None:
                await consumer.stop()
        finally:
            if producer is not None:
                await producer.stop()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Partitions were assigned (before fetching from them starts)."""

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions are being taken away (the group waits for this to return)."""

    async def send_dead_letters(self, dead: list[DeadLetterRecord]) -> None:
        """Produce dead letters and wait until the broker has them."""
        policy = self.settings.on_deserialization_error
        assert isinstance(policy, DeadLetter)
        if self.dead_producer is None:
            settings = policy.producer or self.settings.producer_settings()
            producer = settings.create_producer()
            await producer.start()
            self.dead_producer = producer
        await send_dead_letters(self.dead_producer, dead)


async def send_dead_letters(producer: AIOKafkaProducer, dead: list[DeadLetterRecord]) -> None:
    """Send ``dead`` (in order, as record batches like every producer) and wait for every delivery."""
    records = [d.to_producer_record() for d in dead]
    of = {id(rec): d for rec, d in zip(records, dead)}
    try:
        sent = await RecordSender.plain("dead letters").send_batches(producer, records)
    except ProduceError as exc:
        raise ProduceError(f"cannot send dead letters to {records[0].topic!r}: {exc}") from exc
    for rec, fut, n, partition in sent:
        try:
            await fut
        except Exception as exc:
            d = of[id(rec)]
            raise ProduceError(
                f"dead-letter topic {d.topic!r} (partition {partition}) did not take a batch of {n} dead letters, "
                f"the first for record {d.raw.topic}-{d.raw.partition}@{d.raw.offset}: {exc!r}"
            ) from exc


