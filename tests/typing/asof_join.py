"""Source.join_asof / Flow.join_asof: results typed by combine; the right side may be None for how="left"."""

from __future__ import annotations

from datetime import timedelta
from typing import reveal_type

import msgspec

from streamlib import Flow, Sink, Source


class Trade(msgspec.Struct):
    symbol: str
    ts: int
    qty: int


class Quote(msgspec.Struct):
    symbol: str
    ts: int
    price: float


def value(t: Trade, q: Quote) -> float:
    return t.qty * q.price


def maybe_value(t: Trade, q: Quote | None) -> float | None:
    return None if q is None else t.qty * q.price


trades: Source[Trade, None] = Source.from_iterable([Trade("x", 5, 2)]).with_timestamps("ts")
quotes: Source[Quote, None] = Source.from_iterable([Quote("x", 1, 9.5)]).with_timestamps("ts")

reveal_type(trades.join_asof(quotes, key="symbol", combine=value))  # R: Source[float, None]
reveal_type(trades.join_asof(quotes, key="symbol", combine=lambda t, q: (t.symbol, q.price), tolerance=timedelta(seconds=5)))  # R: Source[tuple[str, float], None]
reveal_type(trades.join_asof(quotes, key="symbol", combine=maybe_value, how="left"))  # R: Source[float | None, None]
reveal_type(trades.join_asof(quotes, key="symbol", combine=value, late="emit"))  # R: Source[float | LateRecord, None]
flow = Flow[Trade, Trade, None]().join_asof(quotes, key_a="symbol", key_b="symbol", combine=value)
reveal_type(flow)  # R: Flow[Trade, float, None]
reveal_type(trades.join_asof(quotes, key="symbol", combine=value).run_with(Sink.collect()))  # R: Future[list[float]]
trades.join_asof(quotes, key="symbol", combine=value, how="left")  # E: call-overload
trades.join_asof(quotes, key="symbol", combine=lambda t, q: q.nope)  # E: attr-defined
