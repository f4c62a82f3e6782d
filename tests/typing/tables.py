"""Tables are typed end to end: Table[K, V], changes, views, and joins typed by combine."""

from __future__ import annotations

from typing import NamedTuple, reveal_type

from streamlib import Keep, Sink, Source, Table


class Order(NamedTuple):
    order_id: int
    customer: str
    ts: int


def name_of(c: tuple[str, str]) -> str:
    return c[1]


def customer_of(c: tuple[str, str]) -> str:
    return c[0]


def customer(o: Order) -> str:
    return o.customer


async def main() -> None:
    names = Source.from_iterable([("c1", "Ada")]).key_by(customer_of).to_table(name_of)
    reveal_type(names)  # R: Table[str, str]
    rows = Source.from_iterable([("c1", "Ada")]).key_by(customer_of).to_table()
    reveal_type(rows)  # R: Table[str, tuple[str, str]]
    reveal_type(names.map_values(len))  # R: Table[str, int]
    reveal_type(names.filter(lambda n: n.startswith("A")))  # R: Table[str, str]
    reveal_type(names.to_stream())  # R: Source[Change[str, str], Any]
    view = names.to_stream_mat(Keep.right).to_mat(Sink.ignore(), Keep.left).run()
    reveal_type(view)  # R: TableView[str, str]
    reveal_type(view.get("c1"))  # R: str | None
    totals = Source.from_iterable([Order(1, "c1", 0)]).key_by(customer).aggregate(0, lambda n, o: n + o.order_id)
    reveal_type(totals)  # R: Table[str, int]
    orders = Source.from_iterable([Order(1, "c1", 0)])
    inner = orders.join(names, key=customer, combine=lambda o, n: (o.order_id, n))
    reveal_type(inner)  # R: Source[tuple[int, str], None]
    left = orders.join(names, key=customer, combine=lambda o, n: (o.order_id, n or "?"), how="left")
    reveal_type(left)  # R: Source[tuple[int, str], None]
    both = names.join(totals, lambda n, t: f"{n}:{t}")
    reveal_type(both)  # R: Table[str, str]
    outer = names.join(totals, lambda n, t: (n, t), how="outer")
    reveal_type(outer)  # R: Table[str, tuple[str | None, int | None]]
    order_rows = Source.from_iterable([Order(1, "c1", 0)]).key_by(lambda o: o.order_id).to_table()
    named = order_rows.join_on(names, fk=customer, combine=lambda o, n: (o.order_id, n))
    reveal_type(named)  # R: Table[int, tuple[int, str]]
    maybe = order_rows.join_on(names, fk=customer, combine=lambda o, n: n or "?", how="left")
    reveal_type(maybe)  # R: Table[int, str]
    order_rows.join_on(names, fk=customer, combine=lambda o, n: n + 1)  # E: operator
    orders.join(names, key=customer, combine=lambda o, n: n + 1)  # E: operator
    Table.from_source(orders, key=customer).to_stream_mat(Keep.right).to_mat(Sink.ignore(), Keep.left).run().get(3)  # E: arg-type
