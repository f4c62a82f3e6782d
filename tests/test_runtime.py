"""The runtime: independent runs, materialized values, failure, cancellation, backpressure."""

from __future__ import annotations

import asyncio
import gc
import operator
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import (
    Broadcast,
    Flow,
    GraphBuilder,
    Keep,
    KillSwitch,
    KillSwitches,
    Merge,
    RunningGraph,
    Sink,
    Source,
)
from streamlib.testing import VirtualClock, assert_no_running_graphs, settle, source_from_chunks, split_at


class Boom(Exception):
    pass


def fails_on(bad: int) -> Any:
    def f(x: int) -> int:
        if x == bad:
            raise Boom(f"bad element {x}")
        return x

    return f


# -- one blueprint, many runs -------------------------------------------------------------

STATEFUL = (
    Source.from_iterable(range(1000))
    .scan(0, operator.add)
    .zip_with_index()
    .async_boundary()
    .map(lambda p: p[0] - p[1])
    .grouped(7)
    .map(sum)
    .take(100)
)


def stateful_model() -> list[int]:
    sums = [sum(range(i + 1)) for i in range(-1, 999)]
    shifted = [s - i for i, s in enumerate(sums)]
    groups = [shifted[i : i + 7] for i in range(0, len(shifted), 7)]
    return [sum(g) for g in groups][:100]


async def test_the_same_blueprint_runs_twice_independently() -> None:
    first = await STATEFUL.run_with(Sink.collect())
    second = await STATEFUL.run_with(Sink.collect())
    assert first == second == stateful_model()


async def test_the_same_blueprint_runs_concurrently() -> None:
    results = await asyncio.gather(*(STATEFUL.run_with(Sink.collect()) for _ in range(4)))
    assert results == [stateful_model()] * 4


async def test_a_reused_sink_and_flow_materialize_afresh() -> None:
    flow = Flow.scan(0, operator.add).drop(1)
    sink = Sink.fold(0, operator.add)
    a = Source.from_iterable([1, 2, 3]).via(flow).run_with(sink)
    b = Source.from_iterable([10, 20]).via(flow).run_with(sink)
    assert (await a, await b) == (1 + 3 + 6, 10 + 30)


# -- materialized values ----------------------------------------------------------------------


async def test_keep_left_right_both_none() -> None:
    src = Source.from_iterable([1, 2, 3]).watch_termination()
    sink = Sink.fold(0, operator.add)

    left = src.to_mat(sink, Keep.left).run()
    assert isinstance(left, asyncio.Future)
    assert await left is None

    right = src.to_mat(sink, Keep.right).run()
    assert await right == 6

    done, total = src.to_mat(sink, Keep.both).run()
    assert (await done, await total) == (None, 6)

    assert src.to_mat(sink, Keep.none).run() is None
    await assert_no_running_graphs()


async def test_via_mat_combines_values_and_map_materialized_value() -> None:
    flow = Flow.map(lambda x: x + 1).watch_termination()
    queue, (done, total) = (
        Source.queue(10)
        .via_mat(flow, Keep.both)
        .to_mat(Sink.fold(0, operator.add), Keep.both)
        .map_materialized_value(lambda m: (m[0][0], (m[0][1], m[1])))
        .run()
    )
    for x in (1, 2, 3):
        await queue.offer(x)
    queue.complete()
    assert (await done, await total) == (None, 9)


async def test_source_via_keeps_the_source_value_and_to_keeps_the_source_value() -> None:
    queue = Source.queue(4).via(Flow.map(str)).to(Sink.ignore()).run()
    await queue.offer(1)
    queue.complete()
    await assert_no_running_graphs()


async def test_flow_to_mat_makes_a_sink_with_combined_value() -> None:
    sink = Flow.map(lambda x: x * 2).watch_termination().to_mat(Sink.collect(), Keep.both)
    done, items = Source.from_iterable([1, 2]).run_with(sink)
    assert (await done, await items) == (None, [2, 4])


def test_run_outside_an_event_loop_is_a_clear_error() -> None:
    graph = Source.single(1).to(Sink.ignore())
    with pytest.raises(RuntimeError, match="asyncio event loop"):
        graph.run()


def test_building_never_runs_anything() -> None:
    calls: list[int] = []
    Source.from_iterable([1]).map(calls.append).to(Sink.ignore())
    assert calls == []


