"""Window assigners: which windows an element belongs to.

Every time window is half-open, ``[start, end)`` in event-time milliseconds,
and closes when the watermark reaches ``end + allowed_lateness``.

* ``TumblingWindows(size)``: ``[n*size, (n+1)*size)`` (plus ``offset``).
* ``HoppingWindows(size, step)``: windows of ``size`` starting every ``step``.
* ``SlidingWindows(size)``: Kafka Streams' sliding windows. Each element at
  ``t`` defines the window ending just after it, ``[t - size + 1, t + 1)``
  (the elements within ``size`` ms before it), and the window starting just
  after it, ``[t + 1, t + 1 + size)``, when another element falls in that one.
  Two elements share a window when their timestamps differ by less than
  ``size``. (Kafka Streams' ``SlidingWindows.ofTimeDifferenceWithNoGrace(d)``
  writes ends inclusively; it is ``SlidingWindows(d + 1)`` here.)
* ``SessionWindows(gap)``: each element spans ``[t, t + gap)``; overlapping
  spans of one key merge. A session is ``[first, last + gap)``.
* ``CountWindows(n)``: every ``n`` elements of a key, in arrival order;
  ``start``/``end`` are the key's element positions ``[i*n, (i+1)*n)``.
"""

from __future__ import annotations

from datetime import timedelta

from .durations import event_ms


class WindowAssigner:
    """Base of the window kinds; immutable, usable in any number of blueprints."""

    kind: str = ""
    #: Needs event timestamps (everything but count windows).
    timed = True
    #: Needs an aggregation's ``merge`` (sessions, sliding windows).
    needs_merge = False

    def _fields(self) -> tuple[object, ...]:
        return ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._fields() == self._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._fields()))


class TumblingWindows(WindowAssigner):
    """Fixed, non-overlapping windows of ``size`` (int ms or timedelta), aligned to ``offset``."""

    kind = "tumbling"

    def __init__(self, size: int | timedelta, offset: int | timedelta = 0) -> None:
        self.size = event_ms(size, "TumblingWindows(size)", positive=True)
        self.offset = event_ms(offset, "TumblingWindows(offset)") % self.size
        self.step = self.size

    def _fields(self) -> tuple[object, ...]:
        return (self.size, self.offset)

    def __repr__(self) -> str:
        return f"TumblingWindows({self.size}" + (f", offset={self.offset})" if self.offset else ")")


class HoppingWindows(WindowAssigner):
    """Overlapping windows of ``size`` starting every ``step`` (``0 < step <= size``)."""

    kind = "hopping"

    def __init__(self, size: int | timedelta, step: int | timedelta, offset: int | timedelta = 0) -> None:
        self.size = event_ms(size, "HoppingWindows(size)", positive=True)
        self.step = event_ms(step, "HoppingWindows(step)", positive=True)
        if self.step > self.size:
            raise ValueError(f"HoppingWindows needs step <= size, got size={self.size} ms, step={self.step} ms")
        self.offset = event_ms(offset, "HoppingWindows(offset)") % self.step

    def _fields(self) -> tuple[object, ...]:
        return (self.size, self.step, self.offset)

    def __repr__(self) -> str:
        return f"HoppingWindows({self.size}, {self.step}" + (f", offset={self.offset})" if self.offset else ")")


class SlidingWindows(WindowAssigner):
    """Kafka Streams sliding windows: elements less than ``size`` apart share a window."""

    kind = "sliding"
    needs_merge = True

    def __init__(self, size: int | timedelta) -> None:
        self.size = event_ms(size, "SlidingWindows(size)", positive=True)

    def _fields(self) -> tuple[object, ...]:
        return (self.size,)

    def __repr__(self) -> str:
        return f"SlidingWindows({self.size})"


class SessionWindows(WindowAssigner):
    """Per-key sessions: elements less than ``gap`` apart belong to one session."""

    kind = "session"
    needs_merge = True

    def __init__(self, gap: int | timedelta) -> None:
        self.gap = event_ms(gap, "SessionWindows(gap)", positive=True)

    def _fields(self) -> tuple[object, ...]:
        return (self.gap,)

    def __repr__(self) -> str:
        return f"SessionWindows({self.gap})"


class CountWindows(WindowAssigner):
    """Every ``n`` elements of a key form a window (arrival order; no timestamps needed)."""

    kind = "count"
    timed = False

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"CountWindows(n) needs a positive int, got {n!r}")
        self.n = n

    def _fields(self) -> tuple[object, ...]:
        return (self.n,)

    def __repr__(self) -> str:
        return f"CountWindows({self.n})"
