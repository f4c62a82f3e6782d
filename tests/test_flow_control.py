"""conflate, batch, expand, keep_alive and the timeouts (virtual clock, never sleeping)."""

from __future__ import annotations

import asyncio
import itertools
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, Sink, Source, StreamTimeoutError
from streamlib.testing import VirtualClock, source_from_chunks, split_at

SETTINGS = settings(max_examples=40, deadline=None)

chunked = st.lists(st.integers(-100, 100), max_size=80).flatmap(
    lambda xs: st.tuples(st.just(xs), st.lists(st.integers(0, len(xs)), max_size=8))
)


# -- conflate ------------------------------------------------------------------------------


@SETTINGS
@given(chunked)
async def test_conflate_with_seed_keeps_every_element_in_order(case: Any) -> None:
    xs, cuts = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .conflate_with_seed(lambda x: [x], lambda acc, x: acc + [x])
        .run_with(Sink.collect())
    )
    assert [x for summary in got for x in summary] == xs
    assert all(summary for summary in got)


@SETTINGS
@given(chunked)
async def test_conflate_sum_is_preserved(case: Any) -> None:
    xs, cuts = case
    got = await source_from_chunks(split_at(xs, cuts)).conflate(operator.add).run_with(Sink.collect())
    assert sum(got) == sum(xs) and len(got) <= len(xs)


async def test_conflate_summarizes_while_downstream_is_busy() -> None:
    clock = VirtualClock()
    queue, out = Source.queue(100).conflate(operator.add).to_mat(Sink.queue(1), Keep.both).run(clock=clock)
    await queue.offer(1)
    await clock.settle()
    await queue.offer(2)
    await queue.offer(3)
    await clock.settle()
    assert await out.pull() == 1  # downstream was ready: passed alone
    await queue.offer(4)
    await clock.settle()
    assert await out.pull() == 5  # 2 + 3 arrived while 1 waited
    assert await out.pull() == 4
    queue.complete()
    assert await out.pull() is None


# -- batch --------------------------------------------------------------------------------


@SETTINGS
@given(chunked, st.integers(1, 7))
async def test_batch_keeps_order_and_bounds_size(case: Any, n: int) -> None:
    xs, cuts = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .batch(n, lambda x: [x], lambda acc, x: acc + [x])
        .run_with(Sink.collect())
    )
    assert [x for b in got for x in b] == xs
    assert all(1 <= len(b) <= n for b in got)


async def test_batch_backpressures_when_full() -> None:
    clock = VirtualClock()
    queue, out = (
        Source.queue(2)
        .batch(3, lambda x: [x], lambda acc, x: acc + [x])
        .to_mat(Sink.queue(1), Keep.both)
        .run(clock=clock)
    )
    offered = 0
    for x in range(20):
        if not queue.offer_nowait(x):
            break
        offered += 1
        await clock.settle()
    # one batch in the sink's buffer, one full batch pending, one chunk read ahead, two in the queue
    assert offered == 1 + 3 + 1 + 2
    queue.complete()
    assert [b async for b in out] == [[0], [1, 2, 3], [4, 5, 6]]


async def test_batch_weighted_counts_cost() -> None:
    clock = VirtualClock()
    queue, out = (
        Source.queue(100)
        .batch_weighted(10, len, lambda s: s, operator.add)
        .to_mat(Sink.queue(1), Keep.both)
        .run(clock=clock)
    )
    await queue.offer("a")
    await clock.settle()
    await queue.offer_all(["bbbb", "cccc", "dd", "eeeeeeeeeeee", "f"])
    await clock.settle()
    queue.complete()
    got = [x async for x in out]
    assert got == ["a", "bbbbccccdd", "eeeeeeeeeeee", "f"]


def test_batch_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="batch: the maximum must be positive"):
        Source.empty().batch(0, list, operator.add)
    with pytest.raises(TypeError, match="int max"):
        Source.empty().batch(2.5, list, operator.add)  # type: ignore[arg-type]


# -- expand ---------------------------------------------------------------------------------


@SETTINGS
@given(chunked, st.integers(0, 3))
async def test_expand_emits_every_element_first(case: Any, extra: int) -> None:
    xs, cuts = case
    xs = [x for x in xs if x != -999]
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .expand(lambda x: [x] + [-999] * extra)
        .run_with(Sink.collect())
    )
    assert [x for x in got if x != -999] == xs


async def test_expand_extrapolates_while_upstream_is_quiet() -> None:
    clock = VirtualClock()
    queue, out = Source.queue(10).expand(itertools.repeat).to_mat(Sink.queue(1), Keep.both).run(clock=clock)
    await queue.offer("a")
    assert [await out.pull() for _ in range(4)] == ["a"] * 4
    await clock.settle()
    await queue.offer("b")
    # one extrapolated "a" was already waiting in the one-element buffer
    assert [await out.pull() for _ in range(3)] == ["a", "b", "b"]
    queue.complete()
    await clock.settle()
    rest = [x async for x in out]
    assert set(rest) <= {"b"}


