"""Stream-table and table-table joins, on the two-input stage (``_ops/binary.py``).

Both joins keep their own copy of the table(s) they read (a :class:`TableState`
in the store, fed by the tables' change streams), so a join never reads state
another task is changing, and is checkpointed with its inputs' positions.

Ordering. When both inputs carry event time, the join applies table changes
and handles stream elements (or, for table-table, the changes of both tables)
in event-time order, as far as watermarks allow: an item waits in a buffer
(:class:`Pending`, in the store too) until the combined watermark ``W`` (the
minimum of both inputs' watermarks) passes its timestamp, and buffered items
are released in order of ``(timestamp, side, arrival)``: at equal timestamps a
table change comes before a stream element (it is visible to it), a left
table's change before a right one's. Shortcuts that cannot change a result:

* a versioned table's changes are applied on arrival (lookups are *as of* the
  element's time, so later versions are invisible to earlier elements);
* once the table input ended, a stream element is joined on arrival when no
  buffered table change is at or before its timestamp;
* an item already behind ``W`` when it arrives (late) is handled on arrival:
  a late table change updates the table from then on, a late stream element is
  joined with the table as it is (as of its time, when versioned).

Without event time on either input, everything is handled on arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from bisect import bisect_left, bisect_right
from heapq import heappop, heappush
from operator import itemgetter
from typing import Any

import msgspec

from .._dsl.module import Module
from .._ops.binary import BinaryDriver, BinaryLogic, BinaryStage, with_other
from .._runtime.context import RunContext
from .._state.codec import encode, freeze, raw_encode
from .._state.operator_state import OperatorState
from .._state.store import StateStore
from .._time.watermarks import NO_WATERMARK
from ..stage import AsyncLogic
from .change import Change, HistoryChange
from .state import TableState
from .table import Table
from .view import TableView

_TABLE = 0
_STREAM = 1
_TS = itemgetter(0)


class _Buffer:
    """One side's waiting items ``(ts, seq, payload)``: a sorted run (in-order arrivals) plus a heap (the rest)."""

    __slots__ = ("run", "start", "stray")

    def __init__(self) -> None:
        self.run: list[tuple[int, int, Any]] = []
        self.start = 0
        self.stray: list[tuple[int, int, Any]] = []

    def push(self, item: tuple[int, int, Any]) -> None:
        run = self.run
        if len(run) == self.start or item[0] >= run[-1][0]:
            run.append(item)
        else:
            heappush(self.stray, item)

    def head(self) -> tuple[int, int, Any] | None:
        """The first item in ``(ts, seq)`` order, None when empty."""
        r = self.run[self.start] if self.start < len(self.run) else None
        if not self.stray:
            return r
        s = self.stray[0]
        if r is None or s[0] < r[0] or (s[0] == r[0] and s[1] < r[1]):
            return s
        return r

    def pop(self) -> tuple[int, int, Any]:
        item = self.head()
        assert item is not None
        if self.stray and item is self.stray[0]:
            heappop(self.stray)
        else:
            self._advance(self.start + 1)
        return item

    def drain_below(self, limit: int | None) -> list[tuple[int, int, Any]]:
        """Remove and return every item with ``ts < limit`` (all for None), in no particular order."""
        run = self.run
        i = len(run) if limit is None else bisect_left(run, limit, lo=self.start, key=_TS)
        out = run[self.start : i]
        self._advance(i)
        stray = self.stray
        while stray and (limit is None or stray[0][0] < limit):
            out.append(heappop(stray))
        return out

    def _advance(self, i: int) -> None:
        self.start = i
        if i == len(self.run):
            self.run = []
            self.start = 0
        elif i > 4096 and i * 2 > len(self.run):
            del self.run[:i]
            self.start = 0

    def items(self) -> Iterator[tuple[int, int, Any]]:
        yield from self.run[self.start :]
        yield from self.stray

    def __bool__(self) -> bool:
        return self.start < len(self.run) or bool(self.stray)


