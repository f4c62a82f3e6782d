"""FileSource and Framing decode to the type they are given."""

from __future__ import annotations

import asyncio
from typing import reveal_type

import msgspec

from streamlib import BadRecord, FileSource, Flow, Framing, Sink, Source


class Order(msgspec.Struct):
    id: int
    amount: float


async def main() -> None:
    orders = FileSource.json_lines("orders.jsonl", Order)
    reveal_type(orders)  # R: Source[Order, None]
    reveal_type(FileSource.json_lines("orders.jsonl", Order, on_error="skip"))  # R: Source[Order, None]
    dead = FileSource.json_lines("orders.jsonl", Order, on_error=Sink.collect())
    reveal_type(dead)  # R: Source[Order, Future[list[BadRecord]]]
    reveal_type(FileSource.csv("orders.csv", Order))  # R: Source[Order, None]
    reveal_type(FileSource.csv("orders.csv", Order, on_error=Sink.foreach(print)))  # R: Source[Order, Future[None]]
    reveal_type(FileSource.json_lines("any.jsonl"))  # R: Source[Any, None]
    reveal_type(Framing.json_lines(Order))  # R: Flow[str, Order, None]
    reveal_type(Framing.csv(Order, on_error=Sink.collect()))  # R: Flow[str, Order, Future[list[BadRecord]]]
    total = await orders.map(lambda o: o.amount).run_with(Sink.fold(0.0, lambda a, b: a + b))
    reveal_type(total)  # R: float
    orders.map(lambda o: o.name)  # E: attr-defined
    FileSource.json_lines("orders.jsonl", Order, on_error="ignore")  # E: call-overload
    lines: Source[str, None] = Source.from_iterable(["{}"])
    decoded = lines.via(Framing.json_lines(Order))
    typed: Source[Order, None] = decoded
    wrong: Source[int, None] = decoded  # E: assignment
    reveal_type(Framing.json_lines(dict[str, int]))  # R: Flow[str, dict[str, int], None]
    flow: Flow[str, Order, None] = Framing.csv(Order, header=["id", "amount"])
    await asyncio.sleep(0)