async def test_expand_finite_extrapolation_then_waits() -> None:
    clock = VirtualClock()
    queue, out = Source.queue(10).expand(lambda x: [x, x + 0.5]).to_mat(Sink.queue(1), Keep.both).run(clock=clock)
    await queue.offer(1)
    assert [await out.pull(), await out.pull()] == [1, 1.5]
    await queue.offer(2)
    queue.complete()
    assert [x async for x in out] == [2]  # completes with upstream; no more extrapolation


# -- keep_alive and timeouts ------------------------------------------------------------------


async def test_keep_alive_injects_after_idle_periods() -> None:
    clock = VirtualClock()
    queue, out = Source.queue(10).keep_alive(1.0, lambda: "ping").to_mat(Sink.queue(100), Keep.both).run(
        clock=clock
    )
    await queue.offer("a")
    await clock.advance(2.5)
    await queue.offer("b")
    await clock.advance(1.2)
    queue.complete()
    assert [x async for x in out] == ["a", "ping", "ping", "b", "ping"]


async def test_idle_timeout_fails_after_a_gap() -> None:
    clock = VirtualClock()
    queue, done = Source.queue(10).idle_timeout(1.0).to_mat(Sink.collect(), Keep.both).run(clock=clock)
    await clock.advance(0.9)
    await queue.offer(1)
    await clock.advance(0.9)
    assert not done.done()
    await clock.advance(0.2)
    with pytest.raises(StreamTimeoutError, match="no element passed for 1 s") as info:
        await done
    assert "in stage 'idle_timeout'" in info.value.__notes__


async def test_completion_timeout() -> None:
    clock = VirtualClock()
    got: list[int] = []
    done = Source.tick(1.0, 7).completion_timeout(3.5).to_mat(Sink.foreach(got.append), Keep.right).run(clock=clock)
    with pytest.raises(StreamTimeoutError, match="did not complete within 3.5 s"):
        await clock.run(done)
    assert got == [7, 7, 7, 7] and clock.now() == 3.5
    await clock.advance(1.0)  # the tick source notices the cancellation at its next tick
    finite = Source.from_iterable([1, 2]).completion_timeout(1.0).to_mat(Sink.collect(), Keep.right)
    assert await clock.run(finite.run(clock=clock)) == [1, 2]


async def test_initial_timeout() -> None:
    clock = VirtualClock()
    _q, done = Source.queue(10).initial_timeout(2.0).to_mat(Sink.collect(), Keep.both).run(clock=clock)
    with pytest.raises(StreamTimeoutError, match="no first element within 2 s"):
        await clock.run(done)
    queue, done = Source.queue(10).initial_timeout(2.0).to_mat(Sink.collect(), Keep.both).run(clock=clock)
    await queue.offer(1)
    await clock.advance(5.0)
    queue.complete()
    assert await done == [1]


async def test_backpressure_timeout() -> None:
    clock = VirtualClock()
    out = Source.repeat(1).backpressure_timeout(2.0).to_mat(Sink.queue(4), Keep.right).run(clock=clock)
    await clock.advance(1.5)
    assert await out.pull() == 1
    await clock.advance(1.9)  # the pull made room: the 2 s start again
    got = []
    with pytest.raises(StreamTimeoutError, match="downstream took nothing for 2 s"):
        await clock.advance(0.2)
        while True:
            got.append(await out.pull())
    assert got and set(got) == {1}


def test_durations_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        Source.empty().idle_timeout(0)
    with pytest.raises(ValueError, match="keep_alive"):
        Source.empty().keep_alive(0, lambda: 1)


async def test_a_stream_timeout_is_a_stream_timeout_error_and_a_wait_for_timeout_is_not() -> None:
    clock = VirtualClock()
    done = Source.queue(10).idle_timeout(2.0).to_mat(Sink.ignore(), Keep.right).run(clock=clock)
    with pytest.raises(StreamTimeoutError) as stream:
        await clock.run(done)
    assert (stream.value.stage, stream.value.seconds) == ("idle_timeout", 2.0)
    assert isinstance(stream.value, TimeoutError)  # so `except TimeoutError` sees both kinds

    _queue, around = Source.queue(10).to_mat(Sink.ignore(), Keep.both).run()
    with pytest.raises(TimeoutError) as outer:
        await asyncio.wait_for(around, 0)
    assert not isinstance(outer.value, StreamTimeoutError)
    assert around.cancelled()  # the timeout around the run cancelled it
