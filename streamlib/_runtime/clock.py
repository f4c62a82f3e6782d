"""Clocks for processing time.

Stages never call ``time`` or ``asyncio.sleep`` directly: they ask the run's
clock, so the test kit can swap in :class:`~streamlib.testing.VirtualClock` and
window or timer tests run without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Processing time in seconds (monotonic), timers, and wall-clock milliseconds."""

    def now(self) -> float:
        """Monotonic processing time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Call ``callback`` once ``now()`` reaches ``when``."""
        ...

    def wall_ms(self) -> int:
        """Wall-clock time in epoch milliseconds."""
        ...


class LoopClock:
    """The event loop's clock: real time."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_at(when, callback)

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000
