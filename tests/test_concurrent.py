"""map_async / map_async_unordered and buffer, against models, under a virtual clock."""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import BufferOverflowError, Flow, Keep, Sink, Source, Watermark
from streamlib._ops.concurrent import OVERFLOW_STRATEGIES
from streamlib._runtime.context import RunContext
from streamlib.stage import SinkLogic, Stage
from streamlib.testing import (
    TestSink,
    TestSource,
    VirtualClock,
    assert_no_running_graphs,
    leaked_tasks,
    source_from_chunks,
    split_at,
)

SETTINGS = settings(max_examples=50, deadline=None)


# -- map_async: models --------------------------------------------------------------


def ordered_model(delays: list[float], p: int) -> list[float]:
    """Emission time of each element: all inputs ready at 0, at most ``p`` started and not emitted."""
    emit: list[float] = []
    for i, d in enumerate(delays):
        start = 0.0 if i < p else emit[i - p]
        emit.append(max(start + d, emit[-1] if emit else 0.0))
    return emit


def unordered_model(delays: list[float], p: int) -> list[float]:
    """Emission (= completion) time of each element: ``p`` slots, each freed when its call ends."""
    slots: list[float] = []
    done: list[float] = []
    for d in delays:
        start = 0.0 if len(slots) < p else heapq.heappop(slots)
        heapq.heappush(slots, start + d)
        done.append(start + d)
    return done


class Calls:
    """An async function with a virtual delay per element that counts calls in flight."""

    def __init__(self, clock: VirtualClock, delays: list[float], fail_at: int | None = None) -> None:
        self.clock = clock
        self.delays = delays
        self.fail_at = fail_at
        self.in_flight = 0
        self.max_in_flight = 0
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.cancelled: set[int] = set()

    async def __call__(self, x: int) -> tuple[str, int]:
        self.started.add(x)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.clock.sleep(self.delays[x])
        except asyncio.CancelledError:
            self.cancelled.add(x)
            raise
        finally:
            self.in_flight -= 1
        if x == self.fail_at:
            raise ValueError(f"call {x} failed")
        self.finished.add(x)
        return ("r", x)


@st.composite
def map_async_cases(draw: st.DrawFn) -> tuple[int, list[float], list[list[int]]]:
    p = draw(st.integers(1, 16))
    delays = draw(st.lists(st.integers(0, 12).map(lambda q: q / 4), max_size=40))
    cuts = draw(st.lists(st.integers(0, len(delays)), max_size=6))
    return p, delays, split_at(list(range(len(delays))), cuts)


@SETTINGS
@given(case=map_async_cases(), ordered=st.booleans())
def test_map_async_against_the_model(case: tuple[int, list[float], list[list[int]]], ordered: bool) -> None:
    p, delays, chunks = case
    n = len(delays)

    async def main() -> tuple[list[tuple[float, Any]], Calls]:
        clock = VirtualClock()
        f = Calls(clock, delays)
        out: list[tuple[float, Any]] = []
        src = source_from_chunks(chunks)
        src = src.map_async(p, f) if ordered else src.map_async_unordered(p, f)
        done = src.to_mat(Sink.foreach(lambda r: out.append((clock.now(), r))), Keep.right).run(clock=clock)
        await clock.run(done)
        await assert_no_running_graphs()
        return out, f

    out, f = asyncio.run(main())
    assert f.max_in_flight == min(p, n)
    if ordered:
        times = ordered_model(delays, p)
        assert out == [(times[i], ("r", i)) for i in range(n)]
    else:
        times = unordered_model(delays, p)
        assert sorted(out) == sorted((times[i], ("r", i)) for i in range(n))
        assert [t for t, _ in out] == sorted(t for t, _ in out)  # emitted as they finish