# -- failure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "stage"),
    [
        (lambda src: src.map(fails_on(3)).run_with(Sink.ignore()), "map"),
        (lambda src: src.filter(lambda x: fails_on(3)(x) > 0).run_with(Sink.ignore()), "filter"),
        (lambda src: src.scan(0, lambda a, x: a + fails_on(3)(x)).run_with(Sink.ignore()), "scan"),
        (lambda src: src.fold(0, lambda a, x: a + fails_on(3)(x)).run_with(Sink.ignore()), "fold"),
        (lambda src: src.run_with(Sink.fold(0, lambda a, x: a + fails_on(3)(x))), "fold"),
        (lambda src: src.run_with(Sink.foreach(fails_on(3))), "foreach"),
        (lambda src: src.async_boundary().run_with(Sink.reduce(lambda a, x: a + fails_on(3)(x))), "reduce"),
    ],
)
async def test_a_user_function_error_fails_the_sink_with_its_type_and_stage(build: Any, stage: str) -> None:
    with pytest.raises(Boom, match="bad element 3") as info:
        await build(Source.from_iterable(range(10)))
    assert f"in stage '{stage}'" in info.value.__notes__


async def test_an_async_foreach_error_fails_the_sink() -> None:
    async def f(x: int) -> None:
        fails_on(2)(x)

    with pytest.raises(Boom) as info:
        await Source.from_iterable(range(5)).run_with(Sink.foreach(f))
    assert "in stage 'foreach'" in info.value.__notes__


async def test_a_failed_source_fails_the_sink_with_the_same_error() -> None:
    error = Boom("no source")
    with pytest.raises(Boom) as info:
        await Source.failed(error).map(lambda x: x).run_with(Sink.collect())
    assert info.value is error
    assert "in stage 'failed'" in error.__notes__


async def test_a_generator_failing_midway_delivers_what_it_yielded_first() -> None:
    def gen() -> Iterator[int]:
        yield 1
        yield 2
        raise Boom("generator")

    got: list[int] = []
    with pytest.raises(Boom) as info:
        await Source.from_iterator(gen).async_boundary().run_with(Sink.foreach(got.append))
    assert got == [1, 2]
    assert "in stage 'from_iterator'" in info.value.__notes__


async def test_unfold_errors_name_the_stage() -> None:
    def step(s: int) -> tuple[int, int] | None:
        return (s + 1, fails_on(4)(s))

    with pytest.raises(Boom) as info:
        await Source.unfold(0, step).run_with(Sink.collect())
    assert "in stage 'unfold'" in info.value.__notes__


async def test_failure_crosses_async_boundaries_with_the_same_exception() -> None:
    raised: list[Boom] = []

    def f(x: int) -> int:
        if x == 500:
            raised.append(Boom("deep"))
            raise raised[0]
        return x

    got: list[int] = []
    fut = (
        Source.from_iterable(range(1000))
        .map(f)
        .async_boundary()
        .map(lambda x: x)
        .async_boundary()
        .to_mat(Sink.foreach(got.append), Keep.right)
        .run(max_chunk=16)
    )
    with pytest.raises(Boom) as info:
        await fut
    assert info.value is raised[0]
    assert got == list(range(500))


async def test_failure_reaches_every_branch_of_a_broadcast() -> None:
    b = GraphBuilder()
    src = b.add(Source.from_iterable(range(100)).map(fails_on(50)))
    bcast = b.add(Broadcast(2))
    s0, s1 = b.add(Sink.collect()), b.add(Sink.ignore())
    src >> bcast
    bcast.out(0) >> s0
    bcast.out(1) >> Flow.map(lambda x: x) >> s1
    f0, f1 = b.to_runnable([s0, s1]).run()
    for fut in (f0, f1):
        with pytest.raises(Boom, match="bad element 50"):
            await fut


async def test_a_failing_merge_input_fails_downstream_and_cancels_the_endless_input() -> None:
    b = GraphBuilder()
    endless = b.add(Source.repeat(0))
    failing = b.add(Source.from_iterable(range(1, 10)).map(fails_on(5)))
    merge = b.add(Merge(2))
    sink = b.add(Sink.ignore())
    endless >> merge.inp(0)
    failing >> merge.inp(1)
    merge >> sink
    fut, graph = b.to_runnable(sink).run_graph()
    with pytest.raises(Boom):
        await fut
    await graph.wait()
    assert graph.done


# -- completion and cancellation --------------------------------------------------------------


