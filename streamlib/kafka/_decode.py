"""From aiokafka's consumer records to streamlib records, applying the error policy.

:class:`RecordDecoder` deserializes key and value of each raw record with the
settings' serdes. A failure becomes a :class:`DeserializationError` naming the
record's topic, partition and offset, and then the policy decides:

* ``"fail"``: the error is raised (the source fails the stream with it);
* ``"skip"``: the record is logged at WARNING and counted, not emitted;
* ``DeadLetter(topic)``: the record is returned as a dead letter, which the
  caller produces to the dead-letter topic (with the error in its headers)
  before it emits anything that follows the bad record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ._errors import DeserializationError
from ._records import CommittableRecord, KafkaRecord, ProducerRecord
from ._serde import BytesSerde
from ._settings import ConsumerSettings, DeadLetter

log = logging.getLogger("streamlib.kafka")


class DeadLetterRecord:
    """An undecodable record and why; ``to_producer_record()`` is what goes to the dead-letter topic."""

    __slots__ = ("raw", "error", "topic")

    def __init__(self, raw: Any, error: DeserializationError, topic: str) -> None:
        self.raw = raw
        self.error = error
        self.topic = topic

    def to_producer_record(self) -> ProducerRecord[bytes, bytes]:
        raw, err = self.raw, self.error
        headers = [
            *(raw.headers or ()),
            ("streamlib.error", str(err).encode()),
            ("streamlib.error.type", type(err.cause).__name__.encode()),
            ("streamlib.error.field", err.field.encode()),
            ("streamlib.source.topic", raw.topic.encode()),
            ("streamlib.source.partition", str(raw.partition).encode()),
            ("streamlib.source.offset", str(raw.offset).encode()),
        ]
        return ProducerRecord(self.topic, raw.value, raw.key, timestamp_ms=raw.timestamp, headers=headers)


class RecordDecoder:
    """Turns a batch of raw records of one partition into :class:`KafkaRecord` s."""

    __slots__ = ("key_serde", "value_serde", "policy", "handle", "skipped", "dead_lettered", "_plain_key", "_plain_value")

    def __init__(self, settings: ConsumerSettings, handle: Any = None) -> None:
        self.key_serde = settings.key_serde
        self.value_serde = settings.value_serde
        self.policy = settings.on_deserialization_error
        self.handle = handle
        self.skipped = 0
        self.dead_lettered = 0
        self._plain_key = type(self.key_serde) is BytesSerde
        self._plain_value = type(self.value_serde) is BytesSerde

    def decode(self, raws: Sequence[Any]) -> tuple[list[Any], list[DeadLetterRecord]]:
        """The decoded records, and the dead letters (empty unless the policy is DeadLetter)."""
        handle = self.handle
        if self._plain_key and self._plain_value:
            if handle is None:
                return [
                    KafkaRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers or ())
                    for r in raws
                ], []
            return [
                CommittableRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers or (), handle)
                for r in raws
            ], []
        out: list[Any] = []
        dead: list[DeadLetterRecord] = []
        kd = None if self._plain_key else self.key_serde.deserialize
        vd = None if self._plain_value else self.value_serde.deserialize
        for r in raws:
            field = "key"
            try:
                key = r.key if kd is None else kd(r.key)
                field = "value"
                value = r.value if vd is None else vd(r.value)
            except Exception as cause:
                error = DeserializationError(r.topic, r.partition, r.offset, field, cause)
                self._on_error(r, error, dead)
                continue
            if handle is None:
                out.append(KafkaRecord(r.topic, r.partition, r.offset, r.timestamp, key, value, r.headers or ()))
            else:
                out.append(
                    CommittableRecord(r.topic, r.partition, r.offset, r.timestamp, key, value, r.headers or (), handle)
                )
        return out, dead

    def _on_error(self, raw: Any, error: DeserializationError, dead: list[DeadLetterRecord]) -> None:
        policy = self.policy
        if policy == "fail":
            raise error from error.cause
        if policy == "skip":
            self.skipped += 1
            log.warning("skipping record: %s", error)
            return
        assert isinstance(policy, DeadLetter)
        self.dead_lettered += 1
        dead.append(DeadLetterRecord(raw, error, policy.topic))