@settings(max_examples=40, deadline=None)
@given(case=map_async_cases(), ordered=st.booleans(), data=st.data())
def test_map_async_failure_cancels_the_calls_in_flight(
    case: tuple[int, list[float], list[list[int]]], ordered: bool, data: st.DataObject
) -> None:
    p, delays, chunks = case
    if not delays:
        return
    fail_at = data.draw(st.integers(0, len(delays) - 1))

    async def main() -> tuple[BaseException, Calls, list[tuple[str, int]]]:
        clock = VirtualClock()
        f = Calls(clock, delays, fail_at)
        got: list[tuple[str, int]] = []
        src = source_from_chunks(chunks)
        src = src.map_async(p, f) if ordered else src.map_async_unordered(p, f)
        done = src.to_mat(Sink.foreach(got.append), Keep.right).run(clock=clock)
        with pytest.raises(ValueError) as info:
            await clock.run(done)
        await assert_no_running_graphs()
        assert leaked_tasks() == []
        return info.value, f, got

    error, f, got = asyncio.run(main())
    assert str(error) == f"call {fail_at} failed"
    stage = "map_async" if ordered else "map_async_unordered"
    assert f"in stage '{stage}'" in getattr(error, "__notes__", [])
    before = [("r", i) for i in range(fail_at)]
    if ordered:
        # Exactly the results before the failing element, in order.
        assert got == before
    else:
        # Every result before the failing element; later ones only if they finished first.
        assert set(before) <= set(got) and ("r", fail_at) not in got
    # The calls before the failing one all finished; the others still running were cancelled.
    assert set(range(fail_at)) <= f.finished
    assert f.cancelled == f.started - f.finished - {fail_at}
    assert f.in_flight == 0
    assert f.max_in_flight <= p


async def test_map_async_emits_each_result_as_soon_as_ready() -> None:
    clock = VirtualClock()
    f = Calls(clock, [1.0, 5.0, 2.0])
    sink = Source.from_iterable([0, 1, 2]).map_async(3, f).to_mat(TestSink.probe(), Keep.right).run(clock=clock)
    sink.request(3)
    await sink.expect_next(("r", 0))
    assert clock.now() == 1.0
    await sink.expect_next_n([("r", 1), ("r", 2)], timeout=10.0)
    assert clock.now() == 5.0
    await sink.expect_complete()

    sink = Source.from_iterable([0, 1, 2]).map_async_unordered(3, f).to_mat(TestSink.probe(), Keep.right).run(
        clock=clock
    )
    start = clock.now()
    sink.request(3)
    await sink.expect_next(("r", 0))
    await sink.expect_next(("r", 2))
    assert clock.now() - start == 2.0
    await sink.expect_next(("r", 1))
    await sink.expect_complete()


class _ChunkRecorder(Stage):
    inputs = 1
    outputs = 0
    name = "chunk_recorder"

    def __init__(self, record: list[list[Any]]) -> None:
        self.record = record

    def materialize(self, ctx: RunContext) -> tuple[SinkLogic, asyncio.Future[None]]:
        record, fut = self.record, ctx.new_future()

        class Logic(SinkLogic):
            def consume(self, chunk: list[Any]) -> None:
                record.append(list(chunk))

            def on_finish(self) -> list[Any]:
                fut.set_result(None)
                return []

        return Logic(), fut


@pytest.mark.parametrize("ordered", [True, False])
async def test_map_async_emits_results_ready_together_as_one_chunk(ordered: bool) -> None:
    from streamlib._dsl.module import Module

    first, second = asyncio.Event(), asyncio.Event()

    async def f(x: int) -> int:
        await (first if x < 4 else second).wait()
        return x

    chunks: list[list[Any]] = []
    src = Source.from_iterable(range(6))
    src = src.map_async(8, f) if ordered else src.map_async_unordered(8, f)
    done = src.to_mat(Sink(Module.of(_ChunkRecorder(chunks))), Keep.right).run()
    clock = VirtualClock()  # only to let every task run until all wait
    await clock.settle()
    first.set()  # four calls end in the same loop iteration
    await clock.settle()
    assert chunks == [[0, 1, 2, 3]]
    second.set()
    await done
    assert chunks == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.parametrize("ordered", [True, False])
