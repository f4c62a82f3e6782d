"""Errors raised by streamlib's Kafka stages; each names the topic/partition/offset it concerns."""

from __future__ import annotations


class KafkaStreamError(Exception):
    """Base class of the errors streamlib's Kafka stages raise themselves."""


class DeserializationError(KafkaStreamError, ValueError):
    """A record's key or value could not be deserialized (or failed validation)."""

    def __init__(self, topic: str, partition: int, offset: int, field: str, cause: BaseException) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.field = field
        self.cause = cause
        super().__init__(
            f"cannot deserialize the {field} of record {topic}-{partition}@{offset}: "
            f"{type(cause).__name__}: {cause}"
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, int, str, BaseException]]:
        return (type(self), (self.topic, self.partition, self.offset, self.field, self.cause))


class ProduceError(KafkaStreamError):
    """A record could not be produced (serialized, sent or acknowledged)."""


class CommitError(KafkaStreamError):
    """Consumer offsets could not be committed."""


class TransactionError(KafkaStreamError):
    """A Kafka transaction of an exactly-once pipeline failed."""
