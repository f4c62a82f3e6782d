"""Keyed timers: per key and name at most one pending timer, in event time or processing time.

A keyed operator (``stateful_map``/``process`` with ``on_timer=``, or with
``ttl=``) keeps its timers in a :class:`KeyTimers`:

* ``recs``: ``(key, name) -> _Rec(event, time, seq, entry)``, the one source of
  truth. Setting a timer replaces the key's timer of that name (in either
  domain); setting it to the time it already has changes nothing.
* one heap per domain of entries ``(time, seq, key, name)``. Entries are
  checked against ``recs`` when they are popped: an entry that is no longer its
  record's (cancelled, or moved earlier) is skipped. A timer moved *later* keeps
  its entry, and is pushed again at its new time when the old entry pops; that
  makes refreshing a deadline (state TTL touches a key with every element) a
  dict update, not a heap push.
* ``seq`` orders timers of equal time: they fire in the order they were set.

Timers are state. With a store, the ``(key, name)`` pairs changed since the last
barrier are written at the barrier as rows of the operator's own table
(:data:`TIMER_PREFIX` + MessagePack of ``[key, name]`` ->
``[is_event, time, seq]``, deleted when the timer fired or was cancelled), so
they are checkpointed with the operator's values, mirrored to a Kafka changelog
like any other row, and reloaded on start. A timer that fired after the last
checkpoint is pending again after a restart and fires again in the replayed
run: once per checkpointed timeline. Every pending timer is held in memory.

Times are int milliseconds: event time for event-time timers, wall-clock time
(``ctx.clock.wall_ms()``, the virtual clock's in tests) for processing-time
timers, so a processing-time deadline survives a restart.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from heapq import heapify, heappop, heappush
from typing import Any, Literal, NamedTuple

from .codec import decode_key, encode, raw_encode, value_decoder
from .operator_state import EXTRA_PREFIX
from .store import Table

#: Row keys of timers in an operator's table.
TIMER_PREFIX = EXTRA_PREFIX + b"timer:"
#: The operator's watermark and timer sequence counter.
WATERMARK_KEY = EXTRA_PREFIX + b"watermark"
SEQ_KEY = EXTRA_PREFIX + b"timer-seq"

_decode = value_decoder()

TimeDomain = Literal["event", "processing"]


class Timer(NamedTuple):
    """A timer that fired, as handed to ``on_timer(key, state, timer)``.

    ``time`` is int milliseconds: the event time it was set for
    (``domain == "event"``), or the wall-clock deadline (``"processing"``).
    """

    name: str
    time: int
    domain: TimeDomain


class _Rec:
    __slots__ = ("event", "time", "seq", "entry")

    def __init__(self, event: bool, time: int, seq: int, entry: tuple[int, int, Hashable, str | None]) -> None:
        self.event = event
        self.time = time
        self.seq = seq
        self.entry = entry


Entry = tuple[int, int, Hashable, "str | None"]


class KeyTimers:
    """The pending timers of one operator (see the module docstring)."""

    __slots__ = ("recs", "event", "processing", "seq", "dirty", "tracking")

    def __init__(self, tracking: bool) -> None:
        self.recs: dict[tuple[Hashable, str | None], _Rec] = {}
        self.event: list[Entry] = []
        self.processing: list[Entry] = []
        self.seq = 0
        self.dirty: set[tuple[Hashable, str | None]] = set()
        self.tracking = tracking

    def set(self, key: Hashable, name: str | None, event: bool, time: int) -> None:
        """Set ``key``'s timer ``name`` to ``time`` in the given domain, replacing any it had."""
        ident = (key, name)
        rec = self.recs.get(ident)
        if rec is not None and rec.event is event:
            if rec.time == time:
                return
            if rec.entry[0] <= time:  # later: the entry in the heap pushes it again when it pops
                self.seq += 1
                rec.time = time
                rec.seq = self.seq
                if self.tracking:
                    self.dirty.add(ident)
                return
        self.seq += 1
        entry = (time, self.seq, key, name)
        heap = self.event if event else self.processing
        heappush(heap, entry)
        if rec is None:
            self.recs[ident] = _Rec(event, time, self.seq, entry)
        else:
            rec.event, rec.time, rec.seq, rec.entry = event, time, self.seq, entry
        if self.tracking:
            self.dirty.add(ident)
        if len(heap) > 2 * len(self.recs) + 1024:
            self._compact()

    def get(self, key: Hashable, name: str | None) -> _Rec | None:
        return self.recs.get((key, name))

    def cancel(self, key: Hashable, name: str | None) -> bool:
        """Remove ``key``'s timer ``name``; False when it had none."""
        ident = (key, name)
        if self.recs.pop(ident, None) is None:
            return False
        if self.tracking:
            self.dirty.add(ident)
        return True

    def due(self, event: bool, upto: int) -> Iterator[tuple[Hashable, str | None, int]]:
        """Pop the timers of one domain whose time is at most ``upto``, in order of (time, seq).

        Each is removed before it is yielded, so the consumer may set timers
        again (one set at or before ``upto`` is yielded in this same pass).
        """
        heap = self.event if event else self.processing
        recs = self.recs
        while heap and heap[0][0] <= upto:
            entry = heappop(heap)
            t, _seq, key, name = entry
            ident = (key, name)
            rec = recs.get(ident)
            if rec is None or rec.entry is not entry:
                continue  # cancelled or replaced
            if rec.time > t:  # moved later: wait at the new time
                rec.entry = (rec.time, rec.seq, key, name)
                heappush(heap, rec.entry)
                continue
            del recs[ident]
            if self.tracking:
                self.dirty.add(ident)
            yield key, name, t

    def next_processing(self) -> int | None:
        """The earliest processing-time deadline in the heap (possibly of a stale entry), or None."""
        heap = self.processing
        recs = self.recs
        while heap:
            entry = heap[0]
            rec = recs.get((entry[2], entry[3]))
            if rec is not None and rec.entry is entry:
                return entry[0]
            heappop(heap)
        return None

    def _compact(self) -> None:
        self.event = [r.entry for r in self.recs.values() if r.event]
        self.processing = [r.entry for r in self.recs.values() if not r.event]
        heapify(self.event)
        heapify(self.processing)

    # -- store ------------------------------------------------------------------

    def rows(self, what: str) -> list[tuple[bytes, bytes | None]]:
        """The rows changed since the last call: puts of pending timers, deletes of gone ones."""
        recs = self.recs
        out: list[tuple[bytes, bytes | None]] = []
        try:
            for ident in self.dirty:
                rec = recs.get(ident)
                out.append((
                    TIMER_PREFIX + raw_encode(ident),
                    None if rec is None else raw_encode((rec.event, rec.time, rec.seq)),
                ))  # fmt: skip
        except (TypeError, OverflowError):
            for ident in self.dirty:
                encode(list(ident), f"timer key of {what}")  # names the key
            raise
        self.dirty = set()
        return out

    def restore(self, table: Table) -> None:
        """Load every timer row of ``table`` (the operator's table at its last checkpoint)."""
        n = len(TIMER_PREFIX)
        for k, v in table.scan(TIMER_PREFIX):
            key, name = decode_key(k[n:])
            event, time, seq = _decode(v)
            entry = (time, seq, key, name)
            self.recs[(key, name)] = _Rec(bool(event), time, seq, entry)
            (self.event if event else self.processing).append(entry)
        heapify(self.event)
        heapify(self.processing)
        raw = table.get(SEQ_KEY)
        if raw is not None:
            self.seq = max(self.seq, int(_decode(raw)))


def decoded(raw: bytes | None, default: Any) -> Any:
    return default if raw is None else _decode(raw)
