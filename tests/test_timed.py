"""grouped_within, throttle and delay under a virtual clock, against plain models.

Every schedule uses times and intervals that are multiples of 1/8 s, so float
sums are exact and the emission times can be compared with ``==``. Arrivals are
driven by ``clock.advance_to(t)`` then an offer; at a tie, a timer due at ``t``
fires before the element offered at ``t`` arrives.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Flow, Keep, Sink, Source, Watermark
from streamlib._runtime.signals import Barrier
from streamlib.testing import TestSink, TestSource, VirtualClock, assert_no_running_graphs, source_from_chunks

SETTINGS = settings(max_examples=60, deadline=None)

Event = tuple[float, list[int]]


@st.composite
def schedules(draw: st.DrawFn, max_events: int = 12) -> tuple[list[Event], float]:
    """Arrival events (time, chunk) with increasing times, and the completion time."""
    gaps = draw(st.lists(st.integers(0, 12), min_size=0, max_size=max_events))
    events: list[Event] = []
    t = 0.0
    k = 0
    for gap in gaps:
        t += gap / 4
        size = draw(st.integers(0, 5))
        events.append((t, list(range(k, k + size))))
        k += size
    end = t + draw(st.integers(0, 12)) / 4
    return events, end


async def run_schedule(flow: Flow[int, Any, Any], events: list[Event], end: float) -> list[tuple[float, Any]]:
    """Offer each chunk at its time; return (virtual time, element) for every emitted element."""
    clock = VirtualClock()
    out: list[tuple[float, Any]] = []
    queue, done = (
        Source.queue(100_000)
        .via(flow)
        .to_mat(Sink.foreach(lambda x: out.append((clock.now(), x))), Keep.both)
        .run(clock=clock)
    )
    for t, chunk in events:
        await clock.advance_to(t)
        await queue.offer_all(chunk)
    await clock.advance_to(end)
    queue.complete()
    await clock.run(done)
    await assert_no_running_graphs()
    return out


# -- grouped_within -------------------------------------------------------------------


def grouped_within_model(events: list[Event], n: int, d: float, end: float) -> list[tuple[float, list[int]]]:
    """Akka's groupedWithin: a group leaves when full, or at a tick with elements waiting.

    Ticks fall every ``d`` after the last emission (or the start); the interval
    restarts at each emission.
    """
    out: list[tuple[float, list[int]]] = []
    phase = 0.0
    buf: list[int] = []
    deadline: float | None = None

    def tick_until(t: float) -> None:
        nonlocal buf, phase, deadline
        if deadline is not None and deadline <= t:
            out.append((deadline, buf))
            buf, phase, deadline = [], deadline, None

    for t, chunk in events:
        tick_until(t)
        if not chunk:
            continue
        was_empty = not buf
        buf = buf + chunk
        emitted = False
        while len(buf) >= n:
            out.append((t, buf[:n]))
            buf = buf[n:]
            emitted = True
        if emitted:
            phase = t
            deadline = t + d if buf else None
        elif was_empty:
            deadline = phase + d
            while deadline <= t:
                deadline += d
    tick_until(end)
    if buf:
        out.append((end, buf))
    return out


@SETTINGS
@given(schedule=schedules(), n=st.integers(1, 5), d8=st.integers(1, 16))
def test_grouped_within_follows_the_model(schedule: tuple[list[Event], float], n: int, d8: int) -> None:
    events, end = schedule
    d = d8 / 8
    got = asyncio.run(run_schedule(Flow.grouped_within(n, d), events, end))
    assert got == grouped_within_model(events, n, d, end)


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.lists(st.integers(), max_size=8), min_size=1, max_size=8), n=st.integers(1, 6))
def test_grouped_within_without_time_passing_is_grouped(chunks: list[list[int]], n: int) -> None:
    xs = [x for c in chunks for x in c]

    async def main() -> list[list[int]]:
        clock = VirtualClock()
        done = source_from_chunks(chunks).grouped_within(n, 1.0).to_mat(Sink.collect(), Keep.right).run(clock=clock)
        return await clock.run(done)

    assert asyncio.run(main()) == [xs[i : i + n] for i in range(0, len(xs), n)]


async def test_grouped_within_emits_on_time_and_restarts_the_interval() -> None:
    got = await run_schedule(
        Flow.grouped_within(3, 1.0), [(0.0, [1]), (0.5, [2]), (1.25, [3, 4, 5, 6]), (4.0, [7])], 4.5
    )
    assert got == [(1.0, [1, 2]), (1.25, [3, 4, 5]), (2.25, [6]), (4.25, [7])]


async def test_grouped_within_flushes_before_a_signal_and_on_completion() -> None:
    clock = VirtualClock()
    src, sink = TestSource.probe().grouped_within(10, 5.0).to_mat(TestSink.probe(signals=True), Keep.both).run(
        clock=clock
    )
    await src.send_chunk([1, 2])
    await src.send_signal(Watermark(100))
    await src.send_chunk([3])
    src.send_complete()
    sink.request(2)
    await sink.expect_next([1, 2])
    assert await sink.expect_signal() == Watermark(100)
    await sink.expect_next([3])
    await sink.expect_complete()
    assert clock.now() == 0.0


async def test_grouped_within_accepts_a_timedelta_and_rejects_bad_arguments() -> None:
    got = await run_schedule(Flow.grouped_within(5, timedelta(milliseconds=500)), [(0.0, [1])], 1.0)
    assert got == [(0.5, [1])]
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        Flow.grouped_within(0, 1.0)
    with pytest.raises(ValueError, match="seconds must be positive, got 0"):
        Flow.grouped_within(2, 0)


async def test_grouped_within_failure_upstream_fails_downstream() -> None:
    clock = VirtualClock()
    src, sink = TestSource.probe().grouped_within(10, 5.0).to_mat(TestSink.probe(), Keep.both).run(clock=clock)
    await src.send_next(1)
    src.send_error(KeyError("k"))
    assert isinstance(await sink.expect_error(), KeyError)


# -- throttle -------------------------------------------------------------------------


def throttle_model(events: list[Event], interval: float, capacity: int) -> list[tuple[float, int]]:
    """A token bucket: one token per ``interval``, ``capacity`` at most, full at the start."""
    tokens_ahead = (capacity - 1) * interval
    tat = 0.0  # when the bucket, emptied, would hold one token again
    cur = 0.0  # elements leave in order: none before the previous one
    out: list[tuple[float, int]] = []
    for t, chunk in events:
        cur = max(cur, t)
        for x in chunk:
            s = max(cur, tat - tokens_ahead)
            tat = max(tat, s) + interval
            cur = s
            out.append((s, x))
    return out


@SETTINGS
@given(
    schedule=schedules(),
    elements=st.sampled_from([1, 2, 4]),
    per=st.sampled_from([0.5, 1.0, 2.0]),
    burst=st.integers(0, 4),
)
def test_throttle_follows_the_token_bucket(
    schedule: tuple[list[Event], float], elements: int, per: float, burst: int
) -> None:
    events, end = schedule
    got = asyncio.run(run_schedule(Flow.throttle(elements, per, burst), events, end))
    assert got == throttle_model(events, per / elements, max(burst, 1))


async def test_throttle_shapes_a_fast_source_without_dropping() -> None:
    clock = VirtualClock()
    out: list[tuple[float, int]] = []
    done = (
        Source.from_iterable(range(10))
        .throttle(2, 1.0, burst=3)
        .to_mat(Sink.foreach(lambda x: out.append((clock.now(), x))), Keep.right)
        .run(clock=clock)
    )
    await clock.run(done)
    assert out == [(0.0, 0), (0.0, 1), (0.0, 2), (0.5, 3), (1.0, 4), (1.5, 5), (2.0, 6), (2.5, 7), (3.0, 8), (3.5, 9)]


async def test_throttle_refills_while_idle_up_to_the_burst() -> None:
    got = await run_schedule(Flow.throttle(1, 1.0, 2), [(0.0, [0, 1, 2]), (10.0, [3, 4, 5, 6])], 12.0)
    assert got == [(0.0, 0), (0.0, 1), (1.0, 2), (10.0, 3), (10.0, 4), (11.0, 5), (12.0, 6)]


async def test_throttle_keeps_signals_in_place_and_backpressures() -> None:
    clock = VirtualClock()
    src, sink = TestSource.probe().throttle(1, 1.0).to_mat(TestSink.probe(signals=True), Keep.both).run(clock=clock)
    await src.send_chunk([1, 2])
    await src.send_signal(Barrier(7))
    sink.request(2)
    assert await sink.expect_next(1) == 1
    assert clock.now() == 0.0
    await sink.expect_next(2)
    assert clock.now() == 1.0
    assert await sink.expect_signal() == Barrier(7)
    src.send_complete()
    await sink.expect_complete()


async def test_throttle_cancelled_downstream_while_waiting_for_a_token() -> None:
    clock = VirtualClock()
    src, sink = TestSource.probe().throttle(1, 100.0).to_mat(TestSink.probe(), Keep.both).run(clock=clock)
    await src.send_chunk([1, 2])
    sink.request(1)
    await sink.expect_next(1)
    sink.cancel()
    await src.expect_cancellation()  # at once, not when the next token comes
    assert clock.now() == 0.0


def test_throttle_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="elements must be an int >= 1"):
        Flow.throttle(0, 1.0)
    with pytest.raises(ValueError, match="per must be positive"):
        Flow.throttle(1, 0.0)
    with pytest.raises(ValueError, match="burst must be an int >= 0"):
        Flow.throttle(1, 1.0, -1)


# -- delay ----------------------------------------------------------------------------


@SETTINGS
@given(schedule=schedules(), d8=st.integers(0, 24))
def test_delay_emits_each_element_exactly_seconds_after_arrival(schedule: tuple[list[Event], float], d8: int) -> None:
    events, end = schedule
    d = d8 / 8
    got = asyncio.run(run_schedule(Flow.delay(d), events, end))
    assert got == [(t + d, x) for t, chunk in events for x in chunk]


async def test_delay_is_bounded_and_backpressures() -> None:
    clock = VirtualClock()
    src, sink = TestSource.probe().delay(1.0).to_mat(TestSink.probe(), Keep.both).run(clock=clock, channel_capacity=4)
    sent = 0
    while src.pending_demand:
        await src.send_next(sent)
        sent += 1
        await clock.settle()
    # 4 waiting in the delay stage (its bound: the channel capacity), 1 in the probe's channel.
    assert sent == 5
    await sink.expect_no_message(0.5)
    assert src.pending_demand == 0
    src_done = asyncio.ensure_future(src.expect_request())
    sink.request(100)
    assert await sink.expect_next_n(5) == [0, 1, 2, 3, 4]
    await src_done
    src.send_complete()
    await sink.expect_complete()


async def test_delay_keeps_chunks_whole_and_signals_in_place() -> None:
    clock = VirtualClock()
    src, sink = TestSource.probe(capacity=10).delay(2.0).to_mat(TestSink.probe(signals=True, capacity=10), Keep.both).run(
        clock=clock
    )
    await src.send_chunk([1, 2, 3])
    await src.send_signal(Watermark(9))
    await clock.advance(1.0)
    await src.send_chunk([4])
    sink.request(4)
    assert await sink.expect_next_n(3) == [1, 2, 3]
    assert clock.now() == 2.0
    assert await sink.expect_signal() == Watermark(9)
    await sink.expect_next(4)
    assert clock.now() == 3.0
    src.send_complete()
    await sink.expect_complete()


async def test_delay_delivers_the_waiting_elements_before_an_upstream_failure() -> None:
    clock = VirtualClock()
    src, sink = TestSource.probe().delay(10.0).to_mat(TestSink.probe(), Keep.both).run(clock=clock)
    sink.request(1)
    await src.send_next(1)
    src.send_error(ValueError("upstream"))
    assert await sink.expect_next(1, timeout=20.0) == 1
    assert clock.now() == 10.0
    assert isinstance(await sink.expect_error(), ValueError)


def test_delay_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="delay\\(seconds\\) must be a finite number"):
        Flow.delay(float("nan"))
    with pytest.raises(ValueError, match="must not be negative"):
        Flow.delay(-1.0)
