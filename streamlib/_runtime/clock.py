"""Clocks for processing time.

Stages never call ``time`` or ``asyncio.sleep`` directly: they ask the run's
clock, so the test kit can swap in :class:`~streamlib.testing.VirtualClock` and
window or timer tests run without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Processing time in seconds (monotonic) and a way to wait for it."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def wall_ms(self) -> int:
        """Wall-clock time in epoch milliseconds."""
        ...


class LoopClock:
    """The event loop's clock: real time."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000
