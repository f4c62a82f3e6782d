"""The ``match`` stage: one fused logic running a compiled pattern per key.

Event time (the default): events wait in a buffer until the watermark passes
their timestamp, then run through the NFA in timestamp order (ties in arrival
order), so out-of-order events within the watermark's bound are matched as if
they had arrived in order. An event older than the watermark is late and fails
the stream (:class:`LateEventError`). After the released events, every window
that ends at or before the watermark closes: a pattern ending in
``not_followed_by`` completes, other partial matches time out. So an absence
fires on the watermark alone, with no new event for that key. The end of the
stream releases everything and closes every window (the watermark goes to
infinity).

Processing time (``time="processing"``): each event is stamped with the run's
clock when it arrives (``ctx.clock.now()`` in ms) and matched at once; windows
close on the island's timer (``uses_timers``/``timer_at``/``on_timer``), so a
virtual clock drives them in tests. At the end of the stream open partial
matches time out, and an absence not yet confirmed is not a match.

State: ``OperatorState.data`` maps a key to its runs (lists, see ``_nfa.py``;
tuples on the fast path, see ``_linear.py``); keys without runs are removed. At
a barrier the dirty keys, the watermark, the event buffer and the position
counter are staged to the store; on start they are reloaded. The window ends (one entry per key with runs)
find the keys whose windows close, so a watermark costs in proportion to the
windows it closes: entries come in ``(end, seq, key)`` order, a deque takes
those pushed in order of their end (all of them while events come in time
order), a heap the others, and closing pops the smaller head of the two.

A pattern of single-event steps joined by ``next``/``followed_by`` with
conditions on the event alone (``_linear.is_linear``) runs its events through
``feed_linear`` (compiled when available, see ``streamlib._native``) instead of
the general NFA step: same runs, same state, same output. ``FAST_PATH = False``
turns that off (the tests compare both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from heapq import heappush
from bisect import bisect_right
from collections import deque
from typing import Any, Literal

import msgspec

from .._runtime.clock import Clock
from .._runtime.context import RunContext
from .._runtime.signals import Barrier, Signal, Watermark
from .._state.checkpoint import StatefulStage
from .._state.operator_state import EXTRA_PREFIX, OperatorState
from .._state.store import StateStore
from .._time.watermarks import NO_WATERMARK
from ..stage import StageLogic
from .. import _native
from ._kernels import ascending, close_due, stamp
from ._linear import LinearPlan, feed_linear, is_linear
from ._nfa import NFA
from ._pattern import Pattern
from ._results import LateEventError, Timeout

TimeMode = Literal["event", "processing"]
_WM = EXTRA_PREFIX + b"watermark"
_BUF = EXTRA_PREFIX + b"buffer"
_POS = EXTRA_PREFIX + b"position"
_FOREVER = 2**62
#: Run linear patterns through ``feed_linear`` (the general NFA gives the same results, slower).
FAST_PATH = True


def is_timeout(x: Any) -> bool:
    return type(x) is Timeout


class MatchStage(StatefulStage):
    """Blueprint of one ``keyed.match(pattern)``."""

    def __init__(
        self,
        pattern: Pattern[Any],
        key_of: Callable[[Any], Hashable],
        ts_of: Callable[[Any], int] | None,
        store: StateStore | None,
        timeouts: bool,
        time: TimeMode,
        event_type: Any,
        name: str | None,
    ) -> None:
        if not isinstance(pattern, Pattern):
            raise TypeError(f"match(pattern) needs a streamlib.cep.Pattern, got {pattern!r}")
        if time not in ("event", "processing"):
            raise ValueError(f"match(time=) is 'event' or 'processing', got {time!r}")
        self.compiled = pattern.compile()
        if timeouts and self.compiled.within is None:
            raise ValueError("match(timeouts=): the pattern has no within(...), so no partial match ever times out")
        if time == "event" and ts_of is None:
            raise ValueError(
                "match() in event time needs timestamps: add .with_timestamps(lambda e: e.ts_ms, "
                "max_out_of_orderness=...) before key_by, pass match(..., timestamp=...), or use "
                "match(..., time='processing') to stamp events with the clock as they arrive"
            )
        self.pattern = pattern
        self.key_of = key_of
        self.ts_of = ts_of
        self.store = store
        self.timeouts = timeouts
        self.time = time
        self.event_type = event_type
        self.name = name or "match"

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        if self.time == "processing":
            return ProcessingTimeMatchLogic(self, ctx), None
        return EventTimeMatchLogic(self, ctx), None


class _MatchLogic(StageLogic):
    def __init__(self, stage: MatchStage, ctx: RunContext) -> None:
        self.stage_name = stage.name
        self.nfa = NFA(stage.compiled, stage.timeouts)
        self.within = stage.compiled.within
        self.key_of = stage.key_of
        self.state = OperatorState(stage.store, ctx, stage.name)
        self.tracking = self.state.tracking
        self.runs: dict[Hashable, list[list[Any]]] = self.state.data
        self.event_type = stage.event_type
        self.heap: list[tuple[int, int, Hashable]] = []
        self.fifo: deque[tuple[int, int, Hashable]] = deque()
        self.due: dict[Hashable, int] = {}
        self.seq = 0
        self.pos = 0
        self._close_due = _native.cep_kernel("close_due", close_due)
        self.linear: LinearPlan | None = None
        if FAST_PATH and is_linear(stage.compiled):
            self.linear = LinearPlan(self.nfa)
            self._feed_linear = _native.cep_kernel("feed_linear", feed_linear)

    def _event(self, e: Any) -> Any:
        return e if self.event_type is None else msgspec.convert(e, self.event_type)

    def on_start(self) -> list[Any]:
        self.state.load()
        extra = self.state.extra
        self.pos = extra.get(_POS, 0)
        for k, runs in self.runs.items():
            restored: list[Any] = [
                [r[0], r[1], r[2], r[3], r[4], r[5], tuple((s, p, self._event(e)) for s, p, e in r[6])] for r in runs
            ]
            if self.linear is not None:  # feed_linear's runs are tuples (see _linear.py)
                restored = [tuple(r) for r in restored]
            self.runs[k] = restored
            if self.within is not None and restored:
                self._schedule(min(r[4] for r in restored) + self.within, k)
        self._restored(extra)
        return []

    def _restored(self, extra: dict[bytes, Any]) -> None:
        pass

    def _schedule(self, at: int, key: Hashable) -> None:
        # One live heap entry per key with runs, at or before its earliest window end.
        self.due[key] = at
        self.seq += 1
        fifo = self.fifo
        if not fifo or fifo[-1][0] <= at:
            fifo.append((at, self.seq, key))
        else:
            heappush(self.heap, (at, self.seq, key))

    def _next_end(self) -> int | None:
        """The earliest window end scheduled (None: none)."""
        heap, fifo = self.heap, self.fifo
        if fifo and (not heap or fifo[0][0] <= heap[0][0]):
            return fifo[0][0]
        return heap[0][0] if heap else None

    def _feed_all(self, tss: list[int], evs: list[Any], out: list[Any]) -> None:
        """Run each event ``evs[i]`` (time ``tss[i]``) through its key's runs, in order."""
        if self.linear is not None:
            self._feed_linear(self, tss, evs, out)
            return
        runs_of, key_of, step = self.runs, self.key_of, self.nfa.step
        tracking, dirty, remove = self.tracking, self.state.dirty, self.state.remove
        within, due = self.within, self.due
        pos = self.pos
        # A key without runs only needs the start conditions: most events of a quiet key stop here.
        simple = self.nfa.simple_start
        inline_start = self.nfa.inline_start
        for ts, e in zip(tss, evs):
            pos += 1
            k = key_of(e)
            runs = runs_of.get(k)
            if not runs:
                if simple is not None:
                    if not simple(e):
                        continue
                    if inline_start is not None:  # the event starts the key's only run
                        j, nmask = inline_start
                        runs_of[k] = [[j, 1, nmask, True, ts, pos, ((j, pos, e),)]]
                        if tracking:
                            dirty.add(k)
                        if within is not None and k not in due:
                            self._schedule(ts + within, k)
                        continue
                alive = step(k, (), ts, pos, e, out)
            else:
                alive = step(k, runs, ts, pos, e, out)
            if alive:
                runs_of[k] = alive
                if tracking:
                    dirty.add(k)
                if within is not None and k not in due:
                    self._schedule(min(r[4] for r in alive) + within, k)
            elif runs is not None:
                del runs_of[k]
                remove(k)
        self.pos = pos

    def _close(self, upto: int, out: list[Any], confirm: bool = True) -> None:
        """Close every window ending at or before ``upto`` (``_kernels.close_due``, compiled when available)."""
        self._close_due(self, upto, out, confirm)

    def _extra(self) -> dict[bytes, Any]:
        return {_POS: self.pos}

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Barrier:
            self.state.stage(signal.checkpoint_id, self._extra())
        return None

    def on_cancel(self) -> None:
        self.state.close()

    def on_failure(self, error: BaseException) -> None:
        self.state.close()


