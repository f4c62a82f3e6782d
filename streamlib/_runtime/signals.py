"""In-band signals: they travel on the same channels as data chunks, in order.

A channel item is either a ``list`` (a chunk of elements) or a :class:`Signal`.
End of stream, failure, watermarks and checkpoint barriers are signals, so a
watermark can never overtake the elements emitted before it.
"""

from __future__ import annotations

from dataclasses import dataclass


class Signal:
    """Base class of everything a channel carries that is not a chunk."""

    __slots__ = ()


class EndOfStream(Signal):
    """Upstream completed normally; nothing follows it on the channel."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = EndOfStream()


@dataclass(frozen=True, slots=True)
class Failure(Signal):
    """Upstream failed with ``error``; nothing follows it on the channel."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Watermark(Signal):
    """No element with an event time below ``time_ms`` follows on this channel."""

    time_ms: int


@dataclass(frozen=True, slots=True)
class Barrier(Signal):
    """A checkpoint barrier: state before it belongs to checkpoint ``checkpoint_id``."""

    checkpoint_id: int
