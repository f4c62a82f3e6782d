"""The ``Source.queue`` fast path: offers run the idle island behind the queue on the caller's stack.

Whatever the fast path does must not change a result: the same scripts of offers
(offer_nowait, awaited offer, offer_all, from one to three tasks, with or without
settling between them) through the same random operator chains give the same sink
output and the same error with the fast path on and off
(``STREAMLIB_QUEUE_FAST_PATH=0``), and both equal the lazy operator models of
``test_operators_model`` applied to the accepted elements. Offers made from inside
a sink callback (into the same queue, and into another stream's queue) are
delivered once each, in the order they were made.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, KillSwitches, Sink, Source
from streamlib._ops.sources import QueueClosedError
from streamlib.testing import VirtualClock, assert_no_running_graphs, settle
from test_operators_model import Boom, FailingMap, Op, any_op, boundaries, chain_op, failure_op, model_outcome

FAST_PATH_ENV = "STREAMLIB_QUEUE_FAST_PATH"
MODES = [pytest.param(True, id="fast-path-on"), pytest.param(False, id="fast-path-off")]


@contextmanager
def fast_path(on: bool) -> Iterator[None]:
    """Materialize graphs with the queue fast path on or off (the switch is read at materialization)."""
    previous = os.environ.get(FAST_PATH_ENV)
    os.environ[FAST_PATH_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[FAST_PATH_ENV]
        else:
            os.environ[FAST_PATH_ENV] = previous


class ProducerError(Exception):
    """What ``queue.fail`` fails the stream with."""


# -- scripts of offers -----------------------------------------------------------------------------

#: One producer action: ("nowait", [x]), ("offer", [x]), ("all", xs) or ("yield", []).
Action = tuple[str, list[int]]

element = st.integers(-12, 12)
action: st.SearchStrategy[Action] = st.one_of(
    st.tuples(st.just("nowait"), st.lists(element, min_size=1, max_size=1)),
    st.tuples(st.just("offer"), st.lists(element, min_size=1, max_size=1)),
    st.tuples(st.just("all"), st.lists(element, max_size=4)),
    st.tuples(st.just("yield"), st.just([])),
)


@dataclass
class Script:
    """Phases of concurrent producers (one action list per task), each optionally settled after."""

    phases: list[list[list[Action]]]
    settles: list[bool]
    end: str  # "complete" or "fail"

    def elements(self) -> int:
        return sum(len(xs) for phase in self.phases for task in phase for _, xs in task)


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    phases = draw(st.lists(st.lists(st.lists(action, max_size=6), min_size=1, max_size=3), min_size=1, max_size=4))
    settles = draw(st.lists(st.booleans(), min_size=len(phases), max_size=len(phases)))
    return Script(phases, settles, draw(st.sampled_from(["complete", "fail"])))


@dataclass
class Outcome:
    got: list[Any]
    error: BaseException | None
    accepted: list[int] = field(default_factory=list)


def build(ops: list[Op], bounds: list[bool], capacity: int) -> Any:
    src: Any = Source.queue(capacity)
    for op, boundary in zip(ops, bounds):
        if boundary:
            src = src.async_boundary()
        src = op.apply(src)
    if bounds[len(ops)]:
        src = src.async_boundary()
    return src


async def drive(src: Any, script: Script, max_chunk: int, channel_capacity: int) -> Outcome:
    """Run ``script`` against ``src`` and return what the sink got, the error and the accepted elements."""
    out = Outcome([], None)
    queue, done = src.to_mat(Sink.foreach(out.got.append), Keep.both).run(
        max_chunk=max_chunk, channel_capacity=channel_capacity
    )

    async def producer(actions: list[Action]) -> None:
        for kind, xs in actions:
            if kind == "yield":
                await asyncio.sleep(0)
            elif kind == "nowait":
                if queue.offer_nowait(xs[0]):
                    out.accepted.extend(xs)
            else:
                try:
                    await (queue.offer(xs[0]) if kind == "offer" else queue.offer_all(xs))
                except QueueClosedError:
                    continue
                out.accepted.extend(xs)

    for phase, settle_after in zip(script.phases, script.settles):
        await asyncio.gather(*(producer(actions) for actions in phase))
        if settle_after:
            await settle()
    if script.end == "complete":
        queue.complete()
    else:
        queue.fail(ProducerError("stopped by the producer"))
    try:
        await done
    except Exception as error:  # noqa: BLE001 - compared with the model's
        out.error = error
    await assert_no_running_graphs()
    return out


def expected(ops: list[Op], accepted: list[int], end: str) -> tuple[list[int], BaseException | None]:
    """The lazy models over the accepted elements, then the producer's end."""

    def feed() -> Iterator[int]:
        yield from accepted
        if end == "fail":
            raise ProducerError("stopped by the producer")

    return model_outcome(ops, feed())


