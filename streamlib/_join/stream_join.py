"""The stream-stream windowed join: one two-input stage (``BinaryStage``) buffering both sides.

Every element of either input is kept in its side's buffer (``key -> entries``
in arrival order) until its window closes. An arriving element first looks
for partners in the other side's buffer under the same key: each partner
with ``b.ts - a.ts`` in ``[-before, after]`` gives ``combine(a, b)`` at once
(inner results are never delayed). Then it is buffered, scheduled to close at
``a.ts + after`` (side a) or ``b.ts + before`` (side b).

Closing is driven by the combined watermark (the minimum of both inputs'):
every entry whose close time is below ``watermark - grace`` is deleted, and,
for ``how="left"``/``"outer"``, emitted as ``combine(a, None)`` (or
``combine(None, b)``) when it never matched. No element arriving later
without being late can match it, so these results are final and never
spurious.

An element is *late* when its timestamp is below ``watermark - grace``: it
would belong to a window of the other side that has already closed. Like a
window's late data it fails the stream (``late="fail"``, the default) or
becomes a :class:`LateRecord` (``late="emit"`` or a late Sink); it is matched
with nothing.

State: with a store, each buffered entry is one row ``seq * 2 + side ->
[seq * 2 + side, ts, element, matched, key]``, plus the watermark and sequence counters.
At each (aligned) barrier the operator stages the entries buffered since the
last one that are still open, the stored entries whose matched flag changed,
and deletes for the stored entries that closed; an element that arrives and
closes between two barriers never touches the store. So the store holds
exactly the open windows. End of stream closes every window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from heapq import heappop, heappush
from typing import Any, Literal

import msgspec

from .._ops.binary import BinaryLogic, BinaryStage
from .._runtime.context import RunContext
from .._state.codec import encode, freeze, raw_encode
from .._state.operator_state import EXTRA_PREFIX, OperatorState
from .._state.store import StateStore
from .._time.results import LateDataError, LateRecord
from .._time.watermarks import NO_WATERMARK
from .windows import JoinWindows

JoinHow = Literal["inner", "left", "outer"]
_WM_KEY = EXTRA_PREFIX + b"watermark"
_SEQ_KEY = EXTRA_PREFIX + b"seq"
_SIDES = ("left", "right")

# entry layout (a list, so the matched flag can flip in place)
_SK, _TS, _EL, _MATCHED, _KEY, _STORED = range(6)  # _SK: seq * 2 + side, the row's key
# _STORED: where the entry stands with the store
_NEW, _IN_STORE, _GONE_NEW, _GONE_STORED = range(4)


class StreamJoinStage(BinaryStage):
    """Blueprint of ``a.join(b, key_a=, key_b=, within=JoinWindows(...), combine=, how=)``."""

    def __init__(
        self,
        key_a: Callable[[Any], Hashable],
        key_b: Callable[[Any], Hashable],
        ts_a: Callable[[Any], int],
        ts_b: Callable[[Any], int],
        within: JoinWindows,
        combine: Callable[[Any, Any], Any],
        how: JoinHow,
        store: StateStore | None,
        late: Literal["fail", "emit"],
        types: tuple[Any, Any],
        name: str | None,
    ) -> None:
        if not isinstance(within, JoinWindows):
            raise TypeError(f"join(within=) needs JoinWindows(before=, after=, grace=), got {within!r}")
        if how not in ("inner", "left", "outer"):
            raise ValueError(f"join(how=) is 'inner', 'left' or 'outer', got {how!r}")
        if not callable(combine):
            raise TypeError(f"join(combine=) needs a function combine(a, b), got {combine!r}")
        self.key_a, self.key_b = key_a, key_b
        self.ts_a, self.ts_b = ts_a, ts_b
        self.within = within
        self.combine = combine
        self.how = how
        self.store = store
        self.late = late
        self.types = types
        self.name = name or f"join.{how}"

    def make_logic(self, ctx: RunContext) -> BinaryLogic:
        return StreamJoinLogic(self, ctx)


class StreamJoinLogic(BinaryLogic):
    """Buffers per side (``key -> entries``), a close-time index per side, matching on arrival.

    Close-time index: entries arriving in close-time order (the usual case:
    timestamps in order) go to a FIFO per side; the few that arrive out of
    order go to a heap. Closing pops both while their close time is below
    ``watermark - grace``.
    """

    def __init__(self, stage: StreamJoinStage, ctx: RunContext) -> None:
        w = stage.within
        self.keys = (stage.key_a, stage.key_b)
        self.tss = (stage.ts_a, stage.ts_b)
        # an element of side s at ts pairs with other-side timestamps in [ts - lo[s], ts + hi[s]]
        self.lo = (w.before, w.after)
        self.hi = (w.after, w.before)
        self.grace = w.grace
        self.combine = stage.combine
        self.emit_unmatched = (stage.how in ("left", "outer"), stage.how == "outer")
        self.fail_late = stage.late == "fail"
        self.types = stage.types
        self.state = OperatorState(stage.store, ctx, stage.name)
        self.tracking = self.state.tracking
        self.bufs: tuple[dict[Hashable, list[list[Any]]], dict[Hashable, list[list[Any]]]] = ({}, {})
        self.fifos: tuple[deque[list[Any]], deque[list[Any]]] = (deque(), deque())
        self.last_close = [NO_WATERMARK, NO_WATERMARK]
        self.heap: list[tuple[int, int, list[Any]]] = []  # (close time, seq * 2 + side, entry)
        self.seq = [0, 0]
        self.wm = NO_WATERMARK
        self.closed_below = NO_WATERMARK - self.grace  # elements below this are late
        # with a store: stored entries whose matched flag changed, keys of stored entries that closed
        self.rewrite: list[list[Any]] = []
        self.drops: list[int] = []

    # -- lifecycle -------------------------------------------------------------

    def on_start(self, out: list[Any]) -> None:
        state = self.state
        state.load()
        wm = state.extra.get(_WM_KEY)
        if wm is not None:
            self._set_watermark(wm)
        seq = state.extra.get(_SEQ_KEY)
        if seq is not None:
            self.seq = list(seq)
        for sk in sorted(state.data):  # type: ignore[type-var]
            entry = state.data[sk]
            side: int = sk & 1  # type: ignore[operator]
            entry[_KEY] = freeze(entry[_KEY])
            entry.append(_IN_STORE)
            t = self.types[side]
            if t is not None:
                entry[_EL] = msgspec.convert(entry[_EL], t)
            self._buffer(side, entry)
        state.data.clear()  # the buffers are the state; rows are tracked by each entry's _STORED
        state.persisted.clear()

    def _buffer(self, side: int, entry: list[Any]) -> None:
        key = entry[_KEY]
        buf = self.bufs[side]
        entries = buf.get(key)
        if entries is None:
            buf[key] = [entry]
        else:
            entries.append(entry)
        at = entry[_TS] + self.hi[side]
        if at >= self.last_close[side]:
            self.last_close[side] = at
            self.fifos[side].append(entry)
        else:
            heappush(self.heap, (at, entry[_SK], entry))

    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        key_of, ts_of = self.keys[side], self.tss[side]
        lo, hi = self.lo[side], self.hi[side]
        buf = self.bufs[side]
        partners_of = self.bufs[1 - side]
        fifo = self.fifos[side]
        last_close = self.last_close[side]
        combine = self.combine
        closed_below = self.closed_below
        rewrite = self.rewrite
        seq = self.seq[side]
        left = side == 0
        late: list[tuple[Any, Hashable, int]] | None = None
        try:
            for x in chunk:
                ts = ts_of(x)
                key = key_of(x)
                if ts < closed_below:
                    if late is None:
                        late = []
                    late.append((x, key, ts))
                    continue
                entry = [seq << 1 | side, ts, x, False, key, _NEW]
                partners = partners_of.get(key)
                if partners:
                    a_lo, a_hi = ts - lo, ts + hi
                    for p in partners:
                        if a_lo <= p[1] <= a_hi:
                            out.append(combine(x, p[2]) if left else combine(p[2], x))
                            entry[3] = True
                            if not p[3]:
                                p[3] = True
                                if p[5] == _IN_STORE:
                                    rewrite.append(p)
                entries = buf.get(key)
                if entries is None:
                    buf[key] = [entry]
                else:
                    entries.append(entry)
                at = ts + hi
                if at >= last_close:
                    last_close = at
                    fifo.append(entry)
                else:
                    heappush(self.heap, (at, seq << 1 | side, entry))
                seq += 1
        finally:
            self.seq[side] = seq
            self.last_close[side] = last_close
        if late:
            self._late(side, late, out)
        if (fifo and fifo[0][1] + hi < closed_below) or (self.heap and self.heap[0][0] < closed_below):
            self._close(out)  # entries whose window was already over on arrival (a negative bound)

    def _late(self, side: int, late: list[tuple[Any, Hashable, int]], out: list[Any]) -> None:
        lo, hi, wm, grace = self.lo[side], self.hi[side], self.wm, self.grace
        name, other = _SIDES[side], _SIDES[1 - side]
        if self.fail_late:
            x, key, ts = late[0]
            raise LateDataError(
                f"{self.stage_name}: late {name} element {x!r:.200} (key {key!r}, timestamp {ts}) arrived after "
                f"the {other} elements it could join (timestamps [{ts - lo}, {ts + hi}]) were closed (watermark "
                f"{wm}, grace {grace} ms). Connect a late-data output: join(..., late=Sink.foreach(...)) or "
                "late='emit'; or allow more disorder: with_timestamps(max_out_of_orderness=...) on both inputs, "
                "or JoinWindows(grace=...)"
            )
        for x, key, ts in late:
            out.append(
                LateRecord(
                    x, key, ts, wm, ts - lo, ts + hi + 1,
                    f"{name} element of a join: watermark {wm} minus grace {grace} ms passed its timestamp, "
                    f"so the {other} elements it could join are closed",
                )  # fmt: skip
            )

    def on_watermark(self, time_ms: int, out: list[Any]) -> None:
        if time_ms > self.wm:
            self._set_watermark(time_ms)
            self._close(out)

    def _set_watermark(self, wm: int) -> None:
        self.wm = wm
        self.closed_below = wm - self.grace

    def _close(self, out: list[Any]) -> None:
        """Close every entry whose window ended below ``watermark - grace``."""
        below = self.closed_below
        for side in (0, 1):
            fifo, hi = self.fifos[side], self.hi[side]
            if fifo and fifo[0][1] + hi < below:
                done = []
                while fifo and fifo[0][1] + hi < below:
                    done.append(fifo.popleft())
                self._expire(side, done, out)
        heap = self.heap
        while heap and heap[0][0] < below:
            _, sk, entry = heappop(heap)
            self._expire(sk & 1, (entry,), out)

    def _expire(self, side: int, entries: Iterable[list[Any]], out: list[Any]) -> None:
        buf, combine = self.bufs[side], self.combine
        emit = self.emit_unmatched[side]
        drops = self.drops
        for entry in entries:
            key = entry[4]
            held = buf[key]
            if held[0] is entry:
                del held[0]
            else:
                held.remove(entry)
            if not held:
                del buf[key]
            if emit and not entry[3]:
                out.append(combine(entry[2], None) if side == 0 else combine(None, entry[2]))
            if entry[5] == _IN_STORE:
                drops.append(entry[0])
                entry[5] = _GONE_STORED
            else:
                entry[5] = _GONE_NEW

    def _unstored(self) -> Iterator[list[Any]]:
        """Open entries not in the store yet: each FIFO's tail since the last barrier, and the heap's."""
        for fifo in self.fifos:
            for entry in reversed(fifo):
                if entry[5] != _NEW:
                    break
                yield entry
        for _, _, entry in self.heap:
            if entry[5] == _NEW:
                yield entry

    def on_barrier(self, checkpoint_id: int) -> None:
        if not self.tracking:
            return
        rows: list[tuple[bytes, bytes | None]] = []
        add = rows.append
        fresh = list(self._unstored())
        try:
            for entry in fresh:
                add((raw_encode(entry[0]), raw_encode(entry[:5])))
            for entry in self.rewrite:
                if entry[5] == _IN_STORE:
                    add((raw_encode(entry[0]), raw_encode(entry[:5])))
        except (TypeError, OverflowError):
            for entry in fresh:  # name the culprit
                encode(entry[:5], f"buffered element of {self.stage_name}")
            raise
        for entry in fresh:
            entry[5] = _IN_STORE
        for sk in self.drops:
            add((raw_encode(sk), None))
        self.rewrite = []
        self.drops = []
        self.state.stage(checkpoint_id, {_WM_KEY: self.wm, _SEQ_KEY: self.seq}, rows=rows)

    def on_finish(self, out: list[Any]) -> None:
        for side in (0, 1):
            self._expire(side, self.fifos[side], out)
            self.fifos[side].clear()
        for _, sk, entry in sorted(self.heap, key=lambda h: h[:2]):
            self._expire(sk & 1, (entry,), out)
        self.heap.clear()
        self.state.finish()

    def on_failure(self, error: BaseException) -> None:
        self.state.close()

    def on_cancel(self) -> None:
        self.state.close()

    def buffered(self) -> int:
        """Entries held in both buffers."""
        return sum(len(v) for buf in self.bufs for v in buf.values())
