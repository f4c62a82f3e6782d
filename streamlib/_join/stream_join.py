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

State: with a store, each buffered entry is one row ``(side, seq) ->
[seq, ts, element, matched, key]``, plus the watermark and sequence counters;
entries are staged at aligned barriers and deleted when they close, so the
store holds exactly the open windows. End of stream closes every window.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from heapq import heappop, heappush
from typing import Any, Literal

import msgspec

from .._ops.binary import BinaryLogic, BinaryStage
from .._runtime.context import RunContext
from .._state.codec import freeze
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
_SEQ, _TS, _EL, _MATCHED, _KEY = range(5)


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
        self.heap: list[int] = []
        self.by_close: dict[int, list[tuple[int, list[Any]]]] = {}
        self.seq = [0, 0]
        self.wm = NO_WATERMARK
        self.closed_below = NO_WATERMARK - self.grace  # elements below this are late

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
        restored: list[tuple[Any, list[Any]]] = sorted(state.data.items(), key=lambda kv: kv[0][1])  # type: ignore[index]
        for sk, entry in restored:
            side: int = sk[0]
            entry[_KEY] = freeze(entry[_KEY])
            t = self.types[side]
            if t is not None:
                entry[_EL] = msgspec.convert(entry[_EL], t)
            self._buffer(side, entry)

    def _buffer(self, side: int, entry: list[Any]) -> None:
        key = entry[_KEY]
        buf = self.bufs[side]
        entries = buf.get(key)
        if entries is None:
            buf[key] = [entry]
        else:
            entries.append(entry)
        at = entry[_TS] + self.hi[side]
        items = self.by_close.get(at)
        if items is None:
            self.by_close[at] = [(side, entry)]
            heappush(self.heap, at)
        else:
            items.append((side, entry))

    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        key_of, ts_of = self.keys[side], self.tss[side]
        lo, hi = self.lo[side], self.hi[side]
        partners_of = self.bufs[1 - side]
        combine = self.combine
        closed_below = self.closed_below
        tracking, data, dirty = self.tracking, self.state.data, self.state.dirty
        seq = self.seq[side]
        other = 1 - side
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
                entry = [seq, ts, x, False, key]
                seq += 1
                partners = partners_of.get(key)
                if partners:
                    a_lo, a_hi = ts - lo, ts + hi
                    for p in partners:
                        if a_lo <= p[1] <= a_hi:
                            out.append(combine(x, p[2]) if left else combine(p[2], x))
                            entry[3] = True
                            if not p[3]:
                                p[3] = True
                                if tracking:
                                    dirty.add((other, p[0]))
                self._buffer(side, entry)
                if tracking:
                    data[(side, entry[0])] = entry
                    dirty.add((side, entry[0]))
        finally:
            self.seq[side] = seq
        if late:
            self._late(side, late, out)
        if self.heap and self.heap[0] < closed_below:
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
        heap, by_close, below = self.heap, self.by_close, self.closed_below
        while heap and heap[0] < below:
            self._expire(by_close.pop(heappop(heap)), out)

    def _expire(self, items: list[tuple[int, list[Any]]], out: list[Any]) -> None:
        bufs, combine = self.bufs, self.combine
        emit_a, emit_b = self.emit_unmatched
        tracking, remove, data = self.tracking, self.state.remove, self.state.data
        for side, entry in items:
            buf = bufs[side]
            key = entry[_KEY]
            entries = buf[key]
            if entries[0] is entry:
                del entries[0]
            else:
                entries.remove(entry)
            if not entries:
                del buf[key]
            if not entry[_MATCHED]:
                if side == 0:
                    if emit_a:
                        out.append(combine(entry[_EL], None))
                elif emit_b:
                    out.append(combine(None, entry[_EL]))
            if tracking:
                sk = (side, entry[_SEQ])
                data.pop(sk, None)
                remove(sk)

    def on_barrier(self, checkpoint_id: int) -> None:
        if self.tracking:
            self.state.stage(checkpoint_id, {_WM_KEY: self.wm, _SEQ_KEY: self.seq})

    def on_finish(self, out: list[Any]) -> None:
        heap, by_close = self.heap, self.by_close
        items: list[tuple[int, list[Any]]] = []
        for at in sorted(by_close):
            items.extend(by_close[at])
        by_close.clear()
        heap.clear()
        self._expire(items, out)
        run = self.state.run
        if run is not None:
            run.finish(self.state.member)

    def on_failure(self, error: BaseException) -> None:
        self.state.close()

    def on_cancel(self) -> None:
        self.state.close()

    def buffered(self) -> int:
        """Entries held in both buffers."""
        return sum(len(v) for buf in self.bufs for v in buf.values())
