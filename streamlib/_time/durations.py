"""Duration arguments: event time in int milliseconds, processing time in seconds.

Event time follows Kafka's convention: a timestamp is an ``int`` of
milliseconds since the epoch, and event-time durations (window sizes, gaps,
allowed lateness, out-of-orderness) are ``int`` milliseconds or
``datetime.timedelta``. Processing-time durations (idle timeouts, checkpoint
intervals) are seconds as ``float`` or ``timedelta``, like every other timer in
streamlib.
"""

from __future__ import annotations

from datetime import timedelta


def event_ms(value: int | timedelta, what: str, *, positive: bool = False) -> int:
    """An event-time duration in int milliseconds, from int milliseconds or a timedelta."""
    if isinstance(value, timedelta):
        ms = value // timedelta(milliseconds=1)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        raise TypeError(
            f"{what} is an event-time duration: int milliseconds or datetime.timedelta, got {value!r} "
            f"({type(value).__name__}); for seconds write timedelta(seconds=...)"
        )
    if ms < 0 or (positive and ms == 0):
        raise ValueError(f"{what} must be {'positive' if positive else 'non-negative'}, got {ms} ms")
    return ms


def seconds(value: float | timedelta, what: str) -> float:
    """A processing-time duration in seconds, from seconds or a timedelta."""
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        s = float(value)
    else:
        raise TypeError(f"{what} is a processing-time duration: seconds or datetime.timedelta, got {value!r}")
    if s <= 0:
        raise ValueError(f"{what} must be positive, got {s} s")
    return s