class Pending:
    """Items waiting for the watermark, one :class:`_Buffer` per side, written to the store at barriers.

    Nothing is tracked per item. Items are grouped by *epoch*, the checkpoint
    interval they arrived in (a range of sequence numbers); one row per epoch
    holds that epoch's items still waiting. A barrier writes the new epoch's
    row, rewrites the rows of epochs that lost items to the watermark since,
    and deletes the rows of epochs with none left, so persistence costs one
    encode per epoch, in proportion to what waits, not to the stream.
    """

    __slots__ = ("state", "sides", "seq", "epochs", "counts", "decode")

    def __init__(
        self, store: StateStore | None, ctx: RunContext, name: str, decode: tuple[Callable[[Any], Any], Callable[[Any], Any]]
    ) -> None:
        self.state = OperatorState(store, ctx, name)
        self.sides = (_Buffer(), _Buffer())
        self.seq = 0
        self.epochs: list[int] = [1]  # the first sequence number of each epoch with items in the store, and the open one
        self.counts: dict[int, int] = {}  # epoch -> items its row holds
        self.decode = decode  # each side's restored payload (builtins) -> the payload

    def load(self) -> None:
        self.state.load()
        restored: list[tuple[int, Any]] = sorted((int(e), rows) for e, rows in self.state.data.items())  # type: ignore[call-overload]
        self.state.data.clear()
        self.state.persisted.clear()
        items: list[Any] = []
        for epoch, rows in restored:
            self.counts[epoch] = len(rows)
            self.epochs.append(epoch)
            items.extend(rows)
        items.sort(key=lambda r: r[2])  # by sequence number: a side's run stays in arrival order
        for side, ts, seq, raw in items:
            self.sides[side].push((ts, seq, self.decode[side](raw)))
            self.seq = max(self.seq, seq)
        self.epochs = sorted(set(self.epochs[1:])) + [self.seq + 1]

    def push(self, side: int, ts: int, payload: Any) -> None:
        self.seq += 1
        self.sides[side].push((ts, self.seq, payload))

    def release(self, upto: int | None) -> Iterator[tuple[int, int, Any]]:
        """Pop ``(side, ts, payload)`` with ``ts < upto`` (everything for None), by ``(ts, side, seq)``."""
        a, b = self.sides
        while True:
            ha, hb = a.head(), b.head()
            if ha is not None and (hb is None or ha[0] < hb[0] or (ha[0] == hb[0])):
                side, item = 0, ha
            elif hb is not None:
                side, item = 1, hb
            else:
                return
            if upto is not None and item[0] >= upto:
                return
            (a if side == 0 else b).pop()
            yield side, item[0], item[2]

    def stage(self, checkpoint_id: int) -> None:
        if self.state.run is None:
            return
        epochs = self.epochs
        groups: dict[int, list[tuple[int, int, int, Any]]] = {}
        for side in (0, 1):
            for ts, seq, payload in self.sides[side].items():
                epoch = epochs[bisect_right(epochs, seq) - 1]
                group = groups.get(epoch)
                if group is None:
                    group = groups[epoch] = []
                group.append((side, ts, seq, payload))
        counts = self.counts
        rows: list[tuple[bytes, bytes | None]] = []
        for epoch, group in groups.items():
            if counts.get(epoch) != len(group):
                try:
                    rows.append((raw_encode(epoch), raw_encode(group)))
                except (TypeError, OverflowError):
                    for item in group:  # name the culprit
                        encode(item[3], f"a waiting element of {self.state.stage_name}")
                    raise
                counts[epoch] = len(group)
        for epoch in [e for e in counts if e not in groups]:
            rows.append((raw_encode(epoch), None))
            del counts[epoch]
        self.epochs = sorted(counts) + [self.seq + 1]  # the next epoch starts after the last item so far
        self.state.stage(checkpoint_id, rows=rows)


