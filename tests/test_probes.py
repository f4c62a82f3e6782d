"""The test kit's probes, on their own: demand, expectations, timeouts, both clocks."""

from __future__ import annotations

import pytest

from streamlib import Keep, Sink, Source, Watermark
from streamlib.testing import SinkProbe, SourceProbe, TestSink, TestSource, VirtualClock, settle


class Boom(Exception):
    pass


def probes(clock: VirtualClock | None = None, **sink_kwargs: object) -> tuple[SourceProbe, SinkProbe]:
    graph = TestSource.probe().to_mat(TestSink.probe(**sink_kwargs), Keep.both)  # type: ignore[arg-type]
    return graph.run(clock=clock)


async def test_round_trip_through_a_flow() -> None:
    src, sink = TestSource.probe().map(lambda x: x * 10).to_mat(TestSink.probe(), Keep.both).run()
    await src.send_next(1)
    sink.request(2)
    assert await sink.expect_next() == 10
    await src.send_next(2)
    await sink.expect_next(20)
    src.send_complete()
    await sink.expect_complete()


async def test_sink_probe_takes_nothing_without_demand() -> None:
    # Source -> probe: upstream fills the probe's channel and stops there.
    pulled: list[int] = []
    sink = Source.from_iterable(range(5)).map(lambda x: pulled.append(x) or x).run_with(TestSink.probe())
    await settle()
    assert pulled == [0, 1, 2, 3, 4]  # one chunk, pulled at once, now waiting in the channel
    assert sink.demand == 0
    sink.request(2)
    assert await sink.expect_next_n(2) == [0, 1]
    sink.request(1)
    await sink.expect_next(2)
    assert await sink.to_strict() == [3, 4]


async def test_withheld_demand_backpressures_the_source_probe() -> None:
    src, sink = probes()
    assert src.pending_demand == 1
    await src.send_next(1)  # moved on to the sink's channel
    await settle()
    await src.send_next(2)  # taken by the pump, which waits for room in the sink's channel
    await settle()
    await src.send_next(3)  # stays in the source probe's channel
    assert src.pending_demand == 0
    with pytest.raises(AssertionError, match="expect_request: nothing happened within 0.05 seconds"):
        await src.expect_request(timeout=0.05)
    sink.request(1)
    await sink.expect_next(1)
    assert await src.expect_request() == 1
    sink.request(2)
    assert await sink.expect_next_n([2, 3]) == [2, 3]
    src.send_complete()
    await sink.expect_complete()


async def test_request_splits_a_chunk_and_keeps_the_rest_in_the_channel() -> None:
    src, sink = probes()
    await src.send_chunk([1, 2, 3])
    sink.request(1)
    await sink.expect_next(1)
    sink.request(1)
    await sink.expect_next(2)
    src.send_complete()
    with pytest.raises(AssertionError, match="1 elements wait for demand"):
        await sink.expect_complete()
    assert await sink.request_next(3) == 3
    await sink.expect_complete()


async def test_expect_next_mismatch_and_missing_demand_fail_clearly() -> None:
    src, sink = probes()
    await src.send_next("a")
    with pytest.raises(AssertionError, match="no demand: call request"):
        await sink.expect_next()
    sink.request(1)
    with pytest.raises(AssertionError, match="expected 'b', got 'a'"):
        await sink.expect_next("b")
    with pytest.raises(AssertionError, match=r"expected \[1\], got \[2\]"):
        await src.send_next(2)
        sink.request(1)
        await sink.expect_next_n([1])
    src.send_complete()
    await sink.expect_complete()


async def test_expect_error_returns_the_error_and_overtakes_undemanded_elements() -> None:
    src, sink = probes(capacity=10)
    await src.send_chunk([1, 2])
    src.send_error(Boom("x"))
    error = await sink.expect_error()
    assert isinstance(error, Boom)


async def test_expect_error_fails_on_a_demanded_element_or_completion() -> None:
    src, sink = probes()
    sink.request(1)
    await src.send_next(1)
    with pytest.raises(AssertionError, match="expect_error: got element 1"):
        await sink.expect_error()
    await sink.expect_next(1)  # still there: a failed expectation consumes nothing
    src.send_complete()
    with pytest.raises(AssertionError, match="expect_error: the stream completed"):
        await sink.expect_error()


async def test_expect_complete_on_a_failed_stream_names_the_error() -> None:
    sink = Source.failed(Boom("bad")).run_with(TestSink.probe())
    with pytest.raises(AssertionError, match="failed: Boom") as info:
        await sink.expect_complete()
    assert isinstance(info.value.__cause__, Boom)


async def test_expect_next_after_completion_fails() -> None:
    sink = Source.empty().run_with(TestSink.probe())
    sink.request(1)
    with pytest.raises(AssertionError, match="expect_next: the stream completed"):
        await sink.expect_next()


async def test_to_strict_raises_with_the_stream_error() -> None:
    src, sink = probes()
    await src.send_next(1)
    src.send_error(Boom("late"))
    with pytest.raises(AssertionError, match="failed after 1 elements") as info:
        await sink.to_strict()
    assert isinstance(info.value.__cause__, Boom)