def same_error(a: BaseException | None, b: BaseException | None) -> bool:
    return type(a) is type(b) and (a is None or a.args == b.args)  # type: ignore[union-attr]


@dataclass
class Chain:
    """Random ops with an optional failing map among them, rebuilt fresh for every run."""

    before: list[Op]
    after: list[Op]
    fail_at: int | None
    bounds: list[bool]

    def ops(self) -> list[Op]:
        middle = [] if self.fail_at is None else [failure_op(FailingMap(self.fail_at))]
        return [*self.before, *middle, *self.after]


@st.composite
def chains(draw: st.DrawFn, op: st.SearchStrategy[Op]) -> Chain:
    before = draw(st.lists(op, max_size=3))
    after = draw(st.lists(op, max_size=3))
    fail_at = draw(st.one_of(st.none(), st.integers(0, 12)))
    n = len(before) + len(after) + (fail_at is not None)
    return Chain(before, after, fail_at, draw(boundaries(n)))


def run_both(chain: Chain, script: Script, capacity: int, max_chunk: int, channels: int) -> dict[bool, Outcome]:
    outcomes = {}
    for on in (True, False):
        with fast_path(on):
            src = build(chain.ops(), chain.bounds, capacity)
            outcomes[on] = asyncio.run(drive(src, script, max_chunk, channels))
    return outcomes


def check(chain: Chain, script: Script, capacity: int, max_chunk: int, channels: int = 4096) -> None:
    """``capacity`` is the queue's; ``channels`` that of the channels at async boundaries."""
    outcomes = run_both(chain, script, capacity, max_chunk, channels)
    for out in outcomes.values():
        want, want_error = expected(chain.ops(), out.accepted, script.end)
        assert out.got == want
        assert same_error(out.error, want_error), (out.error, want_error)
        if isinstance(out.error, Boom):
            assert "in stage 'map'" in out.error.__notes__
    if capacity >= script.elements():
        # Nothing was ever refused for room: both modes took the same elements, so same results.
        on, off = outcomes[True], outcomes[False]
        assert on.got == off.got
        assert same_error(on.error, off.error), (on.error, off.error)


@settings(max_examples=150, deadline=None)
@given(
    chain=chains(chain_op),
    script=scripts(),
    max_chunk=st.sampled_from([1, 2, 3, 1024]),
    channels=st.sampled_from([1, 2, 4096]),
)
def test_chains_behind_a_queue_give_the_same_results_with_the_fast_path_on_and_off(
    chain: Chain, script: Script, max_chunk: int, channels: int
) -> None:
    """Small channels at the boundaries: an inline push may leave output for the task to flush."""
    check(chain, script, 4096, max_chunk, channels)


@settings(max_examples=150, deadline=None)
@given(chain=chains(any_op), script=scripts(), max_chunk=st.sampled_from([1, 3, 1024]))
def test_any_operators_behind_a_queue_give_the_same_results_with_the_fast_path_on_and_off(
    chain: Chain, script: Script, max_chunk: int
) -> None:
    check(chain, script, 4096, max_chunk)


@settings(max_examples=80, deadline=None)
@given(chain=chains(chain_op), script=scripts(), capacity=st.integers(1, 4), channels=st.sampled_from([1, 4096]))
def test_a_small_queue_refuses_or_holds_offers_but_delivers_what_it_accepted(
    chain: Chain, script: Script, capacity: int, channels: int
) -> None:
    """Backpressure: offers are refused (nowait) or wait (offer); what was accepted equals the model."""
    check(chain, script, capacity, 1024, channels)


# -- re-entrancy and several producers ----------------------------------------------------------------


@dataclass
class Stream:
    """One queue-fed stream whose sink callback may offer into this or the other stream's queue."""

    delivered: list[Any] = field(default_factory=list)
    accepted: list[Any] = field(default_factory=list)
    queue: Any = None
    done: Any = None

    def offer_nowait(self, x: Any) -> bool:
        # Recorded before the call: an inline offer delivers it (and anything it offers) at once.
        self.accepted.append(x)
        if self.queue.offer_nowait(x):
            return True
        self.accepted.remove(x)
        return False

    async def offer(self, x: Any) -> None:
        self.accepted.append(x)  # the queue is large enough: an awaited offer never waits here
        try:
            await self.queue.offer(x)
        except QueueClosedError:
            self.accepted.remove(x)