def row_decoder(value_type: Any) -> Callable[[Any], tuple[Any, Any]]:
    """Decode a restored ``(key, value)`` row: the key made hashable, the value into ``value_type``."""

    def decode(raw: Any) -> tuple[Any, Any]:
        key, value = raw
        return freeze(key), value if value_type is None or value is None else msgspec.convert(value, value_type)

    return decode


def element_decoder(element_type: Any) -> Callable[[Any], Any]:
    if element_type is None:
        return lambda raw: raw
    return lambda raw: msgspec.convert(raw, element_type)


def _finish(*states: OperatorState) -> None:
    for st in states:
        st.finish()


# -- stream-table join ------------------------------------------------------------------


class StreamTableJoin(BinaryStage):
    """Blueprint: input 0 the stream, input 1 the table's change stream."""

    def __init__(
        self,
        key_of: Callable[[Any], Hashable],
        combine: Callable[[Any, Any], Any],
        inner: bool,
        ts_of: Callable[[Any], int] | None,
        history_ms: int | None,
        value_type: Any,
        element_type: Any,
        store: StateStore | None,
        name: str | None,
    ) -> None:
        self.key_of = key_of
        self.combine = combine
        self.inner = inner
        self.ts_of = ts_of
        self.history = history_ms
        self.value_type = value_type
        self.element_type = element_type
        self.store = store
        self.name = name or "join.table"
        self.key_index: int | None = None  # key= was an int: elements are indexed directly

    def make_logic(self, ctx: RunContext) -> BinaryLogic:
        return StreamTableJoinLogic(self, ctx)


