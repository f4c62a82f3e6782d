"""The Kafka ```python blocks of README.md and docs/*.md run as written, against the test broker.

A block that reads ``KAFKA_BOOTSTRAP_SERVERS`` (default ``localhost:9092``) is a Kafka block; here that
variable points at the session's broker. The blocks create their own topics with fresh names and end
by themselves. Extraction, conventions and the other blocks: ``tests/test_doc_blocks.py``.
"""

from __future__ import annotations

import pathlib

import pytest

from streamlib.testing.kafka import KafkaBroker
from test_doc_blocks import TIMEOUT, Block, check_output, programs, run_block

KAFKA = [(b, out) for b, out in programs() if b.needs_kafka]


def test_the_kafka_blocks_are_found() -> None:
    assert {b.path.name for b, _ in KAFKA} >= {"README.md", "kafka.md"}


@pytest.mark.time_limit(TIMEOUT + 30)
@pytest.mark.parametrize(("block", "expected"), KAFKA, ids=[b.id for b, _ in KAFKA])
def test_kafka_block_runs_as_written(
    block: Block, expected: list[str], tmp_path: pathlib.Path, kafka_broker: KafkaBroker
) -> None:
    stdout = run_block(block, tmp_path, env={"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers})
    check_output(block, stdout, expected)
