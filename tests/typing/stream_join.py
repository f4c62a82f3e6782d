"""Source.join / Flow.join: results typed by combine; None sides typed for left and outer joins."""

from __future__ import annotations

from typing import reveal_type

import msgspec

from streamlib import Flow, JoinWindows, Sink, Source


class Order(msgspec.Struct):
    order_id: str
    ts: int
    amount: int


class Payment(msgspec.Struct):
    order_id: str
    ts: int


def pair(o: Order, p: Payment) -> tuple[str, int]:
    return (o.order_id, o.amount)


def left_pair(o: Order, p: Payment | None) -> tuple[str, bool]:
    return (o.order_id, p is not None)


def outer_pair(o: Order | None, p: Payment | None) -> str:
    return o.order_id if o is not None else p.order_id if p is not None else ""


orders: Source[Order, None] = Source.from_iterable([Order("o1", 0, 3)]).with_timestamps("ts")
payments: Source[Payment, None] = Source.from_iterable([Payment("o1", 5)]).with_timestamps("ts")
w = JoinWindows.within(60_000)

reveal_type(orders.join(payments, key="order_id", within=w, combine=pair))  # R: Source[tuple[str, int], None]
reveal_type(orders.join(payments, key="order_id", within=w, combine=lambda o, p: o.amount))  # R: Source[int, None]
reveal_type(orders.join(payments, key="order_id", within=w, combine=left_pair, how="left"))  # R: Source[tuple[str, bool], None]
reveal_type(orders.join(payments, key="order_id", within=w, combine=outer_pair, how="outer"))  # R: Source[str, None]
reveal_type(orders.join(payments, key="order_id", within=w, combine=pair, late="emit"))  # R: Source[tuple[str, int] | LateRecord, None]
flow = Flow[Order, Order, None]().join(payments, key_a="order_id", key_b="order_id", within=w, combine=pair)
reveal_type(flow)  # R: Flow[Order, tuple[str, int], None]
reveal_type(orders.join(payments, key="order_id", within=w, combine=pair).run_with(Sink.collect()))  # R: Future[list[tuple[str, int]]]
orders.join(payments, key="order_id", within=w, combine=pair, how="left")  # E: call-overload
orders.join(payments, key="order_id", within=w, combine=left_pair, how="outer")  # E: call-overload
orders.join(payments, key="order_id", within=w, combine=lambda o, p: o.nope)  # E: attr-defined