class StreamTableJoinLogic(BinaryLogic):
    def __init__(self, stage: StreamTableJoin, ctx: RunContext) -> None:
        self.key_of = stage.key_of
        self.key_index = stage.key_index
        self.combine = stage.combine
        self.inner = stage.inner
        self.ts_of = stage.ts_of
        self.versioned = stage.history is not None
        self.table = TableState(stage.store, ctx, f"{stage.name}.table", stage.history, stage.value_type)
        self.pending = Pending(
            stage.store, ctx, f"{stage.name}.pending", (row_decoder(stage.value_type), element_decoder(stage.element_type))
        )
        self.wm = NO_WATERMARK
        self.table_ended = False

    def on_start(self, out: list[Any]) -> None:
        self.table.load()
        self.pending.load()

    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        if side == 1:
            self._changes(chunk)
        elif self.ts_of is None or (self.table_ended and not self.pending.sides[_TABLE] and not self.versioned):
            self._join_latest(chunk, out)
        else:
            self._elements(chunk, out)

    def _changes(self, chunk: list[Change[Any, Any]]) -> None:
        put = self.table.put
        if self.ts_of is None or self.versioned:
            for c in chunk:
                put(c.key, c.new, c.timestamp)
            return
        wm, push = self.wm, self.pending.push
        for c in chunk:
            ts: int = c.timestamp  # type: ignore[assignment]
            if ts < wm:
                put(c.key, c.new, ts)  # late: applied on arrival
            else:
                push(_TABLE, ts, (c.key, c.new))

    def _join_latest(self, chunk: list[Any], out: list[Any]) -> None:
        """Every element joins now, with the latest values (no event-time wait needed)."""
        key_of, combine, emit = self.key_of, self.combine, out.append
        get = self.table.data.get
        i = self.key_index
        if i is not None and self.inner:  # key=<int>: the element's item, without a call per element
            for e in chunk:
                v = get(e[i])
                if v is not None:
                    emit(combine(e, v))
            return
        if self.inner:
            for e in chunk:
                v = get(key_of(e))
                if v is not None:
                    emit(combine(e, v))
        else:
            for e in chunk:
                emit(combine(e, get(key_of(e))))

    def _elements(self, chunk: list[Any], out: list[Any]) -> None:
        ts_of, wm, ended, pending = self.ts_of, self.wm, self.table_ended, self.pending
        head = pending.sides[_TABLE].head()
        tmin = None if head is None else head[0]
        now: list[tuple[int, int, Any]] = []
        wait = pending.sides[_STREAM]
        run, seq = wait.run, pending.seq
        last = run[-1][0] if len(run) > wait.start else None
        for e in chunk:
            t: int = ts_of(e)  # type: ignore[misc]
            if t < wm or (ended and (tmin is None or tmin > t)):
                now.append((t, 0, e))
            else:
                seq += 1
                if last is None or t >= last:
                    run.append((t, seq, e))  # in order: the sorted run (_Buffer.push, inlined)
                    last = t
                else:
                    heappush(wait.stray, (t, seq, e))
        pending.seq = seq
        if now:
            self._join_items(now, out)

    def _join_items(self, items: list[tuple[int, int, Any]], out: list[Any]) -> None:
        """Join ``(ts, seq, element)`` items with the table as it is now (as of each ts, when versioned)."""
        key_of, combine, emit, inner = self.key_of, self.combine, out.append, self.inner
        if self.versioned:
            as_of = self.table.as_of
            for t, _seq, e in items:
                v = as_of(key_of(e), t)
                if v is not None or not inner:
                    emit(combine(e, v))
            return
        get = self.table.data.get
        if inner:
            for _t, _seq, e in items:
                v = get(key_of(e))
                if v is not None:
                    emit(combine(e, v))
        else:
            for _t, _seq, e in items:
                emit(combine(e, get(key_of(e))))

    def _release(self, upto: int | None, out: list[Any]) -> None:
        """Table changes and elements with ``ts < upto`` (all for None) in event-time order, table first at a tie.

        Elements do not change the table, so those before the next waiting
        change are joined together, in one pass; likewise the changes up to
        the next waiting element are applied together.
        """
        tbuf, sbuf, put = self.pending.sides[_TABLE], self.pending.sides[_STREAM], self.table.put
        while True:
            head = tbuf.head()
            change_due = head is not None and (upto is None or head[0] < upto)
            items = sbuf.drain_below(head[0] if change_due else upto)  # type: ignore[index]
            if items:
                self._join_items(items, out)
            if not change_due:
                return
            nxt = sbuf.head()  # changes at or before the next element's time come before it
            limit = upto if nxt is None else nxt[0] + 1 if upto is None else min(upto, nxt[0] + 1)
            for ts, _seq, (key, value) in sorted(tbuf.drain_below(limit)):  # by (ts, seq): seq is unique
                put(key, value, ts)

    def on_watermark(self, time_ms: int, out: list[Any]) -> None:
        self.wm = time_ms
        sides = self.pending.sides
        if sides[0] or sides[1]:
            self._release(time_ms, out)
        if self.versioned:
            self.table.expire(time_ms)

    def on_input_end(self, side: int, out: list[Any]) -> None:
        if side == 1:
            self.table_ended = True

    def on_barrier(self, checkpoint_id: int) -> None:
        self.table.stage(checkpoint_id)
        self.pending.stage(checkpoint_id)

    def on_finish(self, out: list[Any]) -> None:
        self._release(None, out)
        _finish(self.table.state, self.pending.state)

    def on_failure(self, error: BaseException) -> None:
        self._close()

    def on_cancel(self) -> None:
        self._close()

    def _close(self) -> None:
        self.table.close()
        self.pending.state.close()


