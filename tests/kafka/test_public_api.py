"""The public surface of streamlib.kafka, and the Kafka example running against the broker."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import streamlib.kafka
import streamlib.kafka.testing
from streamlib.testing.kafka import KafkaBroker

ROOT = pathlib.Path(__file__).resolve().parents[2]

KAFKA = [
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


def test_kafka_exports_exactly_the_public_names() -> None:
    assert sorted(streamlib.kafka.__all__) == KAFKA
    for name in KAFKA:
        assert getattr(streamlib.kafka, name) is not None
        assert not name.startswith("_")
    assert streamlib.kafka.testing.__all__ == ["end_offsets", "open_transactions", "produce", "read_topic"]


def test_public_classes_have_docstrings() -> None:
    for name in KAFKA:
        obj = getattr(streamlib.kafka, name)
        assert (obj.__doc__ or "").strip(), f"streamlib.kafka.{name} has no docstring"
    for factory in (streamlib.kafka.KafkaSource, streamlib.kafka.KafkaSink, streamlib.kafka.KafkaFlow,
                    streamlib.kafka.Committer):
        for attr in vars(factory):
            if not attr.startswith("_"):
                assert (getattr(factory, attr).__doc__ or "").strip(), f"{factory.__name__}.{attr}"


def test_kafka_example_runs_and_checks_itself(kafka_broker: KafkaBroker) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "kafka_exactly_once.py"),
         "--bootstrap", kafka_broker.bootstrap_servers, "--orders", "4000"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Check against plain Python: same results" in proc.stdout
