"""Every source and sink factory: what it emits or materializes, per run, at its edges."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import EmptyStreamError, Keep, QueueClosedError, Sink, SinkQueue, Source, SourceQueue
from streamlib.testing import TestSink, VirtualClock, assert_no_running_graphs, settle, source_from_chunks, split_at

SETTINGS = settings(max_examples=40, deadline=None)


class Boom(Exception):
    pass


def run(coro_fn: Callable[[], Any]) -> Any:
    async def main() -> Any:
        try:
            return await coro_fn()
        finally:
            await assert_no_running_graphs()

    return asyncio.run(main())


# -- in-process sources ---------------------------------------------------------------------


@pytest.mark.parametrize("iterable", [[1, 2, 3], (1, 2, 3), range(1, 4), {1: "a", 2: "b", 3: "c"}])
async def test_from_iterable_iterates_afresh_at_each_run(iterable: Any) -> None:
    src = Source.from_iterable(iterable)
    assert await src.run_with(Sink.collect()) == [1, 2, 3]
    assert await src.run_with(Sink.collect()) == [1, 2, 3]


@pytest.mark.parametrize("n", [0, 1, 5, 1023, 1024, 1025, 5000])
async def test_from_iterable_across_chunk_sizes(n: int) -> None:
    assert await Source.from_iterable(list(range(n))).run_with(Sink.collect()) == list(range(n))
    assert await Source.from_iterable(iter(range(n))).run_with(Sink.collect()) == list(range(n))


async def test_from_iterator_calls_the_factory_once_per_run() -> None:
    calls = 0

    def factory() -> Iterator[int]:
        nonlocal calls
        calls += 1
        yield from range(calls * 2)

    src = Source.from_iterator(factory)
    assert calls == 0
    assert await src.run_with(Sink.collect()) == [0, 1]
    assert await src.run_with(Sink.collect()) == [0, 1, 2, 3]


async def test_from_iterator_closes_the_generator_when_downstream_stops() -> None:
    closed: list[bool] = []

    def gen() -> Iterator[int]:
        try:
            yield from range(10**9)
        finally:
            closed.append(True)

    assert await Source.from_iterator(gen).take(3).run_with(Sink.collect()) == [0, 1, 2]
    assert closed == [True]


async def test_single_empty_repeat() -> None:
    assert await Source.single("x").run_with(Sink.collect()) == ["x"]
    assert await Source.empty().run_with(Sink.collect()) == []
    assert await Source.repeat("r").take(2500).run_with(Sink.collect()) == ["r"] * 2500


async def test_failed_fails_each_run() -> None:
    src = Source.failed(Boom("x"))
    for _ in range(2):
        with pytest.raises(Boom):
            await src.run_with(Sink.ignore())


async def test_from_callable_is_called_at_each_run() -> None:
    calls: list[int] = []

    def create() -> int:
        calls.append(1)
        return len(calls)

    src = Source.from_callable(create)
    assert calls == []
    assert await src.run_with(Sink.head()) == 1
    assert await src.run_with(Sink.head()) == 2


async def test_from_callable_error_fails_the_stream() -> None:
    def create() -> int:
        raise Boom("create")

    with pytest.raises(Boom):
        await Source.from_callable(create).run_with(Sink.ignore())


@SETTINGS
@given(n=st.integers(0, 50))
def test_unfold_equals_a_loop(n: int) -> None:
    src = Source.unfold((0, 1), lambda s: ((s[1], s[0] + s[1]), s[0]) if s[0] < 10**n else None)
    expected, a, b = [], 0, 1
    while a < 10**n:
        expected.append(a)
        a, b = b, a + b
    assert run(lambda: src.run_with(Sink.collect())) == expected


async def test_tick_follows_the_run_clock() -> None:
    clock = VirtualClock()
    done = Source.tick(1.0, "t", initial_delay=0.5).zip_with_index().take(3).to_mat(
        Sink.collect(), Keep.right
    ).run(clock=clock)
    await clock.advance(0.4)
    assert not done.done()
    assert await clock.run(done) == [("t", 0), ("t", 1), ("t", 2)]
    assert clock.now() == pytest.approx(2.5)


async def test_tick_drops_ticks_while_downstream_is_full() -> None:
    clock = VirtualClock()
    pull = Source.tick(1.0, "t").to_mat(Sink.queue(2), Keep.right).run(clock=clock)
    await clock.advance(10.0)
    # Nobody pulled: the queue's room took two ticks, the other nine were dropped.
    assert [await pull.pull(), await pull.pull()] == ["t", "t"]
    following = asyncio.ensure_future(pull.pull())
    await clock.settle()
    assert not following.done()  # nothing dropped was kept back: the next tick is the one due at 11 s
    await clock.advance(1.0)
    assert await following == "t"
    pull.cancel()
    await assert_no_running_graphs()


@pytest.mark.parametrize("interval", [0, -1.0])
def test_tick_needs_a_positive_interval(interval: float) -> None:
    with pytest.raises(ValueError):
        Source.tick(interval, "t")


# -- async iterables ---------------------------------------------------------------------------


async def test_from_async_iterable_object_and_factory() -> None:
    async def agen() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    assert await Source.from_async_iterable(agen()).run_with(Sink.collect()) == [0, 1, 2]
    factory_src = Source.from_async_iterable(agen)
    assert await factory_src.run_with(Sink.collect()) == [0, 1, 2]
    assert await factory_src.run_with(Sink.collect()) == [0, 1, 2]


async def test_from_async_iterable_delivers_each_element_when_room_appears() -> None:
    """An element that arrived while downstream was full goes out once there is room,
    without waiting for a later element to arrive."""
    inbox: asyncio.Queue[int | None] = asyncio.Queue()

    async def agen() -> AsyncIterator[int]:
        while (x := await inbox.get()) is not None:
            yield x

    pull = Source.from_async_iterable(agen).run_with(Sink.queue(1))
    for x in (1, 2, 3):
        inbox.put_nowait(x)
    for x in (1, 2, 3):
        assert await asyncio.wait_for(pull.pull(), timeout=10) == x
    inbox.put_nowait(None)
    assert await pull.pull() is None


async def test_from_async_iterable_gathers_a_chunk_while_backpressured() -> None:
    """Nobody pulls, yet the iterable is read to its end (1000 < max_chunk): what arrives while
    downstream is full is gathered into a chunk instead of waiting element by element."""
    exhausted = asyncio.Event()

    async def agen() -> AsyncIterator[int]:
        for i in range(1000):
            yield i
        exhausted.set()

    pull = Source.from_async_iterable(agen).run_with(Sink.queue(4))
    await asyncio.wait_for(exhausted.wait(), timeout=10)
    assert [x async for x in pull] == list(range(1000))


async def test_from_async_iterable_failure_delivers_what_came_before() -> None:
    async def agen() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise Boom("async source")

    got: list[int] = []
    with pytest.raises(Boom) as info:
        await Source.from_async_iterable(agen).run_with(Sink.foreach(got.append))
    assert got == [1, 2]
    assert "in stage 'from_async_iterable'" in info.value.__notes__


async def test_from_async_iterable_failure_while_backpressured_delivers_what_came_before() -> None:
    raised = asyncio.Event()

    async def agen() -> AsyncIterator[int]:
        for i in range(20):
            yield i
        raised.set()
        raise Boom("late")

    pull = Source.from_async_iterable(agen).run_with(Sink.queue(2))
    await asyncio.wait_for(raised.wait(), timeout=10)  # failed while nobody had pulled
    got = []
    with pytest.raises(Boom):
        while True:
            x = await pull.pull()
            assert x is not None
            got.append(x)
    assert got == list(range(20))


async def test_from_async_iterable_is_closed_when_downstream_stops() -> None:
    closed: list[bool] = []

    async def agen() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    assert await Source.from_async_iterable(agen).take(5).run_with(Sink.collect()) == [0, 1, 2, 3, 4]
    await assert_no_running_graphs()
    assert closed == [True]


# -- queue source ----------------------------------------------------------------------------------


async def test_queue_source_offer_complete() -> None:
    queue, items = Source.queue(8).map(lambda x: x * 2).to_mat(Sink.collect(), Keep.both).run()
    assert isinstance(queue, SourceQueue)
    await queue.offer(1)
    await queue.offer_all([2, 3])
    await queue.offer_all([])
    assert queue.offer_nowait(4) is True
    queue.complete()
    assert await items == [2, 4, 6, 8]
    with pytest.raises(QueueClosedError, match="after complete"):
        await queue.offer(5)
    assert queue.offer_nowait(5) is False


async def test_queue_source_fail() -> None:
    queue, items = Source.queue(8).to_mat(Sink.collect(), Keep.both).run()
    await queue.offer(1)
    error = Boom("from outside")
    queue.fail(error)
    with pytest.raises(Boom) as info:
        await items
    assert info.value is error
    with pytest.raises(QueueClosedError):
        await queue.offer_all([1])


async def test_queue_source_learns_of_downstream_cancellation() -> None:
    queue, head = Source.queue(8).to_mat(Sink.head(), Keep.both).run()
    await queue.offer("first")
    assert await head == "first"
    await assert_no_running_graphs()
    assert queue.cancelled
    with pytest.raises(QueueClosedError):
        await queue.offer("late")


async def test_queue_source_offer_nowait_when_full() -> None:
    queue, pull = Source.queue(2).to_mat(Sink.queue(1), Keep.both).run()
    answers = []
    for i in range(10):
        answers.append(queue.offer_nowait(i))
        await settle()
    accepted = [i for i, ok in enumerate(answers) if ok]
    # Once the buffers downstream and the queue's own are full, every further offer is refused.
    assert 2 <= len(accepted) < 10 and answers == [True] * len(accepted) + [False] * (10 - len(accepted))
    queue.complete()
    assert [x async for x in pull] == accepted


async def test_queue_source_of_a_type_carries_its_elements_unchanged() -> None:
    queue, items = Source.queue(4, of=tuple).to_mat(Sink.collect(), Keep.both).run()
    await queue.offer(("a", 1))
    await queue.offer_all([("b", 2)])
    queue.complete()
    assert await items == [("a", 1), ("b", 2)]


def test_queue_source_needs_a_capacity() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Source.queue(0)


# -- sinks against list models ----------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn) -> tuple[list[int], list[list[int]]]:
    xs = draw(st.lists(st.integers(-50, 50), max_size=40))
    cuts = draw(st.lists(st.integers(0, len(xs)), max_size=5))
    return xs, split_at(xs, cuts)


@SETTINGS
@given(inp=chunked(), boundary=st.booleans())
def test_value_sinks_equal_their_list_models(inp: tuple[list[int], list[list[int]]], boundary: bool) -> None:
    xs, chunks = inp

    async def go() -> dict[str, Any]:
        src: Any = source_from_chunks(chunks)
        if boundary:
            src = src.async_boundary()
        out: dict[str, Any] = {}
        out["fold"] = await src.run_with(Sink.fold(7, operator.sub))
        out["collect"] = await src.run_with(Sink.collect())
        out["head_option"] = await src.run_with(Sink.head_option())
        out["last_option"] = await src.run_with(Sink.last_option())
        for name, sink in (("reduce", Sink.reduce(operator.sub)), ("head", Sink.head()), ("last", Sink.last())):
            try:
                out[name] = await src.run_with(sink)
            except EmptyStreamError:
                out[name] = EmptyStreamError
        seen: list[int] = []
        assert await src.run_with(Sink.foreach(seen.append)) is None
        out["foreach"] = seen
        assert await src.run_with(Sink.ignore()) is None
        return out

    expected: dict[str, Any] = {
        "fold": 7 - sum(xs),
        "collect": xs,
        "head_option": xs[0] if xs else None,
        "last_option": xs[-1] if xs else None,
        "reduce": xs[0] - sum(xs[1:]) if xs else EmptyStreamError,
        "head": xs[0] if xs else EmptyStreamError,
        "last": xs[-1] if xs else EmptyStreamError,
        "foreach": xs,
    }
    assert run(go) == expected


async def test_empty_stream_errors_name_the_sink() -> None:
    for sink, name in ((Sink.head(), "head"), (Sink.last(), "last"), (Sink.reduce(operator.add), "reduce")):
        with pytest.raises(EmptyStreamError, match=f"{name}: the stream was empty"):
            await Source.empty().run_with(sink)
    with pytest.raises(EmptyStreamError, match="reduce: the stream was empty"):
        await Source.empty().reduce(operator.add).run_with(Sink.ignore())


async def test_head_takes_the_first_element_and_cancels_upstream() -> None:
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in range(10**9):
            pulled += 1
            yield i

    assert await Source.from_iterator(numbers).run_with(Sink.head()) == 0
    assert pulled <= 1024


async def test_async_foreach_awaits_one_element_at_a_time_in_order() -> None:
    active = 0
    peak = 0
    seen: list[int] = []

    async def f(x: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0)
        seen.append(x)
        active -= 1

    assert await Source.from_iterable(range(100)).run_with(Sink.foreach(f)) is None
    assert seen == list(range(100))
    assert peak == 1


# -- queue sink -------------------------------------------------------------------------------------------


async def test_sink_queue_pull_and_async_iteration() -> None:
    pull = Source.from_iterable(range(5)).run_with(Sink.queue(2))
    assert isinstance(pull, SinkQueue)
    assert await pull.pull() == 0
    assert [x async for x in pull] == [1, 2, 3, 4]
    assert await pull.pull() is None


async def test_sink_queue_raises_the_stream_error() -> None:
    pull = Source.from_iterable([1, 2, 0]).map(lambda x: 10 // x).run_with(Sink.queue(8))
    assert await pull.pull() == 10
    assert await pull.pull() == 5
    with pytest.raises(ZeroDivisionError):
        await pull.pull()


async def test_sink_queue_cancel_stops_the_stream() -> None:
    pull, graph = Source.repeat(1).to_mat(Sink.queue(4), Keep.right).run_graph()
    assert await pull.pull() == 1
    pull.cancel()
    await graph.wait()
    assert await pull.pull() is None


async def test_sink_queue_passes_none_elements_through_iteration() -> None:
    pull = Source.from_iterable([None, 1, None]).run_with(Sink.queue(4))
    assert [x async for x in pull] == [None, 1, None]


async def test_from_async_iterable_stops_at_once_when_downstream_cancels_while_waiting() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    closed: list[bool] = []

    async def agen() -> AsyncIterator[int]:
        try:
            yield 1
            await never  # the next element never comes
            yield 2
        finally:
            closed.append(True)

    sink = Source.from_async_iterable(agen).run_with(TestSink.probe())
    sink.request(1)
    await sink.expect_next(1)
    sink.cancel()
    await assert_no_running_graphs()
    assert closed == [True]


async def test_sink_queue_cancel_releases_a_pending_pull() -> None:
    queue, pull = Source.queue(4).to_mat(Sink.queue(4), Keep.both).run()
    pending = asyncio.create_task(pull.pull())
    await settle()
    assert not pending.done()
    pull.cancel()
    assert await pending is None
    assert await pull.pull() is None
    await assert_no_running_graphs()  # the cancellation went all the way up
    with pytest.raises(QueueClosedError):
        await queue.offer(1)