def join_table(
    blueprint: Any,
    table: Table[Any, Any],
    *,
    key: Callable[[Any], Any] | str | int | None,
    combine: Callable[[Any, Any], Any],
    how: str = "inner",
    store: StateStore | None = None,
    element_type: Any = None,
    name: str | None = None,
) -> Any:
    """``blueprint`` (a Source or Flow) with each element joined to ``table`` (see ``Source.join``)."""
    from .._dsl.fields import extractor
    from .._dsl.keyed import default_store, timestamp_of

    if not isinstance(table, Table):
        raise TypeError(f"join(table, ...) needs a Table, got {table!r}")
    if how not in ("inner", "left"):
        raise ValueError(f"a stream-table join is how='inner' or 'left', got {how!r}")
    if key is None:
        raise TypeError("join(table, ...) needs key=: the function (or field) of a stream element giving its table key")
    if not callable(combine):
        raise TypeError(f"join(table, combine=) needs a function combine(element, value), got {combine!r}")
    key_of = extractor(key, "join(key=)")
    ts_of = timestamp_of(blueprint, None, "join")
    if (ts_of is not None) != table.timed:
        has, lacks = ("stream", f"table {table.name!r}") if ts_of is not None else (f"table {table.name!r}", "stream")
        raise ValueError(
            f"join: the {has} has event time but the {lacks} has none. A stream-table join orders table changes "
            f"and elements by event time when both have it, and by arrival when neither does: add "
            f".with_timestamps(...) before the {lacks.split()[0]} too (or remove it from the {has.split()[0]})"
        )
    chosen = default_store(blueprint, store, "join")
    if chosen is None:
        chosen = default_store(table._source, None, "join")
    stage = StreamTableJoin(
        key_of, combine, how == "inner", ts_of, table.history_ms, table.value_type, element_type, chosen, name
    )
    if isinstance(key, int) and not isinstance(key, bool):
        stage.key_index = key
    return with_other(blueprint, stage, table._source)


# -- table-table join --------------------------------------------------------------------


class JoinedView(TableView[Any, Any]):
    """Reads of a table-table join: computed from its two sides' current values."""

    def __init__(self) -> None:
        self.logic: TableJoinLogic | None = None

    def get(self, key: Any, default: Any = None) -> Any:
        lg = self.logic
        value = None if lg is None else lg.joined(key)
        return default if value is None else value

    def as_of(self, key: Any, timestamp: int) -> Any:
        raise ValueError("as_of needs a versioned table; the result of a table-table join keeps only the latest rows")

    def items(self) -> Iterator[tuple[Any, Any]]:
        lg = self.logic
        if lg is None:
            return iter(())
        keys = set(lg.sides[0].data) | set(lg.sides[1].data)
        rows = [(k, lg.joined(k)) for k in keys]
        return iter([(k, v) for k, v in rows if v is not None])


class TableJoin(BinaryStage):
    """Blueprint: input 0 the left table's changes, input 1 the right one's."""

    def __init__(
        self,
        combine: Callable[[Any, Any], Any],
        how: str,
        timed: bool,
        types: tuple[Any, Any],
        store: StateStore | None,
        name: str | None,
    ) -> None:
        self.combine = combine
        self.how = how
        self.timed = timed
        self.types = types
        self.store = store
        self.name = name or f"join.table.{how}"

    def make_logic(self, ctx: RunContext) -> BinaryLogic:
        raise NotImplementedError  # materialize makes the logic with its view

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, JoinedView]:  # type: ignore[override]
        view = JoinedView()
        logic = TableJoinLogic(self, ctx)
        view.logic = logic
        return BinaryDriver(logic), view


