"""Imports and small helpers shared by the Source and Flow operator methods."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

OverflowStrategy = Literal["backpressure", "drop_head", "drop_tail", "drop_new", "fail"]


def _seconds(value: float | timedelta) -> float:
    """A duration in seconds from a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value < 0:
        raise ValueError(f"a duration must not be negative, got {value}")
    return float(value)


def _count(n: int, what: str) -> int:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"{what}(n) needs a non-negative int, got {n!r}")
    return n


def _expect(value: object, kind: type, method: str) -> None:
    """A clear error when a blueprint of the wrong kind is passed (a Sink to ``via``...)."""
    if not isinstance(value, kind):
        raise TypeError(f"{method}() takes a {kind.__name__}, got {value!r}")