class EventTimeMatchLogic(_MatchLogic):
    def __init__(self, stage: MatchStage, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        self.ts_of: Callable[[Any], int] = stage.ts_of  # type: ignore[assignment]
        self.wm = NO_WATERMARK
        # Events waiting for the watermark, in arrival order: times and events side by side;
        # ``in_order``: the times do not decrease (no sort needed on release).
        self.buf_ts: list[int] = []
        self.buf_ev: list[Any] = []
        self.in_order = True
        self._stamp = _native.cep_kernel("stamp", stamp)

    def _restored(self, extra: dict[bytes, Any]) -> None:
        self.wm = extra.get(_WM, NO_WATERMARK)
        pairs = extra.get(_BUF, [])
        self.buf_ts = [ts for ts, _ in pairs]
        self.buf_ev = [self._event(e) for _, e in pairs]
        self.in_order = ascending(self.buf_ts)

    def _extra(self) -> dict[bytes, Any]:
        return {_POS: self.pos, _WM: self.wm, _BUF: list(zip(self.buf_ts, self.buf_ev))}

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        if not chunk:
            return []
        tss, lowest, in_order = self._stamp(self.ts_of, chunk, self.stage_name)
        if lowest < self.wm:
            ts, e = next((t, e) for t, e in zip(tss, chunk) if t < self.wm)
            raise LateEventError(
                f"{self.stage_name}: event {e!r:.200} (timestamp {ts}) arrived after the watermark {self.wm} "
                "had passed it, so it cannot be matched in time order. Allow more disorder: "
                "with_timestamps(..., max_out_of_orderness=...), or match in processing time: "
                "match(..., time='processing')"
            )
        buf_ts = self.buf_ts
        if self.in_order and not ((not buf_ts or buf_ts[-1] <= tss[0]) and in_order):
            self.in_order = False
        buf_ts.extend(tss)
        self.buf_ev.extend(chunk)
        return []

    def _release(self, upto: int, out: list[Any]) -> None:
        buf_ts, buf_ev = self.buf_ts, self.buf_ev
        if not buf_ts:
            return
        if self.in_order:
            if buf_ts[-1] <= upto:
                self.buf_ts, self.buf_ev = [], []
                self._feed_all(buf_ts, buf_ev, out)
                return
            n = bisect_right(buf_ts, upto)
            if not n:
                return
            tss, evs = buf_ts[:n], buf_ev[:n]
            del buf_ts[:n], buf_ev[:n]
            self._feed_all(tss, evs, out)
            return
        # Out of order: the ready events sorted by time (stable: ties stay in arrival order).
        ready = [i for i, ts in enumerate(buf_ts) if ts <= upto]
        if not ready:
            return
        ready.sort(key=buf_ts.__getitem__)
        tss = [buf_ts[i] for i in ready]
        evs = [buf_ev[i] for i in ready]
        keep = [i for i, ts in enumerate(buf_ts) if ts > upto]
        self.buf_ts = [buf_ts[i] for i in keep]
        self.buf_ev = [buf_ev[i] for i in keep]
        self.in_order = ascending(self.buf_ts)
        self._feed_all(tss, evs, out)

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Watermark:
            w = signal.time_ms
            if w > self.wm:
                self.wm = w
                out: list[Any] = []
                self._release(w, out)
                if self.within is not None:
                    self._close(w, out)
                return out
            return None
        return super().on_signal(signal)

    def on_finish(self) -> list[Any]:
        out: list[Any] = []
        self._release(_FOREVER, out)
        if self.within is not None:
            self._close(_FOREVER, out)
        self.state.finish()
        return out


class ProcessingTimeMatchLogic(_MatchLogic):
    uses_timers = True

    def __init__(self, stage: MatchStage, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        self.clock: Clock = ctx.clock

    def _now_ms(self) -> int:
        return math.floor(self.clock.now() * 1000 + 1e-6)

    def _rearm(self) -> None:
        end = self._next_end()
        self.timer_at = end / 1000 if end is not None else None

    def on_start(self) -> list[Any]:
        out = super().on_start()
        self._rearm()
        return out

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out: list[Any] = []
        now = self._now_ms()
        if self.within is not None:
            self._close(now, out)
        self._feed_all([now] * len(chunk), chunk, out)
        self._rearm()
        return out

    def on_timer(self, now: float) -> list[Any]:
        out: list[Any] = []
        self._close(self._now_ms(), out)
        self._rearm()
        return out

    def on_finish(self) -> list[Any]:
        out: list[Any] = []
        if self.within is not None:
            self._close(_FOREVER, out, confirm=False)
        self.state.finish()
        return out
