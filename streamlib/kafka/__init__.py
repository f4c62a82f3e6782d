"""Kafka sources, sinks, serdes and exactly-once pipelines for streamlib.

* Settings: :class:`ConsumerSettings`, :class:`ProducerSettings` (wrapping
  aiokafka's options), :class:`Security`, :class:`DeadLetter`.
* Serdes (msgspec): :class:`JsonSerde`, :class:`MsgPackSerde` (typed by
  ``msgspec.Struct`` classes), :class:`BytesSerde`, :class:`StrSerde`, :class:`IntSerde`.
* Sources: ``KafkaSource.plain / committable / partitioned``; sinks:
  ``KafkaSink.producer / committable``, ``KafkaFlow.producer``, ``Committer.sink``.
* Exactly-once with state: :class:`KafkaApp` (several co-partitioned inputs per task);
  :class:`GlobalTable` for lookups of a topic replicated on every instance.
"""

from aiokafka.structs import TopicPartition

from ._app import AppControl, AppMetrics, KafkaApp
from ._api import Committer, KafkaFlow, KafkaSink, KafkaSource
from ._committer import CommitHandle, CommitterSettings
from ._control import Control, SourceMetrics
from ._global import GlobalTable
from ._errors import CommitError, DeserializationError, KafkaStreamError, ProduceError, TransactionError
from ._records import CommittableOffset, CommittableRecord, KafkaRecord, ProducerRecord, ProducerResult
from ._serde import BytesSerde, IntSerde, JsonSerde, MsgPackSerde, Serde, StrSerde
from ._settings import ConsumerSettings, DeadLetter, ProducerSettings, Security
from ._sink import ProducerMessage, ProducerMessageResult
from ._task import PartitionContext
from ._watermarks import RecordTimeWatermarks

__all__ = [
    "AppControl",
    "AppMetrics",
    "BytesSerde",
    "CommitError",
    "CommitHandle",
    "CommittableOffset",
    "CommittableRecord",
    "Committer",
    "CommitterSettings",
    "ConsumerSettings",
    "Control",
    "DeadLetter",
    "DeserializationError",
    "GlobalTable",
    "IntSerde",
    "JsonSerde",
    "KafkaApp",
    "KafkaFlow",
    "KafkaRecord",
    "KafkaSink",
    "KafkaSource",
    "KafkaStreamError",
    "MsgPackSerde",
    "PartitionContext",
    "ProduceError",
    "ProducerMessage",
    "ProducerMessageResult",
    "ProducerRecord",
    "ProducerResult",
    "ProducerSettings",
    "RecordTimeWatermarks",
    "Security",
    "Serde",
    "SourceMetrics",
    "StrSerde",
    "TopicPartition",
    "TransactionError",
]
