"""Checked by mypy in tests/test_typing.py: element types flow through the DSL."""

import asyncio

from streamlib import Flow, Keep, Sink, Source


async def sample() -> None:
    ints = Source.from_iterable([1, 2, 3])
    reveal_type(ints)  # noqa: F821
    strs = ints.map(str)
    reveal_type(strs)  # noqa: F821
    pairs = strs.zip_with_index()
    reveal_type(pairs)  # noqa: F821
    lengths: Flow[str, int, None] = Flow[str, str, None]().map(len)
    reveal_type(strs.via(lengths))  # noqa: F821
    total = strs.via(lengths).run_with(Sink.fold(0, lambda a, b: a + b))
    reveal_type(total)  # noqa: F821
    queue, done = Source.queue(10).to_mat(Sink.ignore(), Keep.both).run()
    reveal_type(done)  # noqa: F821
    await asyncio.sleep(0)