def start(stream: Stream, on_element: Callable[[Any], object], capacity: int) -> None:
    def sink(x: Any) -> None:
        stream.delivered.append(x)
        on_element(x)

    chain = Source.queue(capacity).map(lambda x: x).filter(lambda x: True)
    stream.queue, stream.done = chain.to_mat(Sink.foreach(sink), Keep.both).run()


@pytest.mark.parametrize("on", MODES)
async def test_a_sink_callback_offering_into_its_own_queue_keeps_the_order_of_the_offers(on: bool) -> None:
    a = Stream()

    def again(x: int) -> None:
        if x % 100 < 3:
            a.offer_nowait(x + 1)

    with fast_path(on):
        start(a, again, 100)
    a.offer_nowait(0)
    a.offer_nowait(100)
    await settle()
    a.offer_nowait(200)
    await settle()
    a.queue.complete()
    a.offer_nowait(300)  # refused: the queue is complete
    await a.done
    assert sorted(a.delivered) == [0, 1, 2, 3, 100, 101, 102, 103, 200, 201, 202, 203]
    assert a.delivered == a.accepted


@pytest.mark.parametrize("on", MODES)
async def test_sink_callbacks_offering_into_each_others_queues(on: bool) -> None:
    """A's sink offers into B (B may run inline inside A's), B's sink offers back into A."""
    a, b = Stream(), Stream()
    with fast_path(on):
        start(a, lambda x: b.offer_nowait(("b", x[1] + 1)) if x[1] < 6 else None, 100)
        start(b, lambda x: a.offer_nowait(("a", x[1] + 1)) if x[1] < 6 else None, 100)
    a.offer_nowait(("a", 0))
    b.offer_nowait(("b", 0))
    await settle()
    a.queue.complete()
    b.queue.complete()
    await asyncio.gather(a.done, b.done)
    assert a.delivered == a.accepted
    assert b.delivered == b.accepted
    # a0 -> b1 -> a2 -> b3 -> a4 -> b5 -> a6 and b0 -> a1 -> b2 -> a3 -> b4 -> a5 -> b6
    assert sorted(a.delivered) == [("a", n) for n in range(7)]
    assert sorted(b.delivered) == [("b", n) for n in range(7)]


#: A producer step: ("nowait"|"offer", stream index) or ("yield", 0).
Step = tuple[str, int]


@settings(max_examples=150, deadline=None)
@given(
    producers=st.lists(
        st.lists(st.tuples(st.sampled_from(["nowait", "offer", "yield"]), st.integers(0, 1)), max_size=8),
        min_size=1,
        max_size=3,
    ),
    echoes=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2)), min_size=2, max_size=2),
    settle_between=st.booleans(),
)
def test_offers_from_several_tasks_and_sink_callbacks_are_delivered_once_in_order(
    producers: list[list[Step]], echoes: list[tuple[int, int]], settle_between: bool
) -> None:
    """Each stream's sink sees exactly the elements its queue accepted, in the order they were offered.

    Stream ``i``'s sink echoes each element of depth below ``echoes[i][1]`` into stream
    ``echoes[i][0]`` (itself or the other one) one level deeper.
    """

    async def main(on: bool) -> list[list[Any]]:
        streams = [Stream(), Stream()]

        def echo(i: int) -> Callable[[Any], None]:
            target, depth = echoes[i]

            def on_element(x: Any) -> None:
                if x[2] < depth:
                    streams[target].offer_nowait((x[0], x[1], x[2] + 1, i))

            return on_element

        with fast_path(on):
            for i, stream in enumerate(streams):
                start(stream, echo(i), 4096)

        async def producer(p: int, steps: list[Step]) -> None:
            for k, (kind, i) in enumerate(steps):
                x = (p, k, 0, None)
                if kind == "yield":
                    await asyncio.sleep(0)
                elif kind == "nowait":
                    streams[i].offer_nowait(x)
                else:
                    await streams[i].offer(x)
                if settle_between and k % 3 == 2:
                    await asyncio.sleep(0)

        await asyncio.gather(*(producer(p, steps) for p, steps in enumerate(producers)))
        for stream in streams:
            stream.queue.complete()
        await asyncio.gather(*(stream.done for stream in streams))
        for stream in streams:
            assert stream.delivered == stream.accepted
        await assert_no_running_graphs()
        return [sorted(map(repr, s.delivered)) for s in streams]

    # The same elements arrive with the fast path on and off (their order may differ only
    # where an echo is offered at a different moment, which the check above covers).
    assert asyncio.run(main(True)) == asyncio.run(main(False))


