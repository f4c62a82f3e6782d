"""with_timestamps: watermarks after chunks, bounded out-of-orderness, idle timeout, errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, Sink, Source, Stage, StageLogic, Watermark
from streamlib._dsl.module import Module
from streamlib._runtime.signals import Barrier, Signal
from streamlib.testing import VirtualClock, source_from_chunks, split_at


class _Recorder(Stage):
    """Passes elements on and records everything it sees, signals included, in order."""

    name = "recorder"

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def materialize(self, ctx: Any) -> tuple[StageLogic, None]:
        log = self.log

        class Logic(StageLogic):
            def on_chunk(self, chunk: list[Any]) -> list[Any]:
                log.extend(chunk)
                return chunk

            def on_signal(self, signal: Signal) -> None:
                log.append(signal)

        return Logic(), None


class _Inject(Stage):
    """Emits a given signal after every chunk (to feed signals into a stage under test)."""

    name = "inject"

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    def materialize(self, ctx: Any) -> tuple[StageLogic, None]:
        signal = self.signal

        class Logic(StageLogic):
            def on_chunk(self, chunk: list[Any]) -> list[Any]:
                self.emit_signal(signal)
                return chunk

        return Logic(), None


def _record(src: Source[Any, Any], log: list[Any]) -> Source[Any, Any]:
    return src.via_mat(_flow_of(_Recorder(log)), Keep.left)


def _flow_of(stage: Stage) -> Any:
    from streamlib import Flow

    return Flow(Module.of(stage))


async def test_watermark_follows_each_chunk_that_advanced_it() -> None:
    log: list[Any] = []
    src = source_from_chunks([[5, 3], [4], [10, 7], [2]]).with_timestamps(lambda x: x, max_out_of_orderness=2)
    await _record(src, log).run_with(Sink.ignore())
    assert log == [5, 3, Watermark(3), 4, 10, 7, Watermark(8), 2]


@settings(max_examples=50, deadline=None)
@given(
    ts=st.lists(st.integers(0, 10_000), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=8),
    bound=st.integers(0, 500),
)
async def test_watermarks_rise_and_never_pass_an_element_within_the_bound(
    ts: list[int], cuts: list[int], bound: int
) -> None:
    log: list[Any] = []
    await _record(source_from_chunks(split_at(ts, cuts)).with_timestamps(lambda x: x, bound), log).run_with(
        Sink.ignore()
    )
    marks = [x.time_ms for x in log if isinstance(x, Watermark)]
    assert marks == sorted(set(marks))
    assert [x for x in log if not isinstance(x, Watermark)] == ts
    # Each watermark is the running maximum before it, minus the bound.
    high = None
    for x in log:
        if isinstance(x, Watermark):
            assert high is not None and x.time_ms == high - bound
        else:
            high = x if high is None else max(high, x)


async def test_upstream_watermarks_are_replaced_and_barriers_pass() -> None:
    log: list[Any] = []
    src = (
        Source.from_iterable([1, 2])
        .via(_flow_of(_Inject(Watermark(999))))
        .via(_flow_of(_Inject(Barrier(7))))
        .with_timestamps(lambda x: x * 10)
    )
    await _record(src, log).run_with(Sink.ignore())
    assert Watermark(999) not in log
    assert log == [1, 2, Watermark(20), Barrier(7)]


async def test_timedelta_bound_and_bad_durations() -> None:
    log: list[Any] = []
    src = Source.from_iterable([5_000]).with_timestamps(lambda x: x, max_out_of_orderness=timedelta(seconds=2))
    await _record(src, log).run_with(Sink.ignore())
    assert log == [5_000, Watermark(3_000)]
    with pytest.raises(TypeError, match="int milliseconds or datetime.timedelta"):
        Source.empty().with_timestamps(lambda x: x, max_out_of_orderness=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        Source.empty().with_timestamps(lambda x: x, max_out_of_orderness=-1)
    with pytest.raises(ValueError, match="positive"):
        Source.empty().with_timestamps(lambda x: x, idle_timeout=0)


async def test_a_non_int_timestamp_fails_naming_the_stage() -> None:
    with pytest.raises(TypeError, match="int milliseconds since the epoch") as info:
        await Source.from_iterable([1.5]).with_timestamps(lambda x: x).run_with(Sink.ignore())
    assert "in stage 'with_timestamps'" in info.value.__notes__


async def test_idle_timeout_advances_the_watermark_by_the_quiet_time() -> None:
    clock = VirtualClock()
    log: list[Any] = []
    src = Source.queue(10).with_timestamps(lambda x: x, max_out_of_orderness=100, idle_timeout=5.0)
    queue, done = _record(src, log).to_mat(Sink.ignore(), Keep.both).run(clock=clock)
    await queue.offer(1_000)
    await clock.advance(1.0)
    assert log == [1_000, Watermark(900)]
    await clock.advance(4.0)  # 5 s quiet since the element
    assert log[-1] == Watermark(900 + 5_000)
    await clock.advance(5.0)
    assert log[-1] == Watermark(900 + 10_000)
    await queue.offer(2_000)  # behind the idle watermark: no new watermark
    await clock.advance(0.5)
    assert log[-1] == 2_000
    await clock.advance(5.0)  # quiet again: advances from the watermark at the last element
    assert log[-1] == Watermark(900 + 10_000 + 5_000)
    queue.complete()
    await clock.run(done)
