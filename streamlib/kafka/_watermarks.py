"""Watermarks from record time, per partition.

Each assigned partition keeps the largest record timestamp seen and when it
last delivered a record. The source's watermark is the minimum over the active
partitions of ``max timestamp - out_of_orderness``: a partition that delivered
nothing for ``idle_timeout`` seconds is idle and left out, so one quiet
partition does not stall event time. A partition that has not delivered
anything yet holds the watermark back until it turns idle. When every partition
is idle the watermark is the maximum over them (everything seen is complete).
Watermarks only move forward; the source emits one whenever it advances.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .._time.durations import event_ms, seconds


@dataclass(frozen=True)
class RecordTimeWatermarks:
    """Emit watermarks from Kafka record time: ``max timestamp - out_of_orderness``, min over partitions.

    ``out_of_orderness`` is event time, int milliseconds or a timedelta (like
    ``with_timestamps(max_out_of_orderness=)``); it is kept as int ms.
    ``idle_timeout`` is processing time, seconds or a timedelta (kept as float
    seconds): a partition silent that long stops holding time back.

    >>> KafkaSource.plain(settings, "clicks", watermarks=RecordTimeWatermarks(out_of_orderness=timedelta(seconds=2)))
    """

    out_of_orderness: int | timedelta = 0
    idle_timeout: float | timedelta = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_of_orderness", self.bound_ms)
        object.__setattr__(self, "idle_timeout", self.idle_seconds)

    @property
    def bound_ms(self) -> int:
        """``out_of_orderness`` in int milliseconds."""
        return event_ms(self.out_of_orderness, "RecordTimeWatermarks(out_of_orderness)")

    @property
    def idle_seconds(self) -> float:
        """``idle_timeout`` in float seconds."""
        return seconds(self.idle_timeout, "RecordTimeWatermarks(idle_timeout)")


class _Partition:
    __slots__ = ("max_ts", "last_active")

    def __init__(self, now: float) -> None:
        self.max_ts: int | None = None
        self.last_active = now


class WatermarkTracker:
    """Per-partition record time; ``advance(now)`` returns a new watermark or None."""

    __slots__ = ("bound_ms", "idle", "parts", "emitted")

    def __init__(self, spec: RecordTimeWatermarks) -> None:
        self.bound_ms = spec.bound_ms
        self.idle = spec.idle_seconds
        self.parts: dict[Any, _Partition] = {}
        self.emitted: int | None = None

    def assigned(self, partitions: Any, now: float) -> None:
        for tp in partitions:
            if tp not in self.parts:
                self.parts[tp] = _Partition(now)

    def revoked(self, partitions: Any) -> None:
        for tp in partitions:
            self.parts.pop(tp, None)

    def observe(self, tp: Any, max_ts: int, now: float) -> None:
        part = self.parts.get(tp)
        if part is None:
            part = self.parts[tp] = _Partition(now)
        if part.max_ts is None or max_ts > part.max_ts:
            part.max_ts = max_ts
        part.last_active = now

    def current(self, now: float) -> int | None:
        """The watermark now (not necessarily advanced), or None when unknown."""
        low: int | None = None
        high: int | None = None
        any_active = False
        for part in self.parts.values():
            if part.max_ts is not None and (high is None or part.max_ts > high):
                high = part.max_ts
            if now - part.last_active >= self.idle:
                continue
            any_active = True
            if part.max_ts is None:
                return None
            if low is None or part.max_ts < low:
                low = part.max_ts
        base = low if any_active else high
        return None if base is None else base - self.bound_ms

    def advance(self, now: float) -> int | None:
        """The watermark if it moved past the last one emitted (which it then becomes)."""
        wm = self.current(now)
        if wm is None or (self.emitted is not None and wm <= self.emitted):
            return None
        self.emitted = wm
        return wm