async def test_map_async_counts_unemitted_results_against_parallelism(ordered: bool) -> None:
    clock = VirtualClock()
    f = Calls(clock, [1.0] * 10)
    src = Source.from_iterable(range(10))
    src = src.map_async(3, f) if ordered else src.map_async_unordered(3, f)
    sink = src.to_mat(TestSink.probe(), Keep.right).run(clock=clock)
    # At 1, 0 finishes first (the virtual clock fires one timer at a time) and fills the
    # probe's channel, 3 starts; 1 and 2 finish and wait for room: nothing more starts.
    await sink.expect_no_message(10.0)
    assert f.started == {0, 1, 2, 3}
    assert f.finished == f.started
    got = await sink.to_strict(timeout=20.0)
    assert got == [("r", i) for i in range(10)] if ordered else sorted(got) == [("r", i) for i in range(10)]
    assert f.max_in_flight == 3


async def test_map_async_downstream_cancellation_cancels_the_calls() -> None:
    clock = VirtualClock()
    f = Calls(clock, [1.0] + [100.0] * 9)
    done = Source.from_iterable(range(10)).map_async(4, f).take(1).to_mat(Sink.collect(), Keep.right).run(clock=clock)
    assert await clock.run(done) == [("r", 0)]
    await assert_no_running_graphs()
    assert f.cancelled == {1, 2, 3, 4}
    assert clock.now() == 1.0


async def test_map_async_run_cancellation_cancels_the_calls() -> None:
    clock = VirtualClock()
    f = Calls(clock, [100.0] * 10)
    done = Source.from_iterable(range(10)).map_async_unordered(3, f).to_mat(Sink.collect(), Keep.right).run(
        clock=clock
    )
    await clock.settle()
    assert f.in_flight == 3
    done.cancel()
    await assert_no_running_graphs()
    assert f.cancelled == {0, 1, 2}


@pytest.mark.parametrize("ordered", [True, False])
async def test_map_async_upstream_failure_waits_for_the_calls_before_it(ordered: bool) -> None:
    clock = VirtualClock()
    f = Calls(clock, [100.0] * 10)
    flow = Flow.map_async(3, f) if ordered else Flow.map_async_unordered(3, f)
    src, sink = TestSource.probe(capacity=10).via(flow).to_mat(TestSink.probe(), Keep.both).run(clock=clock)
    await src.send_chunk([0, 1])
    await clock.settle()
    src.send_error(KeyError("up"))
    sink.request(2)
    assert sorted(await sink.expect_next_n(2, timeout=200.0)) == [("r", 0), ("r", 1)]
    assert clock.now() == 100.0
    assert isinstance(await sink.expect_error(), KeyError)
    await assert_no_running_graphs()
    assert f.cancelled == set()


async def test_map_async_signals() -> None:
    clock = VirtualClock()
    f = Calls(clock, [3.0, 1.0, 1.0])
    for ordered in (True, False):
        flow = Flow.map_async(3, f) if ordered else Flow.map_async_unordered(3, f)
        src, sink = TestSource.probe(capacity=10).via(flow).to_mat(TestSink.probe(signals=True), Keep.both).run(
            clock=clock
        )
        start = clock.now()
        await src.send_chunk([0, 1])
        await src.send_signal(Watermark(5))
        await src.send_chunk([2])
        src.send_complete()
        sink.request(3)
        if ordered:
            # Calls after the watermark start at once; results keep their order around it.
            assert await sink.expect_next_n(2) == [("r", 0), ("r", 1)]
            assert clock.now() - start == 3.0
            assert await sink.expect_signal() == Watermark(5)
            await sink.expect_next(("r", 2))
            assert clock.now() - start == 3.0
        else:
            # The watermark waits for the calls before it; calls after it start after it.
            await sink.expect_next(("r", 1))
            await sink.expect_next(("r", 0))
            assert await sink.expect_signal() == Watermark(5)
            assert clock.now() - start == 3.0
            await sink.expect_next(("r", 2))
            assert clock.now() - start == 4.0
        await sink.expect_complete()


async def test_map_async_argument_errors() -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="parallelism >= 1, got 0"):
        Flow.map_async(0, f)
    with pytest.raises(TypeError, match="callable"):
        Flow.map_async_unordered(2, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="map_async: f must return an awaitable") as info:
        await Source.single(1).map_async(2, lambda x: x).run_with(Sink.collect())
    assert "in stage 'map_async'" in info.value.__notes__


