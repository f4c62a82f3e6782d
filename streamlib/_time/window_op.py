"""The window operator: one fused stage per ``.window(...).<aggregation>()``.

Per chunk the operator calls its family's kernel (``kernels.py``) on a plain
dict of live windows, then, depending on the emission mode:

* ``final``: nothing more. On ``Watermark(w)`` every window whose end plus
  allowed lateness is at most ``w`` is emitted once, as a
  :class:`WindowResult`, and deleted (from memory, and from the store at the
  next barrier). Windows are found through an index of close times (a heap of
  distinct times and a dict time -> windows), so a watermark costs in
  proportion to the windows it closes, not to the windows open.
* ``updates``: after each chunk, one result per window the chunk changed
  (the latest value; several changes within one chunk are coalesced). Closed
  windows are deleted silently, their last update was their final value.

Late elements (their earliest window already closed) become
:class:`LateRecord` items, which the DSL routes to the late-data output, or
fail the stream with :class:`LateDataError` when no output was connected.
End of stream emits every open window (``final``). ``Barrier`` stages the dirty
windows and the operator's watermark into the store; on start the operator
reloads them from the store's last checkpoint. Watermarks and barriers are
forwarded after the results they caused.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable
from heapq import heappop, heappush
from typing import Any, Literal

import msgspec

from .._runtime.context import RunContext
from .._runtime.signals import Barrier, Signal, Watermark
from .._state.checkpoint import StatefulStage
from .._state.operator_state import EXTRA_PREFIX, OperatorState
from .._state.store import StateStore
from ..stage import StageLogic
from .aggregations import Aggregation
from .kernels import MISSING, expire_sliding, fold_sliding, session_core, update_count, update_fixed, update_sliding
from .results import LateDataError, LateRecord, WindowResult
from .watermarks import NO_WATERMARK
from .windows import CountWindows, HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows, WindowAssigner

EmitMode = Literal["final", "updates"]
_WM_KEY = EXTRA_PREFIX + b"watermark"


class WindowStage(StatefulStage):
    """Blueprint of one window operator (assigner + aggregation + functions + options)."""

    def __init__(
        self,
        assigner: WindowAssigner,
        agg: Aggregation,
        key_of: Callable[[Any], Hashable],
        ts_of: Callable[[Any], int] | None,
        store: StateStore | None,
        lateness_ms: int,
        emit: EmitMode,
        late: Literal["fail", "emit"],
        name: str | None,
    ) -> None:
        if assigner.needs_merge and agg.merge is None:
            raise ValueError(
                f"{assigner!r} merges accumulators: give aggregate(..., merge=f) a merge function"
            )
        if assigner.timed and ts_of is None:
            raise ValueError(f"{assigner!r} needs event timestamps")
        self.assigner = assigner
        self.agg = agg
        self.key_of = key_of
        self.ts_of = ts_of
        self.store = store
        self.lateness = lateness_ms
        self.emit = emit
        self.late = late
        self.name = name or f"window.{assigner.kind}.{agg.name}"

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        a = self.assigner
        logic: _WindowLogic
        if isinstance(a, (TumblingWindows, HoppingWindows)):
            logic = FixedWindowLogic(self, ctx)
        elif isinstance(a, SessionWindows):
            logic = SessionWindowLogic(self, ctx)
        elif isinstance(a, SlidingWindows):
            logic = SlidingWindowLogic(self, ctx)
        elif isinstance(a, CountWindows):
            logic = CountWindowLogic(self, ctx)
        else:
            raise TypeError(f"unknown window assigner {a!r}")
        return logic, None


class _WindowLogic(StageLogic):
    def __init__(self, stage: WindowStage, ctx: RunContext) -> None:
        agg = stage.agg
        self.key_of = stage.key_of
        self.ts_of: Callable[[Any], int] = stage.ts_of  # type: ignore[assignment]
        self.value_of = agg.value_of
        self.create = agg.create
        self.add = agg.add
        self.merge: Callable[[Any, Any], Any] = agg.merge  # type: ignore[assignment]
        self.result = agg.result
        self.acc_type = agg.acc_type
        self.lateness = stage.lateness
        self.updates = stage.emit == "updates"
        self.fail_late = stage.late == "fail"
        self.state = OperatorState(stage.store, ctx, stage.name)
        self.tracking = self.state.tracking
        self.meters = ctx.meters  # counts late elements (late-records-total) when the run is metered
        self.wm = NO_WATERMARK
        self.heap: list[int] = []
        self.by_close: dict[int, list[Any]] = {}

    # -- shared machinery --------------------------------------------------------

    def _schedule(self, at: int, item: Any) -> None:
        items = self.by_close.get(at)
        if items is None:
            self.by_close[at] = [item]
            heappush(self.heap, at)
        else:
            items.append(item)

    def _value(self, acc: Any) -> Any:
        res = self.result
        return acc if res is None else res(acc)

    def _typed(self, acc: Any) -> Any:
        return acc if self.acc_type is None else msgspec.convert(acc, self.acc_type)

    def on_start(self) -> list[Any]:
        self.state.load()
        wm = self.state.extra.get(_WM_KEY)
        if wm is not None:
            self.wm = wm
        self._restored()
        return []

    def _restored(self) -> None:
        """Rebuild indexes (close times) from the state loaded from the store."""

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Watermark:
            if signal.time_ms > self.wm:
                self.wm = signal.time_ms
                return self._close(self.wm - self.lateness)
        elif type(signal) is Barrier:
            self.state.stage(signal.checkpoint_id, {_WM_KEY: self.wm})
        return None

    def _close(self, closed_to: int) -> list[Any]:
        heap = self.heap
        if not heap or heap[0] > closed_to:
            return []
        items: list[Any] = []
        by_close = self.by_close
        while heap and heap[0] <= closed_to:
            items.extend(by_close.pop(heappop(heap)))
        out: list[Any] = []
        self._expire(items, closed_to, out)
        return out

    def _expire(self, items: list[Any], closed_to: int, out: list[Any]) -> None:
        raise NotImplementedError

    def _late(self, late: list[tuple[Any, int, Hashable, int, int]]) -> list[Any]:
        wm, lateness = self.wm, self.lateness
        if self.fail_late:
            e, ts, k, s, end = late[0]
            raise LateDataError(
                f"{self.stage_name}: late element {e!r:.200} (key {k!r}, timestamp {ts}) arrived after "
                f"its window [{s}, {end}) closed (watermark {wm}, allowed lateness {lateness} ms). "
                "Connect a late-data output: .window(..., late=Sink.foreach(...)) or late='emit'; or "
                "allow more disorder: with_timestamps(max_out_of_orderness=...) or allowed_lateness="
            )
        if self.meters is not None:
            self.meters.late_cell(self.stage_name)[0] += len(late)
        return [
            LateRecord(
                e,
                k,
                ts,
                wm,
                s,
                end,
                f"window [{s}, {end}) closed: watermark {wm} passed its end plus allowed lateness {lateness} ms",
            )
            for e, ts, k, s, end in late
        ]

    def on_finish(self) -> list[Any]:
        out: list[Any] = []
        if not self.updates:
            self._flush(out)
        self.state.finish()
        return out

    def _flush(self, out: list[Any]) -> None:
        """End of stream: emit every open window."""
        items: list[Any] = []
        by_close = self.by_close
        for at in sorted(by_close):
            items.extend(by_close[at])
        by_close.clear()
        self.heap.clear()
        self._expire(items, 2**63, out)

    def on_cancel(self) -> None:
        self.state.close()

    def on_failure(self, error: BaseException) -> None:
        self.state.close()


class FixedWindowLogic(_WindowLogic):
    """Tumbling and hopping windows: ``accs[(key, start)] = acc``."""

    def __init__(self, stage: WindowStage, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        a: TumblingWindows | HoppingWindows = stage.assigner  # type: ignore[assignment]
        self.size, self.step, self.offset = a.size, a.step, a.offset
        self.accs: dict[tuple[Hashable, int], Any] = self.state.data  # type: ignore[assignment]

    def _restored(self) -> None:
        for wk in self.accs:
            if self.acc_type is not None:
                self.accs[wk] = self._typed(self.accs[wk])
            self._schedule(wk[1] + self.size, wk)  # type: ignore[index]

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        touched: set[tuple[Hashable, int]] = set()
        created: list[tuple[Hashable, int]] = []
        late: list[Any] = []
        accs, size = self.accs, self.size
        update_fixed(
            chunk, self.ts_of, self.key_of, self.value_of, size, self.step, self.offset,
            self.create, self.add, accs, self.wm - self.lateness, touched, created, late,
        )  # fmt: skip
        for wk in created:
            self._schedule(wk[1] + size, wk)
        if self.tracking:
            self.state.dirty |= touched
        out = self._late(late) if late else []
        if self.updates:
            value = self._value
            out.extend(WindowResult(k, s, s + size, value(accs[(k, s)])) for k, s in touched)
        return out

    def _expire(self, items: list[Any], closed_to: int, out: list[Any]) -> None:
        accs, size, remove = self.accs, self.size, self.state.remove
        emit = not self.updates
        value = self._value
        for wk in items:
            acc = accs.pop(wk, MISSING)
            if acc is MISSING:
                continue
            remove(wk)
            if emit:
                out.append(WindowResult(wk[0], wk[1], wk[1] + size, value(acc)))


class SessionWindowLogic(_WindowLogic):
    """Session windows: one flat list per key (see ``kernels.update_sessions``), run by a ``SessionCore``.

    The key's latest closed session stays in its entry and makes an element
    that would join it, or grow an open session back into it, late; so results
    never depend on when a session closed. An entry left with only that closed
    session is dropped once the kernel's rule ``ts + 2 * gap <= closed_to``
    makes every element before its end late anyway: when the watermark minus
    allowed lateness is two gaps past its end. The core (compiled when the
    compiled kernels are in use) applies chunks, keeps the close times and
    those drops, and closes sessions; this class adds lateness records,
    ``updates`` emission and the store.
    """

    def __init__(self, stage: WindowStage, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        self.gap = stage.assigner.gap  # type: ignore[attr-defined]
        self.sessions: dict[Hashable, list[Any]] = self.state.data
        self.core = session_core()(
            self.ts_of, self.key_of, self.value_of, self.gap, self.create, self.add, self.merge,
            self.result, WindowResult, self.sessions,
        )  # fmt: skip

    def _restored(self) -> None:
        if self.acc_type is not None:
            for entry in self.sessions.values():
                for i in range(4, len(entry), 3):
                    entry[i] = self._typed(entry[i])
        self._close_restored(self.wm - self.lateness)
        self.core.restore()

    def _close_restored(self, closed_to: int) -> None:
        """Record as closed the restored sessions that ended at or before ``closed_to``.

        A watermark that closes sessions does not mark their keys dirty: the
        checkpoint holds the watermark, so the closes it made are redone here, as
        the core made them (the latest ending one becomes the key's closed
        session), without emitting anything again. That saves a store row per
        session closed on a key that did not change otherwise since the last
        checkpoint; a key that did change is written whole anyway.
        """
        for entry in self.sessions.values():
            n = len(entry)
            if n < 5 or min(entry[3::3]) > closed_to:
                continue
            done = max((entry[i + 1], entry[i]) for i in range(2, n, 3) if entry[i + 1] <= closed_to)
            entry[2:] = [x for i in range(2, n, 3) if entry[i + 1] > closed_to for x in entry[i : i + 3]]
            entry[0], entry[1] = done[1], done[0]

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        late: list[Any] = []
        touched: set[Hashable] | None = None  # final results, no store: nothing needs the keys
        if self.updates:
            touched = set()
        elif self.tracking:
            touched = self.state.dirty  # every key applied to is dirty: no set to merge afterwards
        try:
            self.core.update(chunk, self.wm - self.lateness, touched, late)
        finally:
            if self.updates and self.tracking and touched is not None:
                self.state.dirty |= touched
        out = self._late(late) if late else []
        if self.updates:
            value = self._value
            sessions = self.sessions
            for k in touched:  # type: ignore[union-attr]
                entry = sessions[k]
                for i in range(2, len(entry), 3):
                    out.append(WindowResult(k, entry[i], entry[i + 1], value(entry[i + 2])))
        return out

    def _close(self, closed_to: int) -> list[Any]:
        out: list[Any] = []
        # Closing changes no key's row: a restore redoes it from the watermark (_close_restored).
        self.core.close(closed_to, not self.updates, None, self.state.remove, out)
        return out

    def _flush(self, out: list[Any]) -> None:
        self.core.flush(self.state.dirty if self.tracking else None, out)


class SlidingWindowLogic(_WindowLogic):
    """Sliding windows: ``records[key] = [[ts, create(v)], ...]``; windows are folded when emitted.

    The windows of a key with element timestamps R are ``[t - size + 1, t + 1)``
    for every t in R, and ``[t + 1, t + 1 + size)`` for every t in R with some
    r in R, ``t < r <= t + size``. Each is folded with ``merge`` from the
    records inside it when it closes (``final``) or changes (``updates``).
    A key waits in the close index at the earliest end of its windows not yet
    closed (``due``); when it comes up, ``kernels.expire_sliding`` emits the
    windows that closed, says which records no window needs any more, and the
    key's next end. A record at t ends windows at ``t + 1`` and
    ``t + 1 + size``; after the latter it is dropped.
    """

    def __init__(self, stage: WindowStage, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        self.size = stage.assigner.size  # type: ignore[attr-defined]
        self.records = self.state.data
        self.closed_to = NO_WATERMARK
        self.due: dict[Hashable, int] = {}  # key -> the earliest time it is scheduled at

    def _restored(self) -> None:
        self.closed_to = self.wm - self.lateness
        for k, recs in self.records.items():
            self.records[k] = recs = [[r[0], self._typed(r[1])] for r in recs]
            self._schedule(recs[0][0] + 1, k)
            self.due[k] = recs[0][0] + 1

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        touched: dict[Hashable, list[int]] = {}
        late: list[Any] = []
        update_sliding(
            chunk, self.ts_of, self.key_of, self.value_of, self.create, self.records,
            self.wm - self.lateness, touched, late, self.size,
        )  # fmt: skip
        due, schedule = self.due, self._schedule
        for k, tss in touched.items():
            at = min(tss) + 1
            if at < due.get(k, at + 1):
                due[k] = at
                schedule(at, k)
        if self.tracking:
            self.state.dirty.update(touched)
        out = self._late(late) if late else []
        if self.updates:
            for k, tss in touched.items():
                fold_sliding(
                    self.records[k], self._starts_changed(k, tss), self.size, self.merge, self.result,
                    WindowResult, k, out,
                )  # fmt: skip
        return out

    def _starts_changed(self, k: Hashable, tss: list[int]) -> list[int]:
        """Starts of the windows that records at ``tss`` changed or created."""
        recs = self.records[k]
        times = [r[0] for r in recs]
        size = self.size
        starts: set[int] = set()
        for t in tss:
            # Windows ending just after a record r with t <= r <= t + size - 1.
            for i in range(bisect_left(times, t), bisect_right(times, t + size - 1)):
                starts.add(times[i] - size + 1)
            # Windows starting just after a record p with t - size <= p <= t - 1 (t is their witness).
            for i in range(bisect_left(times, t - size), bisect_right(times, t - 1)):
                starts.add(times[i] + 1)
            # The window starting just after t, when a later record is within size of t.
            j = bisect_right(times, t)
            if j < len(times) and times[j] <= t + size:
                starts.add(t + 1)
        return sorted(starts)

    def _close(self, closed_to: int) -> list[Any]:
        out = super()._close(closed_to)
        self.closed_to = closed_to
        return out

    def _expire(self, items: list[Any], closed_to: int, out: list[Any]) -> None:
        lo = self.closed_to  # windows ending at or before lo were emitted already
        records, size, due, schedule = self.records, self.size, self.due, self._schedule
        emit, merge, result = not self.updates, self.merge, self.result
        for k in dict.fromkeys(items):
            recs = records.get(k)
            if not recs:
                due.pop(k, None)
                continue
            cut, at = expire_sliding(recs, k, lo, closed_to, size, emit, merge, result, WindowResult, out)
            if at is not None and at != due.get(k):
                due[k] = at
                schedule(at, k)
            if cut:
                del recs[:cut]
                if recs:
                    if self.tracking:
                        self.state.dirty.add(k)
                else:
                    del records[k]
                    due.pop(k, None)
                    self.state.remove(k)

    def _flush(self, out: list[Any]) -> None:
        super()._flush(out)
        self.due.clear()


class CountWindowLogic(_WindowLogic):
    """Count windows: ``counts[key] = [total]`` or ``[total, acc]``; no timestamps, never late."""

    def __init__(self, stage: WindowStage, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        self.n = stage.assigner.n  # type: ignore[attr-defined]
        self.counts = self.state.data

    def _restored(self) -> None:
        if self.acc_type is not None:
            for st in self.counts.values():
                if len(st) == 2:
                    st[1] = self._typed(st[1])

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        touched: dict[Hashable, int] = {}
        full: list[tuple[Hashable, int, Any]] = []
        counts, n, value = self.counts, self.n, self._value
        update_count(chunk, self.key_of, self.value_of, n, self.create, self.add, counts, touched, full)
        if self.tracking:
            self.state.dirty.update(touched)
        out = [WindowResult(k, total - n, total, value(acc)) for k, total, acc in full]
        if self.updates:
            for k in touched:
                st = counts[k]
                if len(st) == 2:
                    total = st[0]
                    start = total - total % n
                    out.append(WindowResult(k, start, start + n, value(st[1])))
        return out

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Barrier:
            self.state.stage(signal.checkpoint_id)
        return None

    def _flush(self, out: list[Any]) -> None:
        n, value = self.n, self._value
        for k, st in self.counts.items():
            if len(st) == 2:
                start = st[0] - st[0] % n
                out.append(WindowResult(k, start, start + n, value(st[1])))

    def _expire(self, items: list[Any], closed_to: int, out: list[Any]) -> None:
        pass
