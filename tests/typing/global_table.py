"""A GlobalTable is typed by its key and value, and joins a stream typed by combine."""

from __future__ import annotations

from typing import NamedTuple, reveal_type

from streamlib import Source
from streamlib.kafka import ConsumerSettings, GlobalTable


class Order(NamedTuple):
    order_id: int
    customer: str


def customer(o: Order) -> str:
    return o.customer


def describe(o: Order, name: str) -> str:
    return f"{o.order_id} by {name}"


def describe_left(o: Order, name: str | None) -> tuple[int, str | None]:
    return o.order_id, name


def lookups() -> None:
    names: GlobalTable[str, str] = GlobalTable("customers", ConsumerSettings("localhost:9092"))
    reveal_type(names.get("c1"))  # R: str | None
    orders = Source.from_iterable([Order(1, "c1")])
    reveal_type(orders.join(names, key=customer, combine=describe))  # R: Source[str, None]
    reveal_type(orders.join(names, key=customer, combine=describe_left, how="left"))  # R: Source[tuple[int, str | None], None]
    names.get(1)  # E: arg-type