class TableJoinLogic(BinaryLogic):
    def __init__(self, stage: TableJoin, ctx: RunContext) -> None:
        self.combine = stage.combine
        self.how = stage.how
        self.timed = stage.timed
        self.sides = (
            TableState(stage.store, ctx, f"{stage.name}.left", None, stage.types[0]),
            TableState(stage.store, ctx, f"{stage.name}.right", None, stage.types[1]),
        )
        self.pending = Pending(
            stage.store, ctx, f"{stage.name}.pending", (row_decoder(stage.types[0]), row_decoder(stage.types[1]))
        )
        self.wm = NO_WATERMARK

    def joined(self, key: Any) -> Any:
        left = self.sides[0].data.get(key)
        right = self.sides[1].data.get(key)
        how = self.how
        if left is None and (how != "outer" or right is None):
            return None
        if right is None and how == "inner":
            return None
        return self.combine(left, right)

    def on_start(self, out: list[Any]) -> None:
        for st in self.sides:
            st.load()
        self.pending.load()

    def _apply(self, side: int, key: Any, value: Any, ts: int | None, out: list[Any]) -> None:
        before = self.joined(key)
        if self.sides[side].put(key, value, ts) is None:
            return
        after = self.joined(key)
        if before is not None or after is not None:
            out.append(Change(key, before, after, ts))

    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        if not self.timed:
            for c in chunk:
                self._apply(side, c.key, c.new, c.timestamp, out)
            return
        wm, push = self.wm, self.pending.push
        for c in chunk:
            if type(c) is HistoryChange:
                continue  # a versioned input's history: the join reads latest values
            if c.timestamp < wm:
                self._apply(side, c.key, c.new, c.timestamp, out)  # late: applied on arrival
            else:
                push(side, c.timestamp, (c.key, c.new))

    def _release(self, upto: int | None, out: list[Any]) -> None:
        for side, ts, (key, value) in self.pending.release(upto):
            self._apply(side, key, value, ts, out)

    def on_watermark(self, time_ms: int, out: list[Any]) -> None:
        self.wm = time_ms
        self._release(time_ms, out)

    def on_barrier(self, checkpoint_id: int) -> None:
        for st in self.sides:
            st.stage(checkpoint_id)
        self.pending.stage(checkpoint_id)

    def on_finish(self, out: list[Any]) -> None:
        self._release(None, out)
        _finish(self.sides[0].state, self.sides[1].state, self.pending.state)

    def on_failure(self, error: BaseException) -> None:
        self._close()

    def on_cancel(self) -> None:
        self._close()

    def _close(self) -> None:
        for st in self.sides:
            st.close()
        self.pending.state.close()


def table_table_join(
    left: Table[Any, Any], right: Table[Any, Any], combine: Callable[[Any, Any], Any], how: str, name: str | None
) -> Table[Any, Any]:
    """The Table joining ``left`` and ``right`` by key (see ``Table.join``)."""
    if not isinstance(right, Table):
        raise TypeError(f"Table.join(other) needs a Table, got {right!r}")
    if how not in ("inner", "left", "outer"):
        raise ValueError(f"Table.join(how=) is 'inner', 'left' or 'outer', got {how!r}")
    return _join_tables(
        left, right, combine, how, "Table.join",
        lambda store, types: TableJoin(combine, how, left.timed, types, store, name),
    )  # fmt: skip


def _join_tables(
    left: Table[Any, Any],
    right: Table[Any, Any],
    combine: Callable[[Any, Any], Any],
    how: str,
    what: str,
    make: Callable[[StateStore | None, tuple[Any, Any]], TableJoin],
) -> Table[Any, Any]:
    from .._dsl.keyed import default_store
    from .._runtime.materializer import Edge

    if not callable(combine):
        raise TypeError(f"{what}(combine=) needs a function combine(left_value, right_value), got {combine!r}")
    if left.timed != right.timed:
        timed, untimed = (left, right) if left.timed else (right, left)
        raise ValueError(
            f"{what}: table {timed.name!r} has event time but {untimed.name!r} has none; changes are applied "
            "in event-time order when both have it and in arrival order when neither does: add "
            f".with_timestamps(...) before {untimed.name!r} too"
        )
    stores = [s for s in (default_store(left._source, None, "join"), default_store(right._source, None, "join")) if s]
    if len(stores) == 2 and stores[0] is not stores[1]:
        raise ValueError(f"{what}: the two tables are checkpointed into different stores; use one store for both")
    stage = make(stores[0] if stores else None, (left.value_type, right.value_type))
    other = right._source._module
    n = len(other.stages)
    src, port = other.outlet  # type: ignore[misc]
    module = Module(
        other.stages + (stage,), other.edges + (Edge(src, port, n, 1),),
        (n, 0), (n, 0), lambda mats: mats[n],
    )  # fmt: skip
    out = left._source._via_module(module, lambda lm, view: (lm[0], view))
    m = out._module
    stage.check_blueprint(m.stages, m.edges, m.outlet[0])
    return Table(out, None, left.timed, stage.name)


# -- foreign-key table-table join ------------------------------------------------------------