# -- buffer ---------------------------------------------------------------------------


def buffer_model(chunks: list[list[int]], size: int, overflow: str) -> list[int] | None:
    """What a buffer holds after taking ``chunks`` element by element while nothing leaves.

    None for "fail" when an element arrives while it is full.
    """
    buf: list[int] = []
    for x in (x for c in chunks for x in c):
        if len(buf) < size or overflow == "backpressure":
            buf.append(x)
        elif overflow == "drop_head":
            buf = buf[1:] + [x]
        elif overflow == "drop_tail":
            buf = buf[:-1] + [x]
        elif overflow == "fail":
            return None
    return buf


@SETTINGS
@given(
    chunks=st.lists(st.integers(0, 6), min_size=1, max_size=10),
    size=st.integers(1, 8),
    overflow=st.sampled_from(OVERFLOW_STRATEGIES),
)
def test_buffer_overflow_against_the_model(chunks: list[int], size: int, overflow: str) -> None:
    """Demand withheld: the first chunk waits in the probe's channel, the rest meets the buffer."""
    sized: list[list[int]] = []
    k = 0
    for n in chunks:
        sized.append(list(range(k, k + n)))
        k += n
    nonempty = [c for c in sized if c]

    async def main() -> tuple[list[int] | BaseException, list[int], int]:
        clock = VirtualClock()
        passed: list[int] = []
        sink = (
            source_from_chunks(sized)
            .map(lambda x: passed.append(x) or x)
            .buffer(size, overflow)  # type: ignore[arg-type]
            .to_mat(TestSink.probe(), Keep.right)
            .run(clock=clock, channel_capacity=1)
        )
        await clock.settle()
        held = len(passed)
        if overflow == "fail" and buffer_model(nonempty[1:], size, overflow) is None:
            result: list[int] | BaseException = await sink.expect_error()
        else:
            result = await sink.to_strict()
        await assert_no_running_graphs()
        return result, passed, held

    result, passed, held = asyncio.run(main())
    total = sum(chunks)
    expected_rest = buffer_model(nonempty[1:], size, overflow)
    first = nonempty[0] if nonempty else []
    if expected_rest is None:
        assert isinstance(result, BufferOverflowError)
        assert f"buffer of size {size} overflowed" in str(result)
        assert "in stage 'buffer'" in result.__notes__
    else:
        assert result == first + expected_rest
    if overflow == "backpressure":
        # Upstream was held back: at most the probe's chunk, the buffer (size + one chunk),
        # one chunk in the buffer's input channel and one pulled by the source and waiting.
        assert held <= len(first) + size + 3 * 6
        if total > len(first) + size + 3 * 6:
            assert held < total
    elif expected_rest is not None:
        assert held == total  # a dropping buffer never holds upstream back


@settings(max_examples=30, deadline=None)
@given(xs=st.lists(st.integers(), max_size=200), cuts=st.lists(st.integers(0, 200), max_size=8), size=st.integers(1, 8))
def test_buffer_backpressure_loses_nothing(xs: list[int], cuts: list[int], size: int) -> None:
    async def main() -> list[int]:
        graph = source_from_chunks(split_at(xs, cuts)).buffer(size).async_boundary().to_mat(Sink.collect(), Keep.right)
        got = await graph.run(channel_capacity=2)
        await assert_no_running_graphs()
        return got

    assert asyncio.run(main()) == xs


async def test_buffer_logs_dropped_counts_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamlib")
    sink = source_from_chunks([[0], [1, 2, 3], [4, 5]]).buffer(2, "drop_new").to_mat(
        TestSink.probe(), Keep.right
    ).run(channel_capacity=1)
    await VirtualClock().settle()
    assert await sink.to_strict() == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "buffer: buffer full (size 2), dropped 1 elements (drop_new)" in messages
    assert "buffer: buffer full (size 2), dropped 2 elements (drop_new)" in messages
    assert "buffer: 3 elements dropped in all (drop_new)" in messages


