"""RestartSource / RestartFlow / RestartSink: restarts, the backoff schedule (virtual clock), limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Flow, Keep, RestartFlow, RestartSettings, RestartSink, RestartSource, Sink, Source
from streamlib.testing import VirtualClock


class Flaky(Exception):
    pass


MARK = object()


def _raise_on_mark(x: Any) -> Any:
    if x is MARK:
        raise Flaky("outage")
    return x


def emits_then_fails(*xs: Any) -> Source[Any, None]:
    return Source.from_iterable([*xs, MARK]).map(_raise_on_mark)


def spaced(clock: VirtualClock, xs: list[Any], gap: float = 0.5) -> Source[Any, None]:
    """Emits ``xs`` one every ``gap`` virtual seconds, so each failure happens alone in time."""

    async def gen() -> Any:
        for x in xs:
            await clock.sleep(gap)
            yield x

    return Source.from_async_iterable(gen)


class FlakySource:
    """A factory whose first ``failures`` sources emit a little and fail; then one that completes."""

    def __init__(self, clock: VirtualClock, failures: int, final: list[int]) -> None:
        self.clock = clock
        self.failures = failures
        self.final = final
        self.started_at: list[float] = []

    def __call__(self) -> Source[Any, None]:
        self.started_at.append(self.clock.now())
        n = len(self.started_at)
        if n <= self.failures:
            return emits_then_fails(-n)
        return Source.from_iterable(self.final)


async def test_source_failing_three_times_then_succeeding_follows_the_schedule() -> None:
    clock = VirtualClock()
    factory = FlakySource(clock, failures=3, final=list(range(100)))
    src = RestartSource.with_backoff(1.0, 10.0, 0.0, 3, factory)
    done = src.to_mat(Sink.collect(), Keep.right).run(clock=clock)
    got = await clock.run(done)
    assert got == [-1, -2, -3, *range(100)]
    # delays 1, 2, 4 seconds: restart n waits min(max, min * 2**n)
    assert factory.started_at == [0.0, 1.0, 3.0, 7.0]


async def test_backoff_is_capped_by_max_backoff_and_on_failures_completes() -> None:
    clock = VirtualClock()
    factory = FlakySource(clock, failures=5, final=[7, 8])
    src = RestartSource.on_failures_with_backoff(1.0, 3.0, 0.0, -1, factory)
    got = await clock.run(src.to_mat(Sink.collect(), Keep.right).run(clock=clock))
    assert got == [-1, -2, -3, -4, -5, 7, 8]
    assert factory.started_at == [0.0, 1.0, 3.0, 6.0, 9.0, 12.0]


async def test_jitter_stays_within_random_factor() -> None:
    clock = VirtualClock()
    factory = FlakySource(clock, failures=4, final=[])
    src = RestartSource.on_failures_with_backoff(1.0, 100.0, 0.5, -1, factory)
    await clock.run(src.to_mat(Sink.collect(), Keep.right).run(clock=clock))
    gaps = [b - a for a, b in zip(factory.started_at, factory.started_at[1:])]
    for n, gap in enumerate(gaps):
        assert 2.0**n <= gap <= 2.0**n * 1.5


def test_settings_delay_formula() -> None:
    s = RestartSettings.create(0.5, 4.0, 0.2, 3)
    assert [s.delay(n, rnd=0.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert s.delay(1, rnd=1.0) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="max_backoff"):
        RestartSettings.create(2, 1, 0)
    with pytest.raises(ValueError, match="random_factor"):
        RestartSettings.create(1, 2, -1)


async def test_with_backoff_restarts_after_completion_until_max_restarts() -> None:
    clock = VirtualClock()
    calls: list[float] = []

    def factory() -> Source[int, None]:
        calls.append(clock.now())
        return Source.from_iterable([len(calls)])

    src = RestartSource.with_backoff(2.0, 2.0, 0.0, 2, factory)
    got = await clock.run(src.to_mat(Sink.collect(), Keep.right).run(clock=clock))
    assert got == [1, 2, 3]
    assert calls == [0.0, 2.0, 4.0]


async def test_exhausted_restarts_fail_with_the_last_error() -> None:
    clock = VirtualClock()
    factory = FlakySource(clock, failures=10, final=[])
    src = RestartSource.with_backoff(1.0, 1.0, 0.0, 2, factory)
    with pytest.raises(Flaky, match="outage"):
        await clock.run(src.to_mat(Sink.collect(), Keep.right).run(clock=clock))
    assert len(factory.started_at) == 3


async def test_long_enough_run_resets_the_restart_count() -> None:
    clock = VirtualClock()
    calls: list[float] = []

    def factory() -> Source[Any, None]:
        calls.append(clock.now())
        if len(calls) == 3:  # this run lives 5 s before failing: the count starts over
            return Source.tick(5.0, 0, initial_delay=5.0).take(1).map(lambda _: MARK).map(_raise_on_mark)
        if len(calls) < 5:
            return emits_then_fails()
        return Source.empty()

    src = RestartSource.on_failures_with_backoff(1.0, 10.0, 0.0, 3, factory, max_restarts_within=2.0)
    await clock.run(src.to_mat(Sink.collect(), Keep.right).run(clock=clock))
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps == [1.0, 2.0, 5.0 + 1.0, 2.0]


async def test_factory_raising_counts_as_failure_and_wrong_type_is_clear() -> None:
    clock = VirtualClock()
    calls = []

    def factory() -> Source[int, None]:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return Source.single(5)

    src = RestartSource.on_failures_with_backoff(0.1, 1.0, 0.0, -1, factory)
    assert await clock.run(src.to_mat(Sink.collect(), Keep.right).run(clock=clock)) == [5]
    bad = RestartSource.with_backoff(0.1, 1.0, 0.0, -1, lambda: [1, 2])  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="factory must return a Source"):
        await clock.run(bad.to_mat(Sink.collect(), Keep.right).run(clock=clock))


async def test_downstream_cancel_during_backoff_ends_the_run() -> None:
    clock = VirtualClock()
    factory = FlakySource(clock, failures=100, final=[])
    src = RestartSource.with_backoff(60.0, 60.0, 0.0, -1, factory)
    got = await clock.run(src.take(2).to_mat(Sink.collect(), Keep.right).run(clock=clock))
    assert got == [-1, -2]
    assert factory.started_at == [0.0, 60.0]


async def test_cancelling_the_run_cancels_the_inner_source() -> None:
    clock = VirtualClock()
    src = RestartSource.with_backoff(1.0, 1.0, 0.0, -1, lambda: Source.tick(1.0, "t"))
    q = src.to_mat(Sink.queue(4), Keep.right).run(clock=clock)
    assert await clock.run(q.pull()) == "t"
    q.cancel()
    await clock.advance(2.0)  # the inner tick notices the cancellation at its next element


# -- RestartFlow -------------------------------------------------------------------------


async def test_restart_flow_restarts_inner_flow_and_completes_with_upstream() -> None:
    clock = VirtualClock()
    made: list[float] = []

    def factory() -> Flow[int, int, None]:
        made.append(clock.now())
        return Flow.map(lambda x: 100 // x)  # fails on 0

    flow = RestartFlow.with_backoff(1.0, 10.0, 0.0, -1, factory)
    # elements at t = 0.5, 1.0, ...; the 0s at t = 1.5 and 3.0
    src = spaced(clock, [1, 2, 0, 4, 5, 0, 10, 20])
    got = await clock.run(src.via(flow).to_mat(Sink.collect(), Keep.right).run(clock=clock))
    assert got == [100, 50, 25, 20, 10, 5]
    assert made == [0.0, 2.5, 5.0]  # restarts 1 s after t=1.5, then 2 s after t=3.0


async def test_restart_flow_exhausted_fails_and_upstream_failure_is_not_restarted() -> None:
    clock = VirtualClock()
    flow = RestartFlow.with_backoff(1.0, 1.0, 0.0, 1, lambda: Flow.map(lambda x: 1 // x))
    with pytest.raises(ZeroDivisionError):
        await clock.run(spaced(clock, [0, 0, 0], 2.0).via(flow).to_mat(Sink.collect(), Keep.right).run(clock=clock))
    flow2 = RestartFlow.with_backoff(1.0, 1.0, 0.0, -1, lambda: Flow.map(lambda x: x))
    with pytest.raises(Flaky):
        await clock.run(emits_then_fails(1, 2).via(flow2).to_mat(Sink.collect(), Keep.right).run(clock=clock))


async def test_restart_flow_on_failures_completes_when_inner_completes() -> None:
    clock = VirtualClock()
    flow = RestartFlow.on_failures_with_backoff(1.0, 1.0, 0.0, -1, lambda: Flow.take(2))
    got = await clock.run(Source.repeat(3).via(flow).to_mat(Sink.collect(), Keep.right).run(clock=clock))
    assert got == [3, 3]


# -- RestartSink ---------------------------------------------------------------------------


async def test_restart_sink_restarts_failed_sink() -> None:
    clock = VirtualClock()
    written: list[int] = []
    made: list[float] = []

    def write(x: int) -> None:
        if x < 0 and -x not in seen:
            seen.add(-x)
            raise Flaky(f"db down at {x}")
        written.append(x)

    seen: set[int] = set()

    def factory() -> Sink[int, Any]:
        made.append(clock.now())
        return Sink.foreach(write)

    sink = RestartSink.with_backoff(1.0, 5.0, 0.0, -1, factory)
    # -1 arrives at t=1.5 (restart at 2.5), -2 at t=2.5 is read by the new sink (restart at 4.5)
    _value, run = spaced(clock, [1, 2, -1, 3, -2, 4]).to(sink).run_graph(clock=clock)
    await clock.run(run.wait())
    assert written == [1, 2, 3, 4]
    assert made == [0.0, 2.5, 4.5]


async def test_restart_sink_gives_up_after_max_restarts() -> None:
    clock = VirtualClock()
    made = []

    def factory() -> Sink[int, Any]:
        made.append(1)
        return Sink.foreach(lambda x: 1 // 0)

    sink = RestartSink.with_backoff(1.0, 1.0, 0.0, 2, factory)
    _value, run = Source.repeat(1).to(sink).run_graph(clock=clock)
    await clock.run(run.wait())
    assert len(made) == 3
    assert run.done


async def test_no_leak_when_outer_task_cancelled() -> None:
    clock = VirtualClock()
    src = RestartSource.with_backoff(1.0, 1.0, 0.0, -1, lambda: emits_then_fails(1))
    fut = src.to_mat(Sink.collect(), Keep.right).run(clock=clock)
    await clock.advance(3.5)
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fut
    await clock.settle()


# -- failures that are not retried surface -------------------------------------------------


def paced(clock: VirtualClock, xs: list[Any], gap: float = 0.5) -> Source[Any, None]:
    """Like ``spaced``, but the end also comes ``gap`` after the last element."""

    async def gen() -> Any:
        for x in xs:
            await clock.sleep(gap)
            yield x
        await clock.sleep(gap)

    return Source.from_async_iterable(gen)


def _batch_writer(written: list[int]) -> Sink[int, None]:
    """Writes whole batches at the end of the stream; a batch holding a negative number fails."""

    def write(batch: list[int]) -> None:
        if any(x < 0 for x in batch):
            raise Flaky(f"cannot write {batch}")
        written.extend(batch)

    return Flow[int, int, None]().grouped(100).map(write).to(Sink.ignore())


async def test_restart_sink_failure_after_upstream_completed_fails_its_value() -> None:
    clock = VirtualClock()
    written: list[int] = []
    made: list[float] = []

    def factory() -> Sink[int, None]:
        made.append(clock.now())
        return _batch_writer(written)

    sink = RestartSink.with_backoff(1.0, 1.0, 0.0, -1, factory)
    done = Source.from_iterable([1, -2, 3]).to_mat(sink, Keep.right).run(clock=clock)
    with pytest.raises(Flaky, match="cannot write"):
        await clock.run(done)
    assert written == []
    assert made == [0.0]  # upstream had completed: nothing left to retry with


async def test_restart_sink_exhausted_restarts_fail_its_value() -> None:
    clock = VirtualClock()
    made = []

    def factory() -> Sink[int, Any]:
        made.append(1)
        return Sink.foreach(lambda x: 1 // 0)

    sink = RestartSink.with_backoff(1.0, 1.0, 0.0, 2, factory)
    done = Source.repeat(1).to_mat(sink, Keep.right).run(clock=clock)
    with pytest.raises(ZeroDivisionError):
        await clock.run(done)
    assert len(made) == 3


async def test_restart_sink_surfaces_an_error_its_inner_value_does_not_carry() -> None:
    clock = VirtualClock()
    # Flow.to keeps the flow's value (None): the failure is only in the inner Sink.ignore's future.
    sink = RestartSink.with_backoff(
        1.0, 1.0, 0.0, 1, lambda: Flow[int, int, None]().map(lambda x: 1 // 0).to(Sink.ignore())
    )
    with pytest.raises(ZeroDivisionError):
        await clock.run(Source.repeat(1).to_mat(sink, Keep.right).run(clock=clock))


async def test_restart_sink_upstream_failure_fails_its_value_after_writing_what_came_before() -> None:
    clock = VirtualClock()
    written: list[int] = []
    made = []

    def factory() -> Sink[int, Any]:
        made.append(1)
        return Sink.foreach(written.append)

    sink = RestartSink.with_backoff(1.0, 1.0, 0.0, -1, factory)
    done = emits_then_fails(1, 2).to_mat(sink, Keep.right).run(clock=clock)
    with pytest.raises(Flaky, match="outage"):
        await clock.run(done)
    assert written == [1, 2]
    assert made == [1]


async def test_restart_sink_value_completes_after_the_last_inner_sink_finished() -> None:
    clock = VirtualClock()
    written: list[int] = []
    sink = RestartSink.with_backoff(
        1.0, 1.0, 0.0, -1, lambda: Flow[int, int, None]().grouped(10).to(Sink.foreach(written.extend))
    )
    done = Source.from_iterable(range(5)).to_mat(sink, Keep.right).run(clock=clock)
    await clock.run(done)
    assert done.done() and done.exception() is None
    assert written == [0, 1, 2, 3, 4]


async def test_restart_flow_failure_after_upstream_completed_fails_downstream() -> None:
    clock = VirtualClock()
    made = []

    def factory() -> Flow[int, int, None]:
        made.append(1)
        return Flow[int, int, None]().grouped(10).map(lambda b: 1 // (len(b) - 3))

    flow = RestartFlow.with_backoff(1.0, 1.0, 0.0, -1, factory)
    with pytest.raises(ZeroDivisionError):
        await clock.run(Source.from_iterable([1, 2, 3]).via(flow).to_mat(Sink.collect(), Keep.right).run(clock=clock))
    assert made == [1]


@settings(max_examples=60, deadline=None)
@given(
    fails=st.lists(st.booleans(), max_size=12),
    max_restarts=st.integers(-1, 4),
    kind=st.sampled_from(["source", "flow", "sink"]),
)
async def test_restarts_match_the_model(fails: list[bool], max_restarts: int, kind: str) -> None:
    """Element ``i`` fails once when ``fails[i]``: every restart stage ends as the model says.

    Each failure uses one restart; a failure beyond ``max_restarts`` fails the
    stream (the value downstream, or RestartSink's value) with that failure, and
    nothing after it is delivered. Runs never last long enough to reset the count.
    """
    clock = VirtualClock()
    xs = list(range(len(fails)))
    failing = {x for x, f in zip(xs, fails) if f}
    allowed = len(failing) if max_restarts < 0 else max_restarts
    fatal = sorted(failing)[allowed] if len(failing) > allowed else None
    expected = [x for x in xs if x not in failing and (fatal is None or x < fatal)]
    seen: set[int] = set()

    def once(x: int) -> int:
        if x in failing and x not in seen:
            seen.add(x)
            raise Flaky(f"fails at {x}")
        return x

    got: list[int] = []
    n = max_restarts
    within = 1_000_000.0
    if kind == "source":
        # The source resumes after what it emitted, as a reconnecting client would.
        def source() -> Source[int, None]:
            start = (max(got) + 1) if got else 0
            start = max([start, *[x + 1 for x in seen]])
            return paced(clock, xs[start:]).map(once)

        src = RestartSource.on_failures_with_backoff(0.1, 0.1, 0.0, n, source, max_restarts_within=within)
        done = src.to_mat(Sink.foreach(got.append), Keep.right).run(clock=clock)
    elif kind == "flow":
        flow = RestartFlow.on_failures_with_backoff(
            0.1, 0.1, 0.0, n, lambda: Flow[int, int, None]().map(once), max_restarts_within=within
        )
        done = paced(clock, xs).via(flow).to_mat(Sink.foreach(got.append), Keep.right).run(clock=clock)
    else:
        sink: Sink[int, Any] = RestartSink.with_backoff(
            0.1, 0.1, 0.0, n, lambda: Sink.foreach(lambda x: got.append(once(x))), max_restarts_within=within
        )
        done = paced(clock, xs).to_mat(sink, Keep.right).run(clock=clock)
    if fatal is None:
        await clock.run(done)
    else:
        with pytest.raises(Flaky, match=rf"fails at {fatal}\b"):
            await clock.run(done)
    assert got == expected