@pytest.mark.parametrize("boundary", [False, True])
async def test_take_cancels_an_endless_upstream_and_the_run_ends(boundary: bool) -> None:
    src = Source.repeat(7)
    if boundary:
        src = src.async_boundary()
    fut, graph = src.take(5).to_mat(Sink.collect(), Keep.right).run_graph()
    assert await fut == [7] * 5
    await graph.wait()
    assert graph.done


@pytest.mark.parametrize("boundary", [False, True])
async def test_head_on_an_endless_source_ends_the_run(boundary: bool) -> None:
    src = Source.unfold(0, lambda s: (s + 1, s)).map(lambda x: x * 2)
    if boundary:
        src = src.async_boundary()
    fut, graph = src.to_mat(Sink.head(), Keep.right).run_graph()
    assert await fut == 0
    await graph.wait()
    assert graph.done


async def test_cancelling_the_running_graph_cancels_the_sink_future() -> None:
    fut, graph = Source.repeat(1).async_boundary().to_mat(Sink.ignore(), Keep.right).run_graph()
    await settle()
    graph.cancel()
    await graph.wait()
    assert fut.cancelled()


async def test_an_idle_island_passes_a_downstream_cancellation_upstream_at_once() -> None:
    queue, pull = Source.queue(4).map(lambda x: x).to_mat(Sink.queue(4), Keep.both).run()
    await settle()
    pull.cancel()
    try:
        await assert_no_running_graphs(timeout=0.5)
        assert queue.cancelled
    finally:
        queue.complete()  # lets the run end either way


# -- latency: no waiting for chunks to fill ------------------------------------------------


@pytest.mark.parametrize("boundaries", [0, 2])
async def test_one_element_reaches_the_puller_at_once(boundaries: int) -> None:
    flow: Flow[Any, Any, Any] = Flow()
    for i in range(5):
        flow = flow.map(lambda x: x + 1)
        if i < boundaries:
            flow = flow.async_boundary()
    queue, pull = Source.queue(64).via(flow).to_mat(Sink.queue(64), Keep.both).run()
    for x in (10, 20, 30):
        await queue.offer(x)
        # Nothing else is offered: the element must come out alone, not wait for company.
        assert await asyncio.wait_for(pull.pull(), timeout=10) == x + 5
    queue.complete()
    assert await pull.pull() is None


# -- backpressure -------------------------------------------------------------------------------


async def test_offer_waits_while_the_queue_is_full() -> None:
    capacity, pull_capacity = 4, 2
    queue, pull = Source.queue(capacity).to_mat(Sink.queue(pull_capacity), Keep.both).run()
    offered = 0

    async def producer() -> None:
        nonlocal offered
        for i in range(100):
            await queue.offer(i)
            offered += 1
        queue.complete()

    task = asyncio.create_task(producer())
    await settle()
    # The queue, one element held by the pump between the channels, and the pull buffer.
    assert 0 < offered <= capacity + 1 + pull_capacity
    assert not task.done()
    assert queue.offer_nowait(-1) is False
    got = [x async for x in pull]
    await task
    assert got == list(range(100))


async def test_a_slow_consumer_bounds_the_elements_in_flight() -> None:
    capacity, max_chunk, total = 8, 4, 3000
    produced = consumed = peak = 0

    def numbers() -> Iterator[int]:
        nonlocal produced
        for i in range(total):
            produced += 1
            yield i

    async def slow(x: int) -> None:
        nonlocal consumed, peak
        peak = max(peak, produced - consumed)
        consumed += 1
        await asyncio.sleep(0)

    fut = (
        Source.from_iterator(numbers)
        .map(lambda x: x + 1)
        .async_boundary()
        .map(lambda x: x - 1)
        .to_mat(Sink.foreach(slow), Keep.right)
        .run(channel_capacity=capacity, max_chunk=max_chunk)
    )
    await fut
    assert consumed == total
    # Two channels (after the boundary, before the async sink), each holding less than
    # capacity + one chunk; each of the two islands and the sink holds at most one chunk.
    bound = 2 * (capacity + max_chunk) + 3 * max_chunk
    assert capacity < peak <= bound


