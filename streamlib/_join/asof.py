"""The as-of join of two streams, on the two-input stage (``_ops/binary.py``).

``left.join_asof(right, key=..., combine=...)``: each left element ``a`` (event
time ``ta``) is joined with the right element ``b`` of the same key whose
timestamp ``tb`` is the greatest one ``<= ta`` (with ``tolerance``: also
``ta - tb <= tolerance``); of several right elements with that key and
timestamp, the one that arrived last. ``how="inner"`` drops a left element
without such a match, ``"left"`` emits ``combine(a, None)`` for it. Every left
element gives exactly one result (or none, inner).

When. A left element waits until the combined watermark ``W`` (the minimum of
both inputs' watermarks) passes its timestamp (``W > ta``): from then on no
right element that is not late can still precede it, so its match is final.
Waiting elements are released in ``(timestamp, arrival)`` order. Once the
right input ended, left elements are joined on arrival; at the end of both
inputs every waiting element is joined.

Late data. A left element with ``ta < W`` on arrival is late (its turn is
over), and so is a right element with ``tb < W`` (left elements it could have
matched were already joined): ``late="fail"`` (the default) fails the stream
with ``LateDataError``, ``"emit"`` emits it as a ``LateRecord``, a Sink gets the
``LateRecord`` s. A late element is used nowhere else.

State. Right elements are kept per key as versions over event time (a
:class:`~streamlib._table.state.TableState`, versioned), left elements waiting
for the watermark in a :class:`~streamlib._table.join.Pending`. Both live in
the store (``store=`` or an upstream ``checkpointed``), are staged at aligned
barriers and restored. As ``W`` rises, a key's versions before the one valid
at ``W`` are deleted (no future left element can want them); with
``tolerance``, a key whose latest version is older than ``W - tolerance`` is
deleted too. Without ``tolerance`` the latest right element of every key is
kept for as long as the join runs, like a table.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal

from .._dsl.fields import extractor
from .._dsl.keyed import default_store, timestamp_of
from .._ops.binary import BinaryLogic, BinaryStage, with_other
from .._runtime.context import RunContext
from .._state.store import StateStore
from .._table.join import Pending, _finish, element_decoder
from .._table.state import TableState
from .._time.durations import event_ms
from .._time.results import LateDataError, LateRecord, is_late
from .._time.watermarks import NO_WATERMARK

_LEFT = 0


class AsofJoinStage(BinaryStage):
    """Blueprint: input 0 the left stream, input 1 the right one."""

    def __init__(
        self,
        key_a: Callable[[Any], Hashable],
        key_b: Callable[[Any], Hashable],
        ts_a: Callable[[Any], int],
        ts_b: Callable[[Any], int],
        combine: Callable[[Any, Any], Any],
        inner: bool,
        tolerance_ms: int | None,
        store: StateStore | None,
        fail_late: bool,
        types: tuple[Any, Any],
        name: str | None,
    ) -> None:
        self.key_a, self.key_b = key_a, key_b
        self.ts_a, self.ts_b = ts_a, ts_b
        self.combine = combine
        self.inner = inner
        self.tolerance = tolerance_ms
        self.store = store
        self.fail_late = fail_late
        self.types = types
        self.name = name or "join_asof"

    def make_logic(self, ctx: RunContext) -> BinaryLogic:
        return AsofJoinLogic(self, ctx)


class AsofJoinLogic(BinaryLogic):
    def __init__(self, stage: AsofJoinStage, ctx: RunContext) -> None:
        self.key_a, self.key_b = stage.key_a, stage.key_b
        self.ts_a, self.ts_b = stage.ts_a, stage.ts_b
        self.combine = stage.combine
        self.inner = stage.inner
        self.tolerance = stage.tolerance
        self.fail_late = stage.fail_late
        self.right = TableState(stage.store, ctx, f"{stage.name}.right", 0, stage.types[1], stage.tolerance)
        self.pending = Pending(
            stage.store, ctx, f"{stage.name}.pending", (element_decoder(stage.types[0]), element_decoder(None))
        )
        self.wm = NO_WATERMARK
        self.right_ended = False

    def on_start(self, out: list[Any]) -> None:
        self.right.load()
        self.pending.load()

    # -- input --------------------------------------------------------------------------

    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        if side == 1:
            self._rights(chunk, out)
        else:
            self._lefts(chunk, out)

    def _rights(self, chunk: list[Any], out: list[Any]) -> None:
        key_of, ts_of, put, wm = self.key_b, self.ts_b, self.right.put, self.wm
        late: list[Any] | None = None
        for b in chunk:
            tb = ts_of(b)
            if tb < wm:
                late = [] if late is None else late
                late.append((b, key_of(b), tb))
                continue
            if b is None:
                raise ValueError(
                    f"{self.stage_name}: the right input has a None element; join_asof keeps right elements "
                    "as values, and None is no value: map them to something else first"
                )
            put(key_of(b), b, tb)
        if late:
            self._late(1, late, out)

    def _lefts(self, chunk: list[Any], out: list[Any]) -> None:
        ts_of, wm = self.ts_a, self.wm
        if self.right_ended:
            now: list[tuple[int, int, Any]] = []
            late: list[tuple[int, int, Any]] = []
            for a in chunk:
                ta = ts_of(a)
                (late if ta < wm else now).append((ta, 0, a))
            self._join(now, out)
            if late:
                self._late(0, [(a, self.key_a(a), ta) for ta, _s, a in late], out)
            return
        push = self.pending.push
        late2: list[Any] | None = None
        for a in chunk:
            ta = ts_of(a)
            if ta < wm:
                late2 = [] if late2 is None else late2
                late2.append((a, self.key_a(a), ta))
            else:
                push(_LEFT, ta, a)
        if late2:
            self._late(0, late2, out)

    def _join(self, items: list[tuple[int, int, Any]], out: list[Any]) -> None:
        """Join ``(ts, seq, element)`` left items with the right versions as of each ts."""
        key_of, combine, emit, inner, tol = self.key_a, self.combine, out.append, self.inner, self.tolerance
        version = self.right.version_as_of
        for ta, _seq, a in items:
            v = version(key_of(a), ta)
            if v is not None and (tol is None or ta - v[0] <= tol):
                emit(combine(a, v[1]))
            elif not inner:
                emit(combine(a, None))

    def _late(self, side: int, late: list[tuple[Any, Any, int]], out: list[Any]) -> None:
        wm = self.wm
        name = "left" if side == 0 else "right"
        if self.fail_late:
            x, key, ts = late[0]
            raise LateDataError(
                f"{self.stage_name}: late {name} element {x!r:.200} (key {key!r}, timestamp {ts}) arrived after "
                f"the watermark {wm} passed it, when the left elements it concerns were already joined. Connect "
                "a late-data output: join_asof(..., late=Sink.foreach(...)) or late='emit'; or allow more "
                "disorder: with_timestamps(max_out_of_orderness=...) on both inputs"
            )
        for x, key, ts in late:
            if side == 0:
                span, what = (ts, ts + 1), "its match was decided when the watermark passed its timestamp"
            else:
                span, what = (ts, wm), "left elements it could match up to the watermark were already joined"
            out.append(
                LateRecord(x, key, ts, wm, span[0], span[1], f"{name} element of an as-of join: watermark {wm}; {what}")
            )

    # -- time, checkpoints, end -------------------------------------------------------------

    def _release(self, upto: int | None, out: list[Any]) -> None:
        items = sorted(self.pending.sides[_LEFT].drain_below(upto))  # by (ts, seq): seq is unique
        if items:
            self._join(items, out)

    def on_watermark(self, time_ms: int, out: list[Any]) -> None:
        self.wm = time_ms
        if self.pending.sides[_LEFT]:
            self._release(time_ms, out)
        self.right.expire(time_ms)

    def on_input_end(self, side: int, out: list[Any]) -> None:
        if side == 1:
            self.right_ended = True
            self._release(None, out)  # no right element can come: every waiting element is decided

    def on_barrier(self, checkpoint_id: int) -> None:
        self.right.stage(checkpoint_id)
        self.pending.stage(checkpoint_id)

    def on_finish(self, out: list[Any]) -> None:
        self._release(None, out)
        _finish(self.right.state, self.pending.state)

    def on_failure(self, error: BaseException) -> None:
        self._close()

    def on_cancel(self) -> None:
        self._close()

    def _close(self) -> None:
        self.right.close()
        self.pending.state.close()


def join_asof(
    blueprint: Any,
    other: Any,
    *,
    combine: Callable[[Any, Any], Any],
    key: Any,
    key_a: Any,
    key_b: Any,
    tolerance: Any,
    how: Literal["inner", "left"],
    store: StateStore | None,
    late: Any,
    late_mat: Callable[[Any, Any], Any] | None,
    types: tuple[Any, Any],
    name: str | None,
) -> Any:
    """``blueprint`` (a Source or Flow) as-of joined with the Source ``other`` (see ``Source.join_asof``)."""
    from .._dsl.keep import Keep
    from .._dsl.sink import Sink
    from .._dsl.source import Source

    if not isinstance(other, Source):
        raise TypeError(f"join_asof(other) needs a Source to join with, got {other!r}")
    if how not in ("inner", "left"):
        raise ValueError(f"join_asof(how=) is 'inner' or 'left', got {how!r}")
    if not callable(combine):
        raise TypeError(f"join_asof(combine=) needs a function combine(left, right), got {combine!r}")
    if key is not None:
        if key_a is not None or key_b is not None:
            raise TypeError("join_asof: pass key= (both sides) or key_a= and key_b=, not both")
        key_a = key_b = key
    if key_a is None or key_b is None:
        raise TypeError("join_asof needs key_a= and key_b= (or key= for both sides): which elements may join")
    fa = extractor(key_a, "join_asof(key_a=)")
    fb = extractor(key_b, "join_asof(key_b=)")
    tol: int | None = None
    if tolerance is not None:
        tol = event_ms(tolerance, "join_asof(tolerance=)")
    if not (isinstance(late, Sink) or late in ("fail", "emit")):
        raise ValueError(f"join_asof(late=) is a Sink, 'emit' or 'fail', got {late!r}")
    ts_a = timestamp_of(blueprint, None, "join_asof")
    ts_b = timestamp_of(other, None, "join_asof")
    for ts, side in ((ts_a, "left"), (ts_b, "right")):
        if ts is None:
            raise ValueError(
                f"join_asof: the {side} input has no event time. An as-of join matches elements by timestamp: "
                f"add .with_timestamps(lambda e: e.ts_ms, max_out_of_orderness=...) to the {side} input first"
            )
    if store is None:
        sa = default_store(blueprint, None, "join_asof")
        sb = default_store(other, None, "join_asof")
        if sa is not None and sb is not None and sa is not sb:
            raise ValueError(
                "join_asof: the two inputs are checkpointed into different stores; checkpoint both into one "
                "store (their barriers are aligned in the join), or pass store= to choose"
            )
        store = sa if sa is not None else sb
    elif not isinstance(store, StateStore):
        raise TypeError(f"join_asof(store=) needs a state store (MemoryStore(), RocksDBStore(path)), got {store!r}")
    stage = AsofJoinStage(
        fa, fb, ts_a, ts_b, combine, how == "inner", tol, store, late == "fail", types, name  # type: ignore[arg-type]
    )
    out = with_other(blueprint, stage, other)
    if isinstance(late, Sink):
        from .._ops.junctions import divert_to

        out = out._via_module(divert_to(late._module, is_late), late_mat or Keep.left)
    return out