# -- contracts on the fast path, step by step ---------------------------------------------------------


async def test_an_idle_stream_takes_an_offer_on_the_callers_stack() -> None:
    got: list[int] = []
    with fast_path(True):
        queue, done = Source.queue(10).map(lambda x: x * 2).filter(lambda x: x > 0).to_mat(
            Sink.foreach(got.append), Keep.both
        ).run()
    await settle()
    assert queue.offer_nowait(1)
    assert got == [2]  # no event-loop turn in between
    await queue.offer(2)
    await queue.offer_all([3, -1, 4])
    assert got == [2, 4, 6, 8]
    queue.complete()
    await done


async def test_with_the_fast_path_off_an_offer_waits_for_the_islands_task() -> None:
    got: list[int] = []
    with fast_path(False):
        queue, done = Source.queue(10).map(lambda x: x * 2).to_mat(Sink.foreach(got.append), Keep.both).run()
    await settle()
    assert queue.offer_nowait(1)
    assert got == []
    await settle()
    assert got == [2]
    queue.complete()
    await done


@pytest.mark.parametrize("on", MODES)
async def test_an_error_in_a_stage_fails_the_stream_and_never_reaches_the_offering_caller(on: bool) -> None:
    got: list[int] = []

    def f(x: int) -> int:
        if x == 3:
            raise KeyError(x)
        return x

    with fast_path(on):
        queue, done = Source.queue(10).map(f).to_mat(Sink.foreach(got.append), Keep.both).run()
    await settle()
    assert queue.offer_nowait(1)
    await queue.offer_all([2, 3, 4])  # 2 is delivered, then the failure: no exception here
    assert queue.offer_nowait(5) in (True, False)
    with pytest.raises(KeyError) as info:
        await done
    assert "in stage 'map'" in info.value.__notes__
    assert got == [1, 2]
    await settle()
    assert not queue.offer_nowait(6)
    with pytest.raises(QueueClosedError):
        await queue.offer(7)


@pytest.mark.parametrize("on", MODES)
async def test_a_sink_callback_raising_fails_the_stream_not_the_producer(on: bool) -> None:
    def sink(x: int) -> None:
        raise ValueError(f"bad {x}")

    with fast_path(on):
        queue, done = Source.queue(10).to_mat(Sink.foreach(sink), Keep.both).run()
    await settle()
    await queue.offer(1)
    with pytest.raises(ValueError, match="bad 1"):
        await done


@pytest.mark.parametrize("on", MODES)
async def test_take_completes_the_stream_and_the_queue_closes(on: bool) -> None:
    got: list[int] = []
    with fast_path(on):
        queue, done = Source.queue(10).take(2).to_mat(Sink.foreach(got.append), Keep.both).run()
    await settle()
    assert queue.offer_nowait(1)
    assert queue.offer_nowait(2)
    queue.offer_nowait(3)
    await done
    assert got == [1, 2]
    await settle()
    assert not queue.offer_nowait(4)
    with pytest.raises(QueueClosedError):
        await queue.offer(5)


@pytest.mark.parametrize("on", MODES)
async def test_head_sink_completes_on_the_first_offer(on: bool) -> None:
    with fast_path(on):
        queue, head = Source.queue(10).map(lambda x: x + 1).to_mat(Sink.head(), Keep.both).run()
    await settle()
    await queue.offer(41)
    assert await head == 42


