"""Source.queue(of=T): the stream carries T and the SourceQueue takes T."""

from __future__ import annotations

from typing import reveal_type

import msgspec

from streamlib import Keep, Sink, Source, SourceQueue


class Order(msgspec.Struct):
    id: int


async def main() -> None:
    source = Source.queue(100, of=Order)
    reveal_type(source)  # R: Source[Order, SourceQueue[Order]]
    queue, done = source.map(lambda o: o.id).to_mat(Sink.collect(), Keep.both).run()
    reveal_type(queue)  # R: SourceQueue[Order]
    reveal_type(done)  # R: Future[list[int]]
    await queue.offer(Order(1))
    await queue.offer_all([Order(2), Order(3)])
    queue.offer_nowait(Order(4))
    await queue.offer("order 5")  # E: arg-type
    await queue.offer_all([5])  # E: list-item
    queue.offer_nowait(None)  # E: arg-type
    reveal_type(Source.queue(10))  # R: Source[Any, SourceQueue[Any]]
    queue.complete()