async def test_cancel_reaches_the_source_probe() -> None:
    src, sink = probes()
    sink.cancel()
    # The island between the two channels learns of the cancellation at its next put.
    await src.send_next(1)
    await src.expect_cancellation()
    assert src.cancelled and src.pending_demand == 0
    with pytest.raises(AssertionError, match="downstream cancelled"):
        await src.send_next(1)
    with pytest.raises(AssertionError, match="the probe has cancelled the stream"):
        sink.request(1)
        await sink.expect_next()


async def test_take_cancels_the_source_probe() -> None:
    src, done = TestSource.probe().take(2).to_mat(Sink.collect(), Keep.both).run()
    await src.send_next(1)
    await src.send_next(2)
    await src.expect_cancellation()
    assert await done == [1, 2]


async def test_source_probe_refuses_sending_after_the_end() -> None:
    src, sink = probes()
    src.send_complete()
    with pytest.raises(RuntimeError, match="after send_complete"):
        await src.send_next(1)
    with pytest.raises(RuntimeError, match="after send_complete"):
        src.send_error(Boom())
    await sink.expect_complete()


async def test_signals_are_recorded_or_delivered_in_order() -> None:
    src, sink = probes(signals=True)
    await src.send_next(1)
    sink.request(1)
    await src.send_signal(Watermark(5))
    await sink.expect_next(1)
    assert await sink.expect_signal() == Watermark(5)
    src.send_complete()
    await sink.expect_complete()

    src, sink = probes()
    await src.send_signal(Watermark(7))
    await src.send_next(1)
    sink.request(1)
    await sink.expect_next(1)
    assert sink.signals == [Watermark(7)]
    with pytest.raises(RuntimeError, match="signals=True"):
        await sink.expect_signal()
    src.send_complete()
    await sink.expect_complete()


async def test_expect_next_with_a_signal_first_fails() -> None:
    src, sink = probes(signals=True)
    await src.send_signal(Watermark(1))
    sink.request(1)
    with pytest.raises(AssertionError, match="got signal Watermark"):
        await sink.expect_next()
    src.send_complete()
    await sink.expect_complete()


async def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TestSink.probe(capacity=0)
    with pytest.raises(ValueError, match="capacity"):
        TestSource.probe(capacity=0)
    src, sink = probes()
    with pytest.raises(ValueError, match="request"):
        sink.request(0)
    with pytest.raises(ValueError, match="send_complete"):
        from streamlib._runtime.signals import END

        await src.send_signal(END)
    src.send_complete()
    await sink.expect_complete()


# -- virtual time ---------------------------------------------------------------------


async def test_waiting_moves_virtual_time_to_the_emission() -> None:
    clock = VirtualClock()
    sink = Source.tick(2.0, "t").take(3).to_mat(TestSink.probe(), Keep.right).run(clock=clock)
    sink.request(3)
    times = []
    for _ in range(3):
        await sink.expect_next("t")
        times.append(clock.now())
    assert times == [0.0, 2.0, 4.0]
    await sink.expect_complete()
    await clock.advance(2.0)  # the tick source sees the cancellation after its next sleep


async def test_virtual_timeout_fails_at_the_virtual_deadline() -> None:
    clock = VirtualClock()
    sink = Source.tick(10.0, "t", initial_delay=10.0).to_mat(TestSink.probe(timeout=4.0), Keep.right).run(clock=clock)
    sink.request(1)
    with pytest.raises(AssertionError, match="within 4.0 virtual seconds"):
        await sink.expect_next()
    assert clock.now() == 4.0
    assert await sink.expect_next(timeout=7.0) == "t"
    assert clock.now() == 10.0
    sink.cancel()
    await clock.advance(10.0)  # the tick source sees the cancellation after its next sleep


async def test_virtual_wait_that_nothing_can_satisfy_fails_at_once() -> None:
    clock = VirtualClock()
    src, sink = probes(clock)
    sink.request(1)
    with pytest.raises(AssertionError, match="no timer is pending"):
        await sink.expect_next()
    assert clock.now() == 0.0
    src.send_complete()
    await sink.expect_complete()


async def test_expect_no_message_advances_virtual_time() -> None:
    clock = VirtualClock()
    sink = Source.tick(5.0, "t", initial_delay=5.0).to_mat(TestSink.probe(), Keep.right).run(clock=clock)
    sink.request(1)
    await sink.expect_no_message(4.5)
    assert clock.now() == 4.5
    with pytest.raises(AssertionError, match="expect_no_message: got element 't'"):
        await sink.expect_no_message(1.0)
    assert clock.now() == 5.5
    sink.cancel()
    await clock.advance(5.0)  # the tick source sees the cancellation after its next sleep


async def test_explicit_clock_overrides_the_runs() -> None:
    clock = VirtualClock()
    # The run uses the loop clock; only the probe's waiting is virtual.
    src, sink = TestSource.probe().to_mat(TestSink.probe(clock=clock), Keep.both).run()
    await sink.expect_no_message(100.0)
    assert clock.now() == 100.0
    src.send_complete()
    await sink.expect_complete()


async def test_real_time_expect_no_message() -> None:
    src, sink = probes()
    await src.send_next(1)  # not requested: not a message
    await sink.expect_no_message(0.01)
    src.send_complete()
    sink.request(1)
    await sink.expect_next(1)
    await sink.expect_complete()
