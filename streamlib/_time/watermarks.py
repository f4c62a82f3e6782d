"""Event timestamps and watermarks: the ``with_timestamps`` stage.

``with_timestamps(fn, max_out_of_orderness, idle_timeout)`` passes elements on
unchanged. After each chunk whose largest timestamp advanced the watermark it
emits ``Watermark(max_ts - max_out_of_orderness)`` in-band, after the chunk, so
every operator downstream sees the elements first. Watermarks only rise.

Idle inputs: with ``idle_timeout`` (processing-time seconds) a timer fires
when no chunk arrived for that long and advances the watermark by the
processing time elapsed since the last chunk, and keeps doing so while the input
stays quiet. A window therefore closes on a quiet stream without heartbeat
messages; the price is that an element arriving after a long silence with an old
timestamp may be late.

Bounded inputs: with ``bounded=True`` the stage emits no watermark at all, so
every window downstream stays open until the end of the stream, which emits
them all. A finite input in any order then gives exactly the batch result, with
no out-of-orderness bound to guess and no late data.

Upstream watermarks (from a source, or an earlier ``with_timestamps``) are
dropped: this stage defines event time from here on. Barriers pass unchanged.

Window and stateful operators downstream find ``fn`` in the blueprint
(:func:`find_upstream`), so they need not be told the timestamp again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from .._runtime.clock import Clock
from .._runtime.context import RunContext
from .._runtime.signals import Signal, Watermark
from ..stage import Stage, StageLogic
from .kernels import max_timestamp

#: The watermark before any: below every timestamp.
NO_WATERMARK = -(2**63)


class WithTimestamps(Stage):
    name = "with_timestamps"

    def __init__(
        self, fn: Callable[[Any], int], bound_ms: int, idle_timeout: float | None, bounded: bool = False
    ) -> None:
        if not callable(fn):
            raise TypeError(f"with_timestamps(fn) needs a function returning int milliseconds, got {fn!r}")
        if bounded and (bound_ms or idle_timeout is not None):
            raise ValueError(
                "with_timestamps(bounded=True) keeps every window open until the end of the input, so "
                "max_out_of_orderness and idle_timeout do not apply: drop them, or drop bounded=True"
            )
        self.fn = fn
        self.bound_ms = bound_ms
        self.idle_timeout = idle_timeout
        self.bounded = bounded

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        if self.bounded:
            return BoundedTimestampsLogic(self.fn, 0), None
        if self.idle_timeout is None:
            return WithTimestampsLogic(self.fn, self.bound_ms), None
        return IdleWithTimestampsLogic(self.fn, self.bound_ms, self.idle_timeout, ctx.clock), None


def bad_timestamp(stage_name: str, value: Any) -> TypeError:
    return TypeError(
        f"{stage_name}: the timestamp function returned {value!r} ({type(value).__name__}); event "
        "timestamps are int milliseconds since the epoch, e.g. int(dt.timestamp() * 1000)"
    )


class WithTimestampsLogic(StageLogic):
    def __init__(self, fn: Callable[[Any], int], bound_ms: int) -> None:
        self.fn = fn
        self.bound = bound_ms
        self.max_ts = NO_WATERMARK
        self.wm = NO_WATERMARK

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        if chunk:
            m = max_timestamp(self.fn, chunk)
            if type(m) is not int:
                raise bad_timestamp(self.stage_name, m)
            if m > self.max_ts:
                self.max_ts = m
                wm = m - self.bound
                if wm > self.wm:
                    self.wm = wm
                    self.emit_signal(Watermark(wm))
        return chunk

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if isinstance(signal, Watermark):
            self.pending_signals = []  # event time is defined here: drop upstream watermarks
        return None


class BoundedTimestampsLogic(WithTimestampsLogic):
    """``bounded=True``: checks timestamps, emits no watermark; the end of the stream closes every window."""

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        if chunk:
            m = max_timestamp(self.fn, chunk)
            if type(m) is not int:
                raise bad_timestamp(self.stage_name, m)
        return chunk


class IdleWithTimestampsLogic(WithTimestampsLogic):
    uses_timers = True

    def __init__(self, fn: Callable[[Any], int], bound_ms: int, idle_timeout: float, clock: Clock) -> None:
        super().__init__(fn, bound_ms)
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.last_active = 0.0
        self.idle_base = NO_WATERMARK

    def on_start(self) -> list[Any]:
        self.last_active = self.clock.now()
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out = super().on_chunk(chunk)
        if chunk:
            now = self.last_active = self.clock.now()
            self.idle_base = self.wm
            self.timer_at = now + self.idle_timeout
        return out

    def on_timer(self, now: float) -> list[Any]:
        if self.idle_base == NO_WATERMARK:
            return []
        wm = self.idle_base + int((now - self.last_active) * 1000)
        if wm > self.wm:
            self.wm = wm
            self.emit_signal(Watermark(wm))
        self.timer_at = now + self.idle_timeout
        return []


def find_upstream(module: Any, kind: type, what: str) -> list[Any]:
    """The nearest stages of type ``kind`` upstream of ``module``'s outlet, one per path.

    Walks the blueprint's edges backwards from the open outlet; a path stops at
    the first ``kind`` stage it meets. ``what`` names the search in errors.
    """
    if module.outlet is None:
        raise ValueError(f"{what}: the blueprint has no open output")
    preds: dict[int, list[int]] = {}
    for e in module.edges:
        preds.setdefault(e.dst, []).append(e.src)
    found: list[Any] = []
    seen = {module.outlet[0]}
    queue = deque([module.outlet[0]])
    while queue:
        i = queue.popleft()
        stage = module.stages[i]
        if isinstance(stage, kind):
            if not any(stage is f for f in found):
                found.append(stage)
            continue
        for j in preds.get(i, ()):
            if j not in seen:
                seen.add(j)
                queue.append(j)
    return found
