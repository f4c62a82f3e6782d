"""Small helpers shared by the Kafka tests."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streamlib import Flow
from streamlib._dsl.module import Module
from streamlib._runtime.signals import Signal
from streamlib.stage import Stage, StageLogic


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def committed_offsets(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


class _SignalTap(Stage):
    """Passes chunks through and records every chunk and signal it sees, in order."""

    name = "signal_tap"

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def materialize(self, ctx: Any) -> tuple[StageLogic, None]:
        seen = self.seen

        class _Logic(StageLogic):
            def on_chunk(self, chunk: list[Any]) -> list[Any]:
                seen.append(list(chunk))
                return chunk

            def on_signal(self, signal: Signal) -> None:
                seen.append(signal)
                return None

        return _Logic(), None


def signal_tap(seen: list[Any]) -> Flow[Any, Any, None]:
    """A flow that appends each chunk (as a list) and each signal to ``seen``."""
    return Flow(Module.of(_SignalTap(seen)))
