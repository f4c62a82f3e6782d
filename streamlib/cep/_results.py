"""What the ``match`` operator emits: :class:`Match`, and :class:`Timeout` on the timeouts output."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

K = TypeVar("K")
T = TypeVar("T")


class Match(msgspec.Struct, Generic[K, T], frozen=True):
    """One match of a pattern: the key, and the events each step took (by step name, in time order).

    Steps that took no event (optional ones) are absent from ``events``.
    """

    key: K
    events: dict[str, list[T]]


class Timeout(msgspec.Struct, Generic[K, T], frozen=True):
    """A partial match whose ``within`` window closed before it completed.

    ``events``: what it had taken, by step name; ``deadline``: the end of its
    window (event-time ms, or clock ms in processing time).
    """

    key: K
    events: dict[str, list[T]]
    deadline: int


class LateEventError(ValueError):
    """An event reached ``match`` after the watermark had passed its timestamp."""
