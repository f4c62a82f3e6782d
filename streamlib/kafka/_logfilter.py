"""Keeping aiokafka's retried NOT_ENOUGH_REPLICAS warnings of transaction verification out of WARNING logs.

Kafka 3.9 brokers verify every transactional produce request with the
transaction coordinator first (KIP-890). A verification that fails for a
transient reason (``CONCURRENT_TRANSACTIONS`` while the previous transaction
of the producer is still completing, as after every commit, rebalance or
restart) is reported to clients that speak produce requests older than v11 —
aiokafka among them — as ``NOT_ENOUGH_REPLICAS``. aiokafka retries the batch
(it succeeds moments later) and logs ``Got error produce response on
topic-partition ..., retrying. Error: NotEnoughReplicasError`` at WARNING: tens
of lines per rebalance that look like a cluster losing replicas.

:class:`RetriedVerificationFilter`, installed on the ``aiokafka.producer.sender``
logger by every :class:`KafkaApp` run, tells the two cases apart by the
partition's metadata as the app's transactional producers last saw it: when
every replica of the partition is in sync, the broker cannot be short of
in-sync replicas, so the error is the verification one and the record is
demoted to DEBUG (still there for a DEBUG handler). When the in-sync replica
set is smaller than the replica set, or the partition is unknown to the app's
producers, the WARNING stays: real under-replication still shows.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from aiokafka.errors import NotEnoughReplicasError
from aiokafka.structs import TopicPartition

SENDER_LOGGER = "aiokafka.producer.sender"
_RETRYING = "Got error produce response on topic-partition"


def retried_not_enough_replicas(record: logging.LogRecord) -> TopicPartition | None:
    """The partition of an aiokafka "retrying ... NotEnoughReplicasError" record, else None."""
    if record.name != SENDER_LOGGER or not isinstance(record.msg, str) or not record.msg.startswith(_RETRYING):
        return None
    args = record.args
    if not isinstance(args, tuple) or len(args) != 2:
        return None
    tp, error = args
    is_error = error is NotEnoughReplicasError or isinstance(error, NotEnoughReplicasError)
    return tp if is_error and isinstance(tp, TopicPartition) else None


def replicas_in_sync(cluster: Any, tp: TopicPartition) -> bool | None:
    """Whether every replica of ``tp`` is in sync per ``cluster`` (aiokafka metadata); None when unknown."""
    partitions = getattr(cluster, "_partitions", {}).get(tp.topic)
    meta = None if partitions is None else partitions.get(tp.partition)
    if meta is None or not meta.replicas:
        return None
    return set(meta.replicas) <= set(meta.isr)


class RetriedVerificationFilter(logging.Filter):
    """Demotes the retried NOT_ENOUGH_REPLICAS of transaction verification to DEBUG (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self._producers: weakref.WeakSet[Any] = weakref.WeakSet()

    def watch(self, producer: Any) -> None:
        """Judge partitions by the metadata of ``producer`` (a transactional producer), while it lives."""
        self._producers.add(producer)

    def in_sync(self, tp: TopicPartition) -> bool | None:
        for producer in list(self._producers):
            verdict = replicas_in_sync(getattr(getattr(producer, "client", None), "cluster", None), tp)
            if verdict is not None:
                return verdict
        return None

    def is_known_retry(self, record: logging.LogRecord) -> bool:
        """True for a retried NOT_ENOUGH_REPLICAS on a partition whose replicas are all in sync."""
        tp = retried_not_enough_replicas(record)
        return tp is not None and self.in_sync(tp) is True

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and self.is_known_retry(record):
            record.levelno = logging.DEBUG
            record.levelname = logging.getLevelName(logging.DEBUG)
        return True


def install() -> RetriedVerificationFilter:
    """The filter on aiokafka's sender logger (added the first time)."""
    logger = logging.getLogger(SENDER_LOGGER)
    for f in logger.filters:
        if isinstance(f, RetriedVerificationFilter):
            return f
    f = RetriedVerificationFilter()
    logger.addFilter(f)
    return f