async def test_a_slow_sink_queue_holds_back_a_fast_source() -> None:
    pulled_from_source = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled_from_source
        for i in range(100_000):
            pulled_from_source += 1
            yield i

    pull, graph = (
        Source.from_iterator(numbers)
        .async_boundary()
        .map(lambda x: x)
        .to_mat(Sink.queue(16), Keep.right)
        .run_graph(channel_capacity=32, max_chunk=8)
    )
    await settle()
    # Two channels (the boundary's, the sink queue's), each holding less than its capacity
    # plus a chunk, and a chunk in hand in each of the two islands.
    assert 16 + 32 <= pulled_from_source <= (32 + 8) + (16 + 8) + 2 * 8
    assert [await pull.pull() for _ in range(10)] == list(range(10))
    pull.cancel()
    await graph.wait()


# -- watch_termination ---------------------------------------------------------------------------


async def test_watch_termination_completes_with_the_stream() -> None:
    done, items = Source.from_iterable([1, 2]).watch_termination().to_mat(Sink.collect(), Keep.both).run()
    assert await items == [1, 2]
    assert await done is None


async def test_watch_termination_fails_with_the_stream() -> None:
    done, items = (
        Source.from_iterable([1, 2, 3]).map(fails_on(2)).watch_termination().to_mat(Sink.collect(), Keep.both).run()
    )
    with pytest.raises(Boom):
        await items
    with pytest.raises(Boom):
        await done


async def test_watch_termination_completes_when_downstream_cancels() -> None:
    done, items = Source.repeat(1).watch_termination().take(3).to_mat(Sink.collect(), Keep.both).run()
    assert await items == [1, 1, 1]
    assert await done is None


async def test_watch_termination_is_cancelled_when_the_run_is_cancelled() -> None:
    done, fut = Source.repeat(1).watch_termination().async_boundary().to_mat(Sink.ignore(), Keep.both).run()
    await settle()
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await done


# -- kill switches ---------------------------------------------------------------------------------


async def _counted_endless(switch_flow: Any) -> tuple[Any, asyncio.Future[None], asyncio.Event, list[int]]:
    seen: list[int] = []
    enough = asyncio.Event()

    def record(x: int) -> None:
        seen.append(x)
        if len(seen) >= 10:
            enough.set()

    switch, done = (
        Source.unfold(0, lambda s: (s + 1, s))
        .via_mat(switch_flow, Keep.right)
        .to_mat(Sink.foreach(record), Keep.both)
        .run(max_chunk=4)
    )
    return switch, done, enough, seen


async def test_kill_switch_shutdown_completes_the_stream() -> None:
    switch, done, enough, seen = await _counted_endless(KillSwitches.single())
    assert isinstance(switch, KillSwitch)
    await enough.wait()
    switch.shutdown()
    assert await done is None
    assert seen == list(range(len(seen))) and len(seen) >= 10


async def test_kill_switch_abort_fails_the_stream_with_the_error() -> None:
    switch, done, enough, _seen = await _counted_endless(KillSwitches.single())
    await enough.wait()
    error = Boom("aborted")
    switch.abort(error)
    with pytest.raises(Boom) as info:
        await done
    assert info.value is error


async def test_kill_switch_triggered_before_elements_flow() -> None:
    switch, done = Source.repeat(1).via_mat(KillSwitches.single(), Keep.right).to_mat(Sink.collect(), Keep.both).run()
    switch.shutdown()
    assert await done == []


async def test_a_shared_kill_switch_stops_every_stream_it_is_in() -> None:
    shared = KillSwitches.shared("both")
    runs = [await _counted_endless(shared.flow()) for _ in range(2)]
    for _switch, _done, enough, _seen in runs:
        await enough.wait()
    shared.shutdown()
    for _switch, done, _enough, _seen in runs:
        assert await done is None


async def test_a_shared_kill_switch_keeps_nothing_of_the_streams_that_ended() -> None:
    """A long-lived shared switch keeps none of the streams that ended through it alive, whether they
    ended on their own or it stopped them."""
    shared = KillSwitches.shared("long-lived")

    class Element:
        pass

    async def run_to_the_end() -> list[weakref.ref[Element]]:
        elements = [Element() for _ in range(5)]
        assert await Source.from_iterable(elements).via(shared.flow()).run_with(Sink.collect()) == elements
        return [weakref.ref(e) for e in elements]

    async def run_until_stopped() -> weakref.ref[Element]:
        element, flowing = Element(), asyncio.Event()
        done = Source.repeat(element).via(shared.flow()).run_with(Sink.foreach(lambda _: flowing.set()))
        await flowing.wait()
        shared.shutdown()
        assert await done is None
        return weakref.ref(element)

    refs: list[weakref.ref[Element]] = []
    for _ in range(3):
        refs += await run_to_the_end()
    refs.append(await run_until_stopped())
    await assert_no_running_graphs()
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []
    shared.abort(Boom("late"))  # already shut down: changes nothing
    assert await Source.repeat(1).via(shared.flow()).run_with(Sink.collect()) == []  # stopped at once