@pytest.mark.parametrize("on", MODES)
async def test_a_full_stream_refuses_or_holds_offers(on: bool) -> None:
    """Queue (2) -> map -> Sink.queue(1): at most the two buffers and one chunk are in flight."""
    with fast_path(on):
        queue, out = Source.queue(2).map(lambda x: x).to_mat(Sink.queue(1), Keep.both).run()
    await settle()
    accepted = 0
    while True:
        if not queue.offer_nowait(accepted):
            await settle()
            if not queue.offer_nowait(accepted):
                break
        accepted += 1
        assert accepted <= 2 + 1 + 1  # the queue's buffer, the sink queue's, one chunk on its way
    waiting = asyncio.ensure_future(queue.offer(accepted))
    await settle()
    assert not waiting.done()  # backpressure: the awaited offer waits while everything is full
    pulled = [await out.pull()]
    await settle()
    while not waiting.done():
        pulled.append(await out.pull())
        await settle()
    queue.complete()
    async for x in out:
        pulled.append(x)
    assert pulled == list(range(accepted + 1))


@pytest.mark.parametrize("on", MODES)
async def test_awaited_offers_from_several_tasks_on_a_full_queue_all_get_through(on: bool) -> None:
    got: list[int] = []
    with fast_path(on):
        queue, done = Source.queue(1).async_boundary().to_mat(Sink.foreach(got.append), Keep.both).run(
            channel_capacity=1
        )

    async def producer(base: int) -> None:
        for i in range(5):
            await queue.offer(base + i)

    await asyncio.gather(producer(0), producer(100), producer(200))
    queue.complete()
    await done
    assert sorted(got) == sorted([*range(5), *range(100, 105), *range(200, 205)])
    for base in (0, 100, 200):
        assert [x for x in got if base <= x < base + 100] == list(range(base, base + 5))


@pytest.mark.parametrize("on", MODES)
async def test_offers_into_a_cancelled_run_are_dropped(on: bool) -> None:
    got: list[int] = []
    with fast_path(on):
        (queue, done), graph = Source.queue(10).to_mat(Sink.foreach(got.append), Keep.both).run_graph()
    await settle()
    await queue.offer(1)
    await settle()
    graph.cancel()
    queue.offer_nowait(2)  # the run is being cancelled: its island no longer takes anything
    await graph.wait()
    assert not queue.offer_nowait(3)
    assert got == [1]
    assert done.cancelled()


@pytest.mark.parametrize("on", MODES)
async def test_a_kill_switch_abort_overtakes_offers_behind_it(on: bool) -> None:
    got: list[int] = []
    release = asyncio.Event()

    async def slow(x: int) -> int:
        await release.wait()
        return x

    with fast_path(on):
        (queue, switch), done = (
            Source.queue(100)
            .map(lambda x: x)
            .via_mat(KillSwitches.single(), Keep.both)
            .map_async(1, slow)
            .to_mat(Sink.foreach(got.append), Keep.both)
            .run()
        )
    await settle()
    for x in range(5):
        assert queue.offer_nowait(x)
    await settle()
    switch.abort(RuntimeError("stop"))
    release.set()
    with pytest.raises(RuntimeError, match="stop"):
        await done
    assert got == []
    await settle()
    assert not queue.offer_nowait(9)


@pytest.mark.parametrize("on", MODES)
async def test_a_timed_stage_behind_the_queue_still_runs_on_its_clock(on: bool) -> None:
    clock = VirtualClock()
    got: list[list[int]] = []
    with fast_path(on):
        queue, done = Source.queue(10).grouped_within(3, 1.0).to_mat(Sink.foreach(got.append), Keep.both).run(
            clock=clock
        )
    await clock.settle()
    assert queue.offer_nowait(1)
    await clock.settle()
    assert got == []
    await clock.advance(1.0)
    assert got == [[1]]
    for x in (2, 3, 4, 5):
        queue.offer_nowait(x)
    await clock.settle()
    assert got == [[1], [2, 3, 4]]
    queue.complete()
    await done
    assert got == [[1], [2, 3, 4], [5]]


@pytest.mark.parametrize("on", MODES)
async def test_watermarks_made_behind_the_queue_pass_with_the_elements(on: bool) -> None:
    """Event time behind a queue: a tumbling window over offered events closes as the watermark passes."""
    from streamlib import TumblingWindows

    got: list[Any] = []
    with fast_path(on):
        queue, done = (
            Source.queue(10)
            .with_timestamps(0)
            .key_by(1)
            .window(TumblingWindows(10))
            .count()
            .to_mat(Sink.foreach(got.append), Keep.both)
            .run()
        )
    await settle()
    for ts in (1, 2, 11, 12, 25):
        await queue.offer((ts, "x"))
    await settle()
    closed = list(got)
    queue.complete()
    await done
    assert len(closed) >= 2  # windows [0, 10) and [10, 20) closed before the end of the stream
    assert len(got) == 3
