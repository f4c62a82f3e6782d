"""Serializing and sending :class:`ProducerRecord` s through an aiokafka producer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from ._errors import ProduceError
from ._records import ProducerRecord
from ._serde import BytesSerde
from ._settings import ProducerSettings

if TYPE_CHECKING:
    import asyncio

    from aiokafka import AIOKafkaProducer


class RecordSender:
    """Sends records with the settings' serdes; ``default_topic`` turns bare values into records."""

    __slots__ = ("key_ser", "value_ser", "default_topic", "stage_name")

    def __init__(self, settings: ProducerSettings, default_topic: str | None, stage_name: str) -> None:
        self.key_ser = None if type(settings.key_serde) is BytesSerde else settings.key_serde.serialize
        self.value_ser = None if type(settings.value_serde) is BytesSerde else settings.value_serde.serialize
        self.default_topic = default_topic
        self.stage_name = stage_name

    def as_record(self, element: Any) -> ProducerRecord[Any, Any]:
        if isinstance(element, ProducerRecord):
            return element
        if self.default_topic is not None:
            return ProducerRecord(self.default_topic, element)
        raise TypeError(
            f"{self.stage_name} takes ProducerRecord elements (or give it a topic= for bare values), "
            f"got {type(element).__name__}: {element!r:.200}"
        )

    async def send(self, producer: AIOKafkaProducer, rec: ProducerRecord[Any, Any]) -> asyncio.Future[Any]:
        """Hand ``rec`` to the producer; the future resolves to its RecordMetadata."""
        try:
            key = rec.key if self.key_ser is None else self.key_ser(rec.key)
            value = rec.value if self.value_ser is None else self.value_ser(rec.value)
        except Exception as exc:
            raise ProduceError(f"cannot serialize a record for topic {rec.topic!r}: {exc!r}; record: {rec!r:.300}") from exc
        try:
            return await producer.send(  # type: ignore[no-any-return]
                rec.topic, value, key=key, partition=rec.partition, timestamp_ms=rec.timestamp_ms,
                headers=list(rec.headers) if rec.headers else None,
            )
        except (AssertionError, TypeError, ValueError, KafkaError) as exc:
            raise ProduceError(f"cannot send a record to topic {rec.topic!r}: {exc!r}; record: {rec!r:.300}") from exc


def delivery_error(rec: ProducerRecord[Any, Any], exc: BaseException) -> ProduceError:
    where = rec.topic if rec.partition is None else f"{rec.topic}-{rec.partition}"
    err = ProduceError(f"producing to {where} failed: {exc!r}")
    err.__cause__ = exc
    return err