async def test_a_shared_kill_switch_abort_fails_every_stream() -> None:
    shared = KillSwitches.shared()
    runs = [await _counted_endless(shared.flow()) for _ in range(2)]
    error = Boom("all")
    shared.abort(error)
    for _switch, done, _enough, _seen in runs:
        with pytest.raises(Boom):
            await done


class _GatedSink:
    """An async ``foreach`` that takes one element and then waits until the test opens the gate."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def sink(self) -> Sink[int, asyncio.Future[None]]:
        async def take(x: int) -> None:
            self.got.append(x)
            self.waiting.set()
            await self.gate.wait()

        return Sink.foreach(take)


#: What may stand between a kill switch and a slow sink: the abort must overtake what each holds.
_BETWEEN: dict[str, Callable[[Source[int, Any]], Source[int, Any]]] = {
    "nothing": lambda s: s,
    "map": lambda s: s.map(lambda x: x),
    "async_boundary": lambda s: s.async_boundary().map(lambda x: x).async_boundary(),
    "buffer": lambda s: s.buffer(50),
    "map_async": lambda s: s.map_async(3, _async_identity),
    "delay": lambda s: s.delay(0.0),
    "also_to": lambda s: s.also_to(Sink.ignore()),
    "group_by": lambda s: s.group_by(2, lambda x: x % 2).map_async(1, _async_identity).merge_substreams(),
}


async def _async_identity(x: int) -> int:
    return x


@pytest.mark.parametrize("between", sorted(_BETWEEN))
@pytest.mark.parametrize("shared", [False, True])
async def test_kill_switch_abort_overtakes_the_elements_buffered_before_a_slow_sink(
    between: str, shared: bool
) -> None:
    sink = _GatedSink()
    shared_switch = KillSwitches.shared("s")
    flow = shared_switch.flow() if shared else KillSwitches.single()
    src = Source.unfold(0, lambda s: (s + 1, s)).via_mat(flow, Keep.right)
    switch, done = _BETWEEN[between](src).to_mat(sink.sink(), Keep.both).run(channel_capacity=16)
    if shared:
        switch = shared_switch
    await sink.waiting.wait()
    await settle()  # every channel before the sink fills up
    assert not done.done()
    error = Boom("aborted")
    switch.abort(error)
    await settle()
    # The sink's future failed with the error while the sink still held its first element:
    # nothing buffered before it was delivered first.
    assert done.done()
    with pytest.raises(Boom) as info:
        await done
    assert info.value is error
    assert sink.got == [0]


@pytest.mark.parametrize("between", sorted(_BETWEEN))
async def test_kill_switch_shutdown_drains_what_is_buffered_before_a_slow_sink(between: str) -> None:
    sink = _GatedSink()
    switch, done = (
        _BETWEEN[between](Source.unfold(0, lambda s: (s + 1, s)).via_mat(KillSwitches.single(), Keep.right))
        .to_mat(sink.sink(), Keep.both)
        .run(channel_capacity=16)
    )
    await sink.waiting.wait()
    await settle()
    switch.shutdown()
    await settle()
    assert not done.done()  # the buffered elements are still to come
    sink.gate.set()
    assert await done is None
    if between == "group_by":
        assert sorted(sink.got) == list(range(len(sink.got)))
    else:
        assert sink.got == list(range(len(sink.got)))
    assert len(sink.got) > 16


# -- describe ------------------------------------------------------------------------------------


def test_describe_gives_mermaid_naming_the_stages() -> None:
    graph = Source.from_iterable([1]).map(str).filter(bool).async_boundary().to(Sink.fold("", operator.add))
    text = graph.describe()
    lines = text.splitlines()
    assert lines[0] == "graph LR"
    for name in ("from_iterable", "map", "filter", "async_boundary", "fold"):
        assert any(f'["{name}"]' in line for line in lines), name
    assert sum("-->" in line for line in lines) == 4


def test_describe_open_blueprints_and_dot() -> None:
    flow_text = Flow.map(str).describe()
    assert "in((in))" in flow_text and "out((out))" in flow_text
    dot = Source.single(1).map(str).describe("dot")
    assert dot.startswith("digraph") and 'label="map"' in dot
    with pytest.raises(ValueError, match="unknown format"):
        Source.single(1).describe("svg")


async def test_run_graph_returns_the_running_graph() -> None:
    value, graph = Source.from_iterable(range(3)).to_mat(Sink.collect(), Keep.right).run_graph()
    assert isinstance(graph, RunningGraph)
    await graph.wait()
    assert graph.done and value.result() == [0, 1, 2]


# -- bad input -----------------------------------------------------------------------------------


def test_wrong_blueprint_kinds_are_clear_errors() -> None:
    src, flow, sink = Source.single(1), Flow.map(str), Sink.ignore()
    with pytest.raises(TypeError, match=r"via\(\) takes a Flow, got Sink"):
        src.via(sink)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"via_mat\(\) takes a Flow, got Source"):
        src.via_mat(src, Keep.both)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"to\(\) takes a Sink, got Flow"):
        src.to(flow)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"to_mat\(\) takes a Sink, got Flow"):
        flow.to_mat(flow, Keep.right)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"via\(\) takes a Flow, got Sink"):
        flow.via(sink)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["max_chunk", "channel_capacity"])
@pytest.mark.parametrize("value", [0, -3, 1.5])
async def test_run_options_must_be_positive_ints(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{option} must be a positive int, got {value}"):
        Source.single(1).to(Sink.ignore()).run(**{option: value})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Source.queue(0), "queue capacity must be at least 1"),
        (lambda: Sink.queue(0), "queue capacity must be at least 1"),
        (lambda: Source.single(1).take(-1), r"take\(n\) needs a non-negative int"),
        (lambda: Source.single(1).drop(-1), r"drop\(n\) needs a non-negative int"),
        (lambda: Source.single(1).grouped(0), r"grouped\(n\) needs n >= 1"),
        (lambda: Source.single(1).sliding(2, 0), r"sliding\(n, step\) needs n >= 1 and step >= 1"),
    ],
)
def test_bad_operator_arguments_fail_when_building(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


# -- failures are in band across every async stage ---------------------------------------------


def _flatten(xs: list[int]) -> list[int]:
    return xs


def _async_stages() -> dict[str, tuple[bool, Callable[[Source[int, None], Any], Source[int, None]]]]:
    """Stage name -> (keeps order, wrap a source with it); ``f`` is an async identity with random durations."""
    from streamlib import RestartFlow

    return {
        "map_async": (True, lambda s, f: s.map_async(4, f)),
        "map_async_unordered": (False, lambda s, f: s.map_async_unordered(4, f)),
        "async_boundary": (True, lambda s, f: s.async_boundary()),
        "buffer": (True, lambda s, f: s.buffer(5)),
        "buffer_drop_new": (True, lambda s, f: s.buffer(1000, "drop_new")),
        "throttle": (True, lambda s, f: s.throttle(2, 1.0, burst=3)),
        "delay": (True, lambda s, f: s.delay(0.5)),
        "conflate": (True, lambda s, f: s.conflate_with_seed(lambda x: [x], lambda a, x: a + [x]).map_concat(_flatten)),
        "batch": (True, lambda s, f: s.batch(3, lambda x: [x], lambda a, x: a + [x]).map_concat(_flatten)),
        "expand": (True, lambda s, f: s.expand(lambda x: [x])),
        "backpressure_timeout": (True, lambda s, f: s.backpressure_timeout(1000.0)),
        "broadcast": (True, lambda s, f: s.also_to(Sink.ignore())),
        "partition": (True, lambda s, f: s.divert_to(Sink.ignore(), lambda x: x < 0)),
        "merge_sorted": (True, lambda s, f: s.merge_sorted(Source.empty())),
        "interleave": (True, lambda s, f: s.interleave(Source.empty(), 2)),
        "kill_switch": (True, lambda s, f: s.via(KillSwitches.single())),
        "shared_kill_switch": (True, lambda s, f: s.via(KillSwitches.shared("s").flow())),
        "recover": (True, lambda s, f: s.recover(lambda e: None)),
        "group_by_inline": (False, lambda s, f: s.group_by(3, lambda x: x % 3).map(_flatten).merge_substreams()),
        "group_by_async": (False, lambda s, f: s.group_by(3, lambda x: x % 3).map_async(2, f).merge_substreams()),
        "split_when": (False, lambda s, f: s.split_when(lambda x: x % 4 == 0).map_async(2, f).merge_substreams()),
        "flat_map_concat": (True, lambda s, f: s.flat_map_concat(lambda x: Source.single(x))),
        "flat_map_merge": (False, lambda s, f: s.flat_map_merge(3, lambda x: Source.from_iterable([x]))),
        "restart_flow": (
            True,
            lambda s, f: s.via(RestartFlow.with_backoff(0.1, 0.1, 0, 0, lambda: Flow.map_async(2, f))),
        ),
    }


ASYNC_STAGES = _async_stages()


@pytest.mark.parametrize("stage", sorted(ASYNC_STAGES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_an_upstream_failure_reaches_the_sink_after_everything_before_it(stage: str, data: st.DataObject) -> None:
    ordered, wrap = ASYNC_STAGES[stage]
    n = data.draw(st.integers(0, 30), label="n")
    fail_at = data.draw(st.none() | st.integers(0, max(n - 1, 0)), label="fail_at") if n else None
    cuts = data.draw(st.lists(st.integers(0, n), max_size=5), label="cuts")
    durations = data.draw(st.lists(st.integers(0, 8).map(lambda q: q / 4), min_size=n, max_size=n), label="durations")
    take = data.draw(st.none() | st.integers(0, n + 1), label="take")
    max_chunk = data.draw(st.sampled_from([1, 2, 3, 1024]), label="max_chunk")
    capacity = data.draw(st.sampled_from([1, 2, 7, 4096]), label="capacity")

    def boom(x: int) -> int:
        if x == fail_at:
            raise Boom(f"bad element {x}")
        return x

    async def main() -> tuple[list[int], BaseException | None]:
        clock = VirtualClock()

        async def f(x: int) -> int:
            await clock.sleep(durations[x])
            return x

        got: list[int] = []
        src = wrap(source_from_chunks(split_at(list(range(n)), cuts)).map(boom), f)
        if take is not None:
            src = src.take(take)
        done = src.to_mat(Sink.foreach(got.append), Keep.right).run(
            clock=clock, max_chunk=max_chunk, channel_capacity=capacity
        )
        error: BaseException | None = None
        try:
            await clock.run(done)
        except Boom as e:
            error = e
        await assert_no_running_graphs()
        return got, error

    got, error = asyncio.run(main())
    before = list(range(n if fail_at is None else fail_at))
    if take is not None and take <= len(before):
        # The take completes before the failing element is needed: its result, no error.
        assert error is None
        if ordered:
            assert got == before[:take]
        else:
            assert len(got) == take and set(got) <= set(before)
        return
    if fail_at is None:
        assert error is None
    else:
        assert isinstance(error, Boom) and str(error) == f"bad element {fail_at}"
    assert (got if ordered else sorted(got)) == before


#: Async stages that carry signals (substreams, merge_sorted and interleave drop them, as documented).
SIGNAL_STAGES = sorted(
    name for name in ASYNC_STAGES
    if name not in {"group_by_inline", "group_by_async", "split_when", "flat_map_merge", "flat_map_concat",
                    "merge_sorted", "interleave"}
)


@pytest.mark.parametrize("stage", SIGNAL_STAGES)
async def test_a_checkpoint_from_a_live_source_crosses_an_async_stage_without_more_input(stage: str) -> None:
    # A live source's barrier must reach the stateful stage behind the async one while the
    # source is quiet, or the checkpoint (a Kafka app's commit) waits for input that may never come.
    from streamlib import KeyState, MemoryStore

    _ordered, wrap = ASYNC_STAGES[stage]
    clock = VirtualClock()

    async def f(x: int) -> int:
        await clock.sleep(0.25)
        return x

    def count(x: int, state: KeyState[int, int]) -> int:
        state.set(state.get(0) + 1)
        return x

    store = MemoryStore()
    queue, done = (
        wrap(Source.queue(100, of=int).checkpointed(store, every=1, replayable=False), f)
        .key_by(lambda x: x % 2)
        .stateful_map(count, store=store)
        .to_mat(Sink.ignore(), Keep.both)
        .run(clock=clock)
    )
    for x in range(5):
        assert queue.offer_nowait(x)
    await clock.advance(10.0)
    checkpoint = store.restore()
    assert checkpoint is not None and checkpoint.meta["position:checkpointed"] == 5
    queue.complete()
    await clock.run(done)
