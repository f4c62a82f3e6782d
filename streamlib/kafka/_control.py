"""The materialized value of a Kafka source: stop it, watch it, read its counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SourceMetrics:
    """Counters of one source run."""

    records: int = 0
    chunks: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    pauses: int = 0
    rebalances: int = 0
    assigned: set[Any] = field(default_factory=set)


class Control:
    """Handle on a running Kafka source.

    ``stop()`` asks the source to stop fetching and complete its stream;
    ``await wait_stopped()`` returns once its consumer is closed.
    """

    def __init__(self) -> None:
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.metrics = SourceMetrics()
        self._consumer: Any = None

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopped = loop.create_future()
        self._wake = asyncio.Event()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def stop(self) -> None:
        """Stop fetching and complete the stream (a committable source first drains its commits)."""
        self._stop_requested = True
        if self._wake is not None:
            self._wake.set()

    async def wait_stopped(self) -> None:
        """Wait until the source has closed its consumer."""
        if self._stopped is None:
            raise RuntimeError("the source has not been materialized")
        await asyncio.shield(self._stopped)

    @property
    def is_stopped(self) -> bool:
        return self._stopped is not None and self._stopped.done()

    @property
    def assignment(self) -> set[Any]:
        """The topic-partitions the source's consumer holds now."""
        return set(self.metrics.assigned)

    @property
    def paused_partitions(self) -> set[Any]:
        """Partitions whose fetching is paused now because downstream is slow."""
        consumer = self._consumer
        return set(consumer.paused()) if consumer is not None and not getattr(consumer, "_closed", True) else set()

    def _set_stopped(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def __repr__(self) -> str:
        state = "stopped" if self.is_stopped else ("stopping" if self._stop_requested else "running")
        return f"<Control {state} records={self.metrics.records}>"
