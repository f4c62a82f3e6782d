"""``JoinWindows``: which pairs of a stream-stream join match, and how long to wait for late pairs."""

from __future__ import annotations

from datetime import timedelta

from .._time.durations import event_ms


def _signed_ms(value: int | timedelta, what: str) -> int:
    if isinstance(value, timedelta):
        return value // timedelta(milliseconds=1)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(
        f"{what} is an event-time duration: int milliseconds or datetime.timedelta, got {value!r} "
        f"({type(value).__name__}); for seconds write timedelta(seconds=...)"
    )


class JoinWindows:
    """The time condition of ``a.join(b, ...)``: ``a`` and ``b`` pair when ``b.ts - a.ts`` lies in ``[-before, after]``.

    Both bounds are inclusive, in event time (int ms or timedelta). ``before``
    is how far *before* ``a`` a ``b`` may be, ``after`` how far after; one may
    be negative (``before=-60_000, after=600_000``: b between 1 and 10 minutes
    after a) as long as the range is not empty. ``grace`` is how long past a
    window's end (by the watermark) it stays open for out-of-order elements:
    an element of ``a`` is final (its unmatched result of a left or outer join
    emitted, its buffer entry deleted) once the watermark minus ``grace``
    passes ``a.ts + after``, a ``b`` once it passes ``b.ts + before``.

    >>> JoinWindows(before=timedelta(minutes=10), after=timedelta(minutes=10), grace=timedelta(seconds=30))
    >>> JoinWindows.within(timedelta(minutes=10))   # the same, symmetric, no grace
    """

    __slots__ = ("before", "after", "grace")

    def __init__(self, before: int | timedelta = 0, after: int | timedelta = 0, grace: int | timedelta = 0) -> None:
        self.before = _signed_ms(before, "JoinWindows(before)")
        self.after = _signed_ms(after, "JoinWindows(after)")
        self.grace = event_ms(grace, "JoinWindows(grace)")
        if self.after < -self.before:
            raise ValueError(
                f"JoinWindows(before={self.before}, after={self.after}) matches nothing: b.ts - a.ts must lie in "
                f"[-before, after] = [{-self.before}, {self.after}], an empty range; make after >= -before"
            )

    @classmethod
    def within(cls, difference: int | timedelta, grace: int | timedelta = 0) -> JoinWindows:
        """Pairs whose timestamps differ by at most ``difference`` either way."""
        d = event_ms(difference, "JoinWindows.within(difference)")
        return cls(d, d, grace)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JoinWindows) and (other.before, other.after, other.grace) == (
            self.before,
            self.after,
            self.grace,
        )

    def __hash__(self) -> int:
        return hash((JoinWindows, self.before, self.after, self.grace))

    def __repr__(self) -> str:
        return f"JoinWindows(before={self.before}, after={self.after}, grace={self.grace})"
