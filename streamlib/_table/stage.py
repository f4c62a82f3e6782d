"""The stage that turns a stream of updates into a table and its change stream.

``TableStage`` keeps a :class:`TableState` (latest value per key, or versions)
and emits one :class:`Change` per change of a key's latest value, in arrival
order, after applying it. A versioned table also emits a ``HistoryChange`` for
every update that leaves the latest value as it was (older than the key's
latest version, or a delete of a deleted key): ``to_stream()`` leaves those
out; joins record them as versions for lookups as of an earlier time. An update whose value is None deletes the key; a
delete of an absent key changes nothing and emits nothing. In aggregate mode the
value is ``add(acc, element)`` of the key's current accumulator (``initial``
for a new key). Watermarks expire versions (versioned tables) and pass on;
barriers stage the changed rows into the store; on start the table is
reloaded from the store's last checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Any

from .._runtime.context import RunContext
from .._runtime.signals import Barrier, Signal, Watermark
from .._state.checkpoint import StatefulStage
from .._state.store import StateStore
from ..stage import StageLogic
from .change import Change, HistoryChange
from .state import HISTORY, TableState
from .view import StateView


class TableStage(StatefulStage):
    """Blueprint of a table: key and value functions, event time, store, history."""

    def __init__(
        self,
        key_of: Callable[[Any], Hashable],
        value_of: Callable[[Any], Any] | None,
        ts_of: Callable[[Any], int] | None,
        store: StateStore | None,
        history_ms: int | None,
        value_type: Any,
        name: str | None,
        aggregate: tuple[Any, Callable[[Any, Any], Any]] | None = None,
    ) -> None:
        if history_ms is not None and ts_of is None:
            raise ValueError(
                "a versioned table (history=...) keeps versions by event time: add .with_timestamps(...) "
                "before making the table, or pass timestamp=<function>"
            )
        self.key_of = key_of
        self.value_of = value_of
        self.ts_of = ts_of
        self.store = store
        self.history = history_ms
        self.value_type = value_type
        self.aggregate = aggregate
        self.name = name or ("aggregate" if aggregate is not None else "table")

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, StateView[Any, Any]]:
        view: StateView[Any, Any] = StateView(self.name, self.history is not None)
        logic = TableLogic(self, ctx, view)
        return logic, view


class TableLogic(StageLogic):
    def __init__(self, stage: TableStage, ctx: RunContext, view: StateView[Any, Any]) -> None:
        self.key_of = stage.key_of
        self.value_of = stage.value_of
        self.ts_of = stage.ts_of
        self.aggregate = stage.aggregate
        self.table = TableState(stage.store, ctx, stage.name, stage.history, stage.value_type)
        view.state = self.table

    def on_start(self) -> list[Any]:
        self.table.load()
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        key_of, value_of, ts_of, put = self.key_of, self.value_of, self.ts_of, self.table.put
        versioned = self.table.history is not None
        out: list[Any] = []
        emit = out.append
        if self.aggregate is not None:
            initial, add = self.aggregate
            get = self.table.get
            for e in chunk:
                k = key_of(e)
                acc = get(k)
                if acc is None:
                    acc = initial() if callable(initial) else copy.copy(initial)
                ts = None if ts_of is None else ts_of(e)
                r = put(k, add(acc, e), ts)
                if r is not None:
                    emit(Change(k, r[0], r[1], ts))
            return out
        for e in chunk:
            k = key_of(e)
            ts = None if ts_of is None else ts_of(e)
            v = e if value_of is None else value_of(e)
            r = put(k, v, ts)
            if r is None or r is HISTORY:
                if versioned:  # every version reaches joins, which look values up as of a time
                    emit(HistoryChange(k, None, v, ts))
            else:
                emit(Change(k, r[0], r[1], ts))
        return out

    def on_signal(self, signal: Signal) -> list[Any] | None:
        if type(signal) is Watermark:
            self.table.expire(signal.time_ms)
        elif type(signal) is Barrier:
            self.table.stage(signal.checkpoint_id)
        return None

    def on_finish(self) -> list[Any]:
        # Ended normally: later checkpoints (of a join's other input) no longer wait for this table.
        self.table.state.finish()
        self.table.close()
        return []

    def on_cancel(self) -> None:
        self.table.close()

    def on_failure(self, error: BaseException) -> None:
        self.table.close()
