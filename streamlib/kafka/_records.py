"""The elements Kafka sources emit and Kafka sinks take.

* :class:`KafkaRecord`: one consumed record, key and value deserialized.
* :class:`CommittableRecord`: a consumed record that also knows how to commit
  its offset (through a committer sink, after it was processed).
* :class:`CommittableOffset`: only the offset part of a committable record, for
  carrying through a flow as a pass-through.
* :class:`ProducerRecord`: a record to produce; ``passthrough`` rides along to
  the producer flow's :class:`ProducerResult` (typically a committable offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

if TYPE_CHECKING:
    from ._committer import CommitHandle

K = TypeVar("K")
V = TypeVar("V")

Headers = Sequence[tuple[str, bytes]]


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
