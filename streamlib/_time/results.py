"""What window operators emit: results, late records, and the error for unhandled late data."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

K = TypeVar("K")
V = TypeVar("V")


class WindowResult(msgspec.Struct, Generic[K, V], frozen=True):
    """The aggregate of one window of one key.

    ``start`` and ``end`` are event time in int milliseconds, ``end``
    exclusive (for count windows: the key's element positions ``[i*n, (i+1)*n)``,
    also for a last window that holds fewer). Frozen and
    hashable when ``value`` is, so results compare and deduplicate easily.
    """

    key: K
    start: int
    end: int
    value: V


class LateRecord(msgspec.Struct, frozen=True):
    """An element that arrived after its window closed (watermark past end + allowed lateness).

    It was not counted in any window: it is here, and nowhere else.
    ``window_start``/``window_end`` name the closed window it belonged to (the
    earliest one, for overlapping windows); ``reason`` says it in words.
    """

    element: Any
    key: Any
    timestamp: int
    watermark: int
    window_start: int
    window_end: int
    reason: str


class LateDataError(ValueError):
    """A late element arrived at a window with ``late="fail"`` (the default)."""


def is_late(x: object) -> bool:
    """True for a :class:`LateRecord` (handy with ``divert_to`` or a ``Partition``)."""
    return type(x) is LateRecord