async def test_buffer_keeps_signals_in_place_when_dropping() -> None:
    src, sink = TestSource.probe(capacity=10).buffer(2, "drop_head").to_mat(
        TestSink.probe(signals=True), Keep.both
    ).run()
    await src.send_chunk([0])
    await src.send_chunk([1])
    await src.send_signal(Watermark(1))
    await src.send_chunk([2, 3])
    src.send_complete()
    await VirtualClock().settle()
    sink.request(10)
    await sink.expect_next(0)
    assert await sink.expect_signal() == Watermark(1)  # element 1 was dropped before it
    assert await sink.expect_next_n(2) == [2, 3]
    await sink.expect_complete()


async def test_buffer_delivers_what_it_holds_before_an_upstream_failure() -> None:
    src, sink = TestSource.probe().buffer(10, "backpressure").to_mat(TestSink.probe(), Keep.both).run()
    await src.send_next(1)
    await src.send_next(2)
    src.send_error(KeyError("up"))
    sink.request(2)
    assert await sink.expect_next_n(2) == [1, 2]
    assert isinstance(await sink.expect_error(), KeyError)


def test_buffer_argument_errors() -> None:
    with pytest.raises(ValueError, match="size >= 1, got 0"):
        Flow.buffer(0)
    with pytest.raises(ValueError, match="overflow strategy must be one of 'backpressure'"):
        Flow.buffer(4, "drop_everything")  # type: ignore[arg-type]


async def _identity(x: int) -> int:
    return x


@pytest.mark.parametrize(
    "attach",
    [
        lambda s: s.map_async(2, _identity),
        lambda s: s.map_async_unordered(2, _identity),
        lambda s: s.buffer(4),
        lambda s: s.buffer(4, "drop_head"),
        lambda s: s.delay(5.0),
        lambda s: s.throttle(1, 5.0),
    ],
    ids=["map_async", "map_async_unordered", "buffer", "buffer_drop_head", "delay", "throttle"],
)
async def test_downstream_cancellation_reaches_upstream_at_once_while_idle(
    attach: Callable[[Source[int, Any]], Source[int, Any]],
) -> None:
    clock = VirtualClock()
    # Straight from the probe (no Flow, whose identity stage would be an island in between).
    src, sink = attach(TestSource.probe()).to_mat(TestSink.probe(), Keep.both).run(clock=clock)
    await src.send_next(1)
    sink.request(1)
    await sink.expect_next(1, timeout=10.0)
    now = clock.now()
    sink.cancel()  # the stage is waiting for input
    await src.expect_cancellation()
    assert clock.now() == now


# -- failure delivery: everything before the failing element, then the error ----------------


def boom_at_5(x: int) -> int:
    if x == 5:
        raise ValueError("boom at 5")
    return x


async def slow_identity(x: int) -> int:
    for _ in range(3):
        await asyncio.sleep(0)
    return x


@pytest.mark.parametrize("ordered", [True, False])
async def test_map_async_delivers_the_elements_before_an_upstream_failure(ordered: bool) -> None:
    got: list[int] = []
    src = Source.from_iterable(range(10)).map(boom_at_5)
    src = src.map_async(8, slow_identity) if ordered else src.map_async_unordered(8, slow_identity)
    with pytest.raises(ValueError, match="boom at 5"):
        await src.run_with(Sink.foreach(got.append))
    assert (got if ordered else sorted(got)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("ordered", [True, False])
async def test_a_take_satisfied_before_an_upstream_failure_behind_map_async_wins(ordered: bool) -> None:
    seen = 0

    def boom_at_3rd(x: int) -> int:
        nonlocal seen
        seen += 1
        if seen == 3:
            raise ValueError("boom at the third element")
        return x

    src = Source.from_iterable(range(10)).map(boom_at_3rd)
    src = src.map_async(8, slow_identity) if ordered else src.map_async_unordered(8, slow_identity)
    result = await src.take(1).run_with(Sink.collect())
    if ordered:
        assert result == [0]
    else:
        assert len(result) == 1 and result[0] in (0, 1)
