"""Building a stream-stream join from two blueprints (used by ``Source.join`` / ``Flow.join``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._dsl.fields import extractor
from .._dsl.keep import Keep
from .._dsl.keyed import default_store, timestamp_of
from .._ops.binary import with_other
from .._state.store import StateStore
from .._time.results import is_late
from .stream_join import StreamJoinStage
from .windows import JoinWindows


def join_streams(
    blueprint: Any,
    other: Any,
    *,
    key: Any,
    key_a: Any,
    key_b: Any,
    within: JoinWindows | None,
    combine: Callable[[Any, Any], Any],
    how: str,
    store: StateStore | None,
    late: Any,
    late_mat: Callable[[Any, Any], Any] | None,
    types: tuple[Any, Any],
    name: str | None,
) -> Any:
    """``blueprint`` joined with the Source ``other`` (see ``Source.join``)."""
    from .._dsl.sink import Sink

    if within is None:
        raise TypeError(
            "join(other_stream, ...) needs within=JoinWindows(before=, after=, grace=): which timestamps pair up"
        )
    if key is not None:
        if key_a is not None or key_b is not None:
            raise TypeError("join: pass key= (both sides) or key_a= and key_b=, not both")
        key_a = key_b = key
    if key_a is None or key_b is None:
        raise TypeError("join(other_stream, ...) needs key_a= and key_b= (or key= for both sides)")
    fa = extractor(key_a, "join(key_a=)")
    fb = extractor(key_b, "join(key_b=)")
    if not (isinstance(late, Sink) or late in ("fail", "emit")):
        raise ValueError(f"join(late=) is a Sink, 'emit' or 'fail', got {late!r}")
    if late_mat is not None and not isinstance(late, Sink):
        raise ValueError(f"join(late_mat=) combines a late-data Sink's materialized value, but late={late!r}")
    ts_a = timestamp_of(blueprint, None, "join")
    ts_b = timestamp_of(other, None, "join")
    for ts, side in ((ts_a, "left"), (ts_b, "right")):
        if ts is None:
            raise ValueError(
                f"join: the {side} input has no event time. A windowed join pairs elements by timestamp: add "
                f".with_timestamps(lambda e: e.ts_ms, max_out_of_orderness=...) to the {side} input before join"
            )
    if store is None:
        sa = default_store(blueprint, None, "join")
        sb = default_store(other, None, "join")
        if sa is not None and sb is not None and sa is not sb:
            raise ValueError(
                "join: the two inputs are checkpointed into different stores; checkpoint both into one store "
                "(their barriers are aligned in the join), or pass store= to choose"
            )
        store = sa if sa is not None else sb
    elif not isinstance(store, StateStore):
        raise TypeError(f"join(store=) needs a state store (MemoryStore(), RocksDBStore(path)), got {store!r}")
    stage = StreamJoinStage(
        fa, fb, ts_a, ts_b, within, combine, how, store,  # type: ignore[arg-type]
        "fail" if late == "fail" else "emit", types, name,
    )  # fmt: skip
    out = with_other(blueprint, stage, other)
    if isinstance(late, Sink):
        from .._ops.junctions import divert_to

        out = out._via_module(divert_to(late._module, is_late), late_mat or Keep.left)
    return out