class ForeignKeyView(JoinedView):
    """Reads of a foreign-key join: one row per row of the left table."""

    def items(self) -> Iterator[tuple[Any, Any]]:
        lg = self.logic
        if lg is None:
            return iter(())
        rows = [(k, lg.joined(k)) for k in list(lg.sides[0].data)]
        return iter([(k, v) for k, v in rows if v is not None])


class ForeignKeyJoin(TableJoin):
    """Blueprint: input 0 the left table's changes, input 1 the right (referenced) one's."""

    def __init__(
        self,
        fk: Callable[[Any], Hashable],
        combine: Callable[[Any, Any], Any],
        how: str,
        timed: bool,
        types: tuple[Any, Any],
        store: StateStore | None,
        name: str | None,
    ) -> None:
        super().__init__(combine, how, timed, types, store, name or f"join_on.{how}")
        self.fk = fk

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, JoinedView]:  # type: ignore[override]
        view = ForeignKeyView()
        logic = ForeignKeyJoinLogic(self, ctx)
        view.logic = logic
        return BinaryDriver(logic), view


class ForeignKeyJoinLogic(TableJoinLogic):
    """Left row ``(k, v)`` joins the right row of key ``fk(v)``; a right change re-joins every left row naming it."""

    def __init__(self, stage: ForeignKeyJoin, ctx: RunContext) -> None:
        super().__init__(stage, ctx)
        self.fk = stage.fk
        self.refs: dict[Hashable, dict[Hashable, None]] = {}  # right key -> the left keys naming it, in order

    def on_start(self, out: list[Any]) -> None:
        super().on_start(out)
        for key, value in self.sides[0].data.items():  # the index is derived from the left rows
            self._ref(key, value)

    def _ref(self, key: Hashable, value: Any) -> None:
        if value is not None:
            self.refs.setdefault(self.fk(value), {})[key] = None

    def _unref(self, key: Hashable, value: Any) -> None:
        if value is not None:
            rk = self.fk(value)
            keys = self.refs.get(rk)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self.refs[rk]

    def joined(self, key: Any) -> Any:
        left = self.sides[0].data.get(key)
        if left is None:
            return None
        right = self.sides[1].data.get(self.fk(left))
        if right is None and self.how == "inner":
            return None
        return self.combine(left, right)

    def _apply(self, side: int, key: Any, value: Any, ts: int | None, out: list[Any]) -> None:
        if side == 0:
            before = self.joined(key)
            old = self.sides[0].data.get(key)
            if self.sides[0].put(key, value, ts) is None:
                return
            self._unref(key, old)
            self._ref(key, value)
            after = self.joined(key)
            if before is not None or after is not None:
                out.append(Change(key, before, after, ts))
            return
        keys = list(self.refs.get(key, ()))
        befores = [self.joined(k) for k in keys]
        if self.sides[1].put(key, value, ts) is None:
            return
        for k, before in zip(keys, befores):
            after = self.joined(k)
            if before is not None or after is not None:
                out.append(Change(k, before, after, ts))


def foreign_key_join(
    left: Table[Any, Any],
    right: Table[Any, Any],
    fk: Callable[[Any], Any] | str | int,
    combine: Callable[[Any, Any], Any],
    how: str,
    name: str | None,
) -> Table[Any, Any]:
    """The Table of ``left``'s rows each joined with ``right``'s row of key ``fk(value)`` (see ``Table.join_on``)."""
    from .._dsl.fields import extractor

    if not isinstance(right, Table):
        raise TypeError(f"Table.join_on(other) needs a Table, got {right!r}")
    if how not in ("inner", "left"):
        raise ValueError(f"Table.join_on(how=) is 'inner' or 'left', got {how!r}")
    fk_of = extractor(fk, "Table.join_on(fk=)")
    return _join_tables(left, right, combine, how, "Table.join_on", lambda store, types: ForeignKeyJoin(
        fk_of, combine, how, left.timed, types, store, name
    ))  # fmt: skip
