"""Graphs: the builder, every junction's semantics, partial graphs, build-time errors."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import (
    Balance,
    Broadcast,
    Concat,
    Flow,
    GraphBuilder,
    GraphError,
    Keep,
    KillSwitches,
    Merge,
    MergePreferred,
    Partition,
    Sink,
    Source,
    Zip,
    ZipWith,
)
from streamlib.testing import TestSink, TestSource, assert_no_running_graphs, settle, source_from_chunks, split_at

SETTINGS = settings(max_examples=30, deadline=None)


def run(coro_fn: Callable[[], Any]) -> Any:
    """Run one hypothesis example on a fresh loop and check it left nothing running."""

    async def main() -> Any:
        try:
            return await coro_fn()
        finally:
            await assert_no_running_graphs()

    return asyncio.run(main())


@st.composite
def chunked(draw: st.DrawFn, max_size: int = 40) -> tuple[list[int], list[list[int]]]:
    xs = draw(st.lists(st.integers(-100, 100), max_size=max_size))
    cuts = draw(st.lists(st.integers(0, len(xs)), max_size=5))
    return xs, split_at(xs, cuts)


def is_subsequence(sub: list[Any], seq: list[Any]) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


# -- split and merge ----------------------------------------------------------------------


@SETTINGS
@given(inp=chunked(), max_chunk=st.sampled_from([1, 3, 1024]))
def test_map_filter_fold_split_into_two_branches_and_merged(inp: tuple[list[int], list[list[int]]], max_chunk: int) -> None:
    xs, chunks = inp

    async def go() -> int:
        b = GraphBuilder()
        src = b.add(source_from_chunks(chunks))
        bcast, merge = b.add(Broadcast(2)), b.add(Merge(2))
        total = b.add(Sink.fold(0, operator.add))
        src >> bcast
        bcast.out(0) >> Flow.map(lambda x: x * 3).filter(lambda x: x % 2 == 0) >> merge.inp(0)
        bcast.out(1) >> Flow.filter_not(lambda x: x % 2 == 0).map(lambda x: -x) >> merge.inp(1)
        merge >> total
        result: int = await b.to_runnable(total).run(max_chunk=max_chunk)
        return result

    expected = sum(x * 3 for x in xs if x * 3 % 2 == 0) + sum(-x for x in xs if x % 2)
    assert run(go) == expected


# -- fan-out --------------------------------------------------------------------------------


async def test_broadcast_is_as_slow_as_its_slowest_output() -> None:
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield i

    fast_seen: list[int] = []
    b = GraphBuilder()
    src = b.add(Source.from_iterator(numbers))
    bcast = b.add(Broadcast(2))
    fast = b.add(Sink.foreach(fast_seen.append))
    slow = b.add(Sink.queue(8))
    src >> bcast
    bcast.out(0) >> fast
    bcast.out(1) >> slow
    done, queue = b.to_runnable([fast, slow]).run(channel_capacity=16, max_chunk=4)
    await settle()
    # The slow branch takes nothing: the fast one gets at most what the slow queue holds
    # (its capacity plus a chunk) and the chunk Broadcast is trying to hand over.
    assert 0 < len(fast_seen) <= 8 + 4 + 4
    # Upstream: the Broadcast's input channel, the chunk in its hands, the source's chunk.
    assert pulled <= len(fast_seen) + (16 + 4) + 4 + 4
    slow_seen = [x async for x in queue]
    await done
    assert slow_seen == fast_seen == list(range(10_000))


async def test_broadcast_keeps_feeding_an_output_when_the_other_cancels() -> None:
    b = GraphBuilder()
    src = b.add(Source.from_iterable(range(1000)))
    bcast = b.add(Broadcast(2))
    first = b.add(Sink.head())
    every = b.add(Sink.collect())
    src >> bcast
    bcast.out(0) >> first
    bcast.out(1) >> every
    head, items = b.to_runnable([first, every]).run(max_chunk=8)
    assert await head == 0
    assert await items == list(range(1000))


async def test_balance_sends_to_outputs_with_room_and_each_element_once() -> None:
    b = GraphBuilder()
    src = b.add(Source.from_iterable(range(5000)))
    balance = b.add(Balance(3))
    blocked = b.add(Sink.queue(4))
    s1, s2 = b.add(Sink.collect()), b.add(Sink.collect())
    src >> balance
    balance.out(0) >> blocked
    balance.out(1) >> Flow.map(lambda x: x) >> s1
    balance.out(2) >> s2
    queue, got1, got2 = b.to_runnable([blocked, s1, s2]).run(channel_capacity=8, max_chunk=2)
    # Nobody pulls from output 0: the other two outputs still get everything else, and complete.
    a, c = await got1, await got2
    stuck = [x async for x in queue]
    assert len(stuck) <= 4 + 2
    assert sorted(stuck + a + c) == list(range(5000))
    for part in (stuck, a, c):
        assert part == sorted(part)
    assert a and c


async def test_balance_spreads_a_flood_over_its_outputs() -> None:
    b = GraphBuilder()
    src = b.add(Source.from_iterable(range(2000)))
    balance = b.add(Balance(2))
    sinks = [b.add(Sink.collect()) for _ in range(2)]
    src >> balance
    for i, sink in enumerate(sinks):
        balance.out(i) >> Flow.map_async(1, _yielding_identity) >> sink
    futures = b.to_runnable(sinks).run(max_chunk=4, channel_capacity=8)
    parts = [await f for f in futures]
    assert sorted(parts[0] + parts[1]) == list(range(2000))
    assert all(parts)


async def _yielding_identity(x: int) -> int:
    await asyncio.sleep(0)
    return x


@SETTINGS
@given(inp=chunked(), n=st.integers(1, 4))
def test_partition_routes_each_element_to_its_output(inp: tuple[list[int], list[list[int]]], n: int) -> None:
    xs, chunks = inp

    async def go() -> list[list[int]]:
        b = GraphBuilder()
        src = b.add(source_from_chunks(chunks))
        part = b.add(Partition(n, lambda x: x % n))
        sinks = [b.add(Sink.collect()) for _ in range(n)]
        src >> part
        for i, sink in enumerate(sinks):
            part.out(i) >> sink
        return [await f for f in b.to_runnable(sinks).run()]

    assert run(go) == [[x for x in xs if x % n == i] for i in range(n)]


async def test_partition_out_of_range_is_a_clear_error() -> None:
    b = GraphBuilder()
    src = b.add(Source.from_iterable([0, 1, 0, 7, 1]))
    part = b.add(Partition(2, lambda x: x))
    s0, s1 = b.add(Sink.collect()), b.add(Sink.foreach(lambda x: None))
    got0: list[int] = []
    src >> part
    part.out(0) >> Flow.map(lambda x: got0.append(x) or x) >> s0
    part.out(1) >> s1
    f0, f1 = b.to_runnable([s0, s1]).run()
    for fut in (f0, f1):
        with pytest.raises(IndexError, match=r"partitioner returned 7 for 7; outputs are 0\.\.1") as info:
            await fut
        assert "in stage 'Partition'" in info.value.__notes__
    assert got0 == [0, 0]  # the elements before the bad one were delivered


# -- fan-in ----------------------------------------------------------------------------------


@SETTINGS
@given(a=chunked(), c=chunked(), boundary=st.booleans())
def test_merge_emits_every_element_keeping_each_inputs_order(
    a: tuple[list[int], list[list[int]]], c: tuple[list[int], list[list[int]]], boundary: bool
) -> None:
    async def go() -> list[tuple[str, int]]:
        b = GraphBuilder()
        left = b.add(source_from_chunks(a[1]).map(lambda x: ("a", x)))
        right = b.add(source_from_chunks(c[1]).map(lambda x: ("c", x)))
        merge = b.add(Merge(2))
        sink = b.add(Sink.collect())
        left >> merge.inp(0)
        (right >> Flow().async_boundary() >> merge.inp(1)) if boundary else (right >> merge.inp(1))
        merge >> sink
        result: list[tuple[str, int]] = await b.to_runnable(sink).run()
        return result

    got = run(go)
    assert [x for tag, x in got if tag == "a"] == a[0]
    assert [x for tag, x in got if tag == "c"] == c[0]


async def test_merge_completes_when_every_input_completed() -> None:
    queue, items = (
        _merge_of(Source.queue(8), Source.from_iterable([1, 2]), Merge(2)).to_mat(Sink.collect(), Keep.both).run()
    )
    await settle()
    assert not items.done()  # the queue input is still open
    await queue.offer(3)
    queue.complete()
    assert sorted(await items) == [1, 2, 3]


def _merge_of(first: Source[Any, Any], second: Source[Any, Any], junction: Any) -> Source[Any, Any]:
    b = GraphBuilder()
    s0, s1 = b.add(first), b.add(second)
    j = b.add(junction)
    s0 >> j.inp(0)
    s1 >> j.inp(1)
    return b.to_source(j, mat=s0)


async def test_merge_preferred_takes_the_preferred_input_first() -> None:
    b = GraphBuilder()
    q0, q1 = b.add(Source.queue(100)), b.add(Source.queue(100))
    merge = b.add(MergePreferred(2))
    out = b.add(Sink.queue(1))
    q0 >> merge.inp(0)
    q1 >> merge.inp(1)
    merge >> out
    preferred, other, pull = b.to_runnable([q0, q1, out]).run()
    # Both inputs have elements waiting (the other one even got them first).
    for i in range(10):
        await other.offer(("other", i))
    for i in range(10):
        await preferred.offer(("preferred", i))
    got = [await pull.pull() for _ in range(20)]
    assert got == [("preferred", i) for i in range(10)] + [("other", i) for i in range(10)]
    preferred.complete()
    other.complete()
    assert await pull.pull() is None


@SETTINGS
@given(a=chunked(), c=chunked())
def test_zip_pairs_elements_until_the_shorter_input_ends(
    a: tuple[list[int], list[list[int]]], c: tuple[list[int], list[list[int]]]
) -> None:
    async def go() -> list[tuple[int, int]]:
        b = GraphBuilder()
        s0, s1 = b.add(source_from_chunks(a[1])), b.add(source_from_chunks(c[1]))
        z = b.add(Zip())
        sink = b.add(Sink.collect())
        s0 >> z.inp(0)
        s1 >> z.inp(1)
        z >> sink
        result: list[tuple[int, int]] = await b.to_runnable(sink).run()
        return result

    assert run(go) == list(zip(a[0], c[0]))


async def test_zip_ends_an_endless_input() -> None:
    b = GraphBuilder()
    s0, s1 = b.add(Source.repeat("x")), b.add(Source.from_iterable(range(3)))
    z = b.add(ZipWith(2, lambda s, i: f"{s}{i}"))
    sink = b.add(Sink.collect())
    s0 >> z.inp(0)
    s1 >> z.inp(1)
    z >> sink
    assert await b.to_runnable(sink).run() == ["x0", "x1", "x2"]


async def test_zip_with_three_inputs() -> None:
    b = GraphBuilder()
    srcs = [b.add(Source.from_iterable([i, i * 10, i * 100])) for i in (1, 2, 3)]
    z = b.add(ZipWith(3, lambda x, y, w: x + y + w))
    sink = b.add(Sink.collect())
    for i, s in enumerate(srcs):
        s >> z.inp(i)
    z >> sink
    assert await b.to_runnable(sink).run() == [6, 60, 600]


async def test_concat_emits_all_of_each_input_in_turn() -> None:
    queue, items = (
        _merge_of(Source.queue(8), Source.from_iterable([10, 11, 12]), Concat(2)).to_mat(Sink.collect(), Keep.both).run()
    )
    await settle()
    # Input 1 is ready and waiting; nothing of it may pass before input 0 completes.
    await queue.offer(1)
    await queue.offer(2)
    await settle()
    assert not items.done()
    queue.complete()
    assert await items == [1, 2, 10, 11, 12]


@SETTINGS
@given(parts=st.lists(chunked(max_size=10), min_size=1, max_size=4))
def test_concat_equals_list_concatenation(parts: list[tuple[list[int], list[list[int]]]]) -> None:
    async def go() -> list[int]:
        b = GraphBuilder()
        concat = b.add(Concat(len(parts)))
        for i, (_xs, chunks) in enumerate(parts):
            b.add(source_from_chunks(chunks)) >> concat.inp(i)
        sink = b.add(Sink.collect())
        concat >> sink
        result: list[int] = await b.to_runnable(sink).run()
        return result

    assert run(go) == [x for xs, _ in parts for x in xs]


# -- partial graphs ---------------------------------------------------------------------------


def pairs_source() -> Source[Any, Any]:
    """A Source from a graph: numbers zipped with their squares."""
    b = GraphBuilder()
    src = b.add(Source.from_iterable(range(5)))
    bcast = b.add(Broadcast(2))
    z = b.add(Zip())
    src >> bcast
    bcast.out(0) >> z.inp(0)
    bcast.out(1) >> Flow.map(lambda x: x * x) >> z.inp(1)
    return b.to_source(z)


def split_merge_flow() -> Flow[Any, Any, Any]:
    """A Flow from a graph: evens doubled, odds negated, merged back."""
    b = GraphBuilder()
    part = b.add(Partition(2, lambda x: x % 2))
    merge = b.add(Merge(2))
    part.out(0) >> Flow.map(lambda x: x * 2) >> merge.inp(0)
    part.out(1) >> Flow.map(lambda x: -x) >> merge.inp(1)
    return b.to_flow(part, merge)


def two_sums_sink() -> Sink[Any, Any]:
    """A Sink from a graph: the sum and the count, as two futures."""
    b = GraphBuilder()
    bcast = b.add(Broadcast(2))
    total = b.add(Sink.fold(0, operator.add))
    count = b.add(Sink.fold(0, lambda n, _x: n + 1))
    bcast.out(0) >> total
    bcast.out(1) >> count
    return b.to_sink(bcast, mat=[total, count])


async def test_partial_graphs_are_reusable_in_linear_pipelines() -> None:
    src, flow, sink = pairs_source(), split_merge_flow(), two_sums_sink()
    for _ in range(2):
        assert await src.run_with(Sink.collect()) == [(i, i * i) for i in range(5)]
        assert sorted(await Source.from_iterable(range(6)).via(flow).run_with(Sink.collect())) == sorted(
            [0, 4, 8, -1, -3, -5]
        )
        total, count = Source.from_iterable(range(10)).run_with(sink)
        assert (await total, await count) == (45, 10)
    composed = await src.map(lambda p: p[1]).via(flow).run_with(Sink.collect())
    assert sorted(composed) == sorted([0, -1, 8, -9, 32])
    total, count = src.map(lambda p: p[0]).via(flow).to_mat(sink, Keep.right).run()
    assert (await total, await count) == (0 + 4 + 8 - 1 - 3, 5)


async def test_a_flow_from_a_graph_with_a_materialized_value() -> None:
    b = GraphBuilder()
    inlet = b.add(Flow().watch_termination())
    merge = b.add(Merge(2))
    extra = b.add(Source.single(100))
    inlet >> merge.inp(0)
    extra >> merge.inp(1)
    flow = b.to_flow(inlet, merge, mat=inlet)
    done, items = Source.from_iterable([1, 2]).via_mat(flow, Keep.right).to_mat(Sink.collect(), Keep.both).run()
    assert sorted(await items) == [1, 2, 100]
    assert await done is None


# -- build-time errors -------------------------------------------------------------------------


def test_an_unconnected_output_port_is_named() -> None:
    b = GraphBuilder()
    src = b.add(Source.single(1))
    bcast = b.add(Broadcast(2))
    sink = b.add(Sink.ignore())
    src >> bcast
    bcast.out(0) >> sink
    with pytest.raises(GraphError, match=r"Broadcast\(2\)#1\.out1 is not connected"):
        b.to_runnable(sink)


def test_an_unconnected_input_port_is_named() -> None:
    b = GraphBuilder()
    src = b.add(Source.single(1))
    merge = b.add(Merge(2))
    sink = b.add(Sink.ignore())
    src >> merge.inp(0)
    merge >> sink
    with pytest.raises(GraphError, match=r"Merge\(2\)#1\.in1 is not connected"):
        b.to_runnable(sink)


def test_an_unconnected_sink_is_named() -> None:
    b = GraphBuilder()
    b.add(Source.single(1))
    b.add(Sink.ignore())
    with pytest.raises(GraphError, match=r"Source#0\.out is not connected"):
        b.to_runnable()


def test_connecting_a_port_twice_names_it() -> None:
    b = GraphBuilder()
    src = b.add(Source.single(1))
    bcast = b.add(Broadcast(2))
    merge = b.add(Merge(2))
    src >> bcast
    bcast.out(0) >> merge.inp(0)
    with pytest.raises(GraphError, match=r"Broadcast\(2\)#1\.out0 is already connected"):
        bcast.out(0) >> merge.inp(1)
    with pytest.raises(GraphError, match=r"Merge\(2\)#2\.in0 is already connected"):
        bcast.out(1) >> merge.inp(0)


def test_port_index_and_ambiguous_connections_are_errors() -> None:
    b = GraphBuilder()
    bcast = b.add(Broadcast(2))
    merge = b.add(Merge(2))
    with pytest.raises(GraphError, match=r"Broadcast\(2\)#0 has 2 output\(s\); there is no output 2"):
        bcast.out(2)
    with pytest.raises(GraphError, match=r"Merge\(2\)#1 has 2 input\(s\); there is no input 5"):
        merge.inp(5)
    with pytest.raises(GraphError, match="pick one with .out"):
        bcast >> merge.inp(0)
    with pytest.raises(GraphError, match="pick one with .inp"):
        bcast.out(0) >> merge
    with pytest.raises(GraphError, match="a Source has no input"):
        bcast.out(0) >> Source.single(1)


def test_ports_of_another_builder_and_foreign_pieces_are_errors() -> None:
    b1, b2 = GraphBuilder(), GraphBuilder()
    src = b1.add(Source.single(1))
    sink = b2.add(Sink.ignore())
    with pytest.raises(GraphError, match=r"Sink#0.in belongs to another GraphBuilder"):
        src >> sink
    with pytest.raises(GraphError, match=r"Sink#0.in belongs to another GraphBuilder"):
        src.out(0) >> sink.inp(0)
    b2.add(Source.single(2)) >> sink  # neither side was connected by the refused attempts
    src >> b1.add(Sink.ignore())
    with pytest.raises(GraphError, match="cannot add"):
        b1.add(42)  # type: ignore[arg-type]


def test_partial_graph_ports_must_be_open_unambiguous_and_of_this_builder() -> None:
    b = GraphBuilder()
    src = b.add(Source.single(1))
    bcast, merge = b.add(Broadcast(2)), b.add(Merge(2))
    src >> bcast
    bcast.out(0) >> merge.inp(0)
    with pytest.raises(GraphError, match=r"Broadcast\(2\)#1 has 2 outputs: pick one with .out\(i\)"):
        b.to_source(bcast)
    with pytest.raises(GraphError, match=r"Merge\(2\)#2 has 2 inputs: pick one with .inp\(i\)"):
        b.to_sink(merge)
    with pytest.raises(GraphError, match=r"Broadcast\(2\)#1\.out0 is already connected: it cannot be the open output"):
        b.to_source(bcast.out(0))
    with pytest.raises(GraphError, match=r"Merge\(2\)#2\.in0 is already connected: it cannot be the open input"):
        b.to_flow(merge.inp(0), bcast.out(1))
    other = GraphBuilder()
    foreign = other.add(Flow())
    with pytest.raises(GraphError, match=r"Flow#0\.out belongs to another GraphBuilder"):
        b.to_flow(merge.inp(1), foreign.out())
    bcast.out(1) >> merge.inp(1)
    with pytest.raises(GraphError, match="the materialized value must come from nodes of this GraphBuilder"):
        b.to_source(merge, mat=foreign)


@pytest.mark.parametrize("junction", [Broadcast, Balance, Merge, MergePreferred, Concat])
def test_junctions_need_a_port(junction: Any) -> None:
    with pytest.raises(ValueError, match="needs at least one port"):
        junction(0)


# -- linear shorthands built on junctions ----------------------------------------------------------


@SETTINGS
@given(inp=chunked())
def test_also_to_sends_every_element_to_both(inp: tuple[list[int], list[list[int]]]) -> None:
    xs, chunks = inp

    async def go() -> tuple[list[int], list[int]]:
        side: list[int] = []
        main = await source_from_chunks(chunks).also_to(Sink.foreach(side.append)).map(lambda x: x + 1).run_with(
            Sink.collect()
        )
        await assert_no_running_graphs()
        return main, side

    assert run(go) == ([x + 1 for x in xs], xs)


@SETTINGS
@given(inp=chunked())
def test_divert_to_sends_matching_elements_aside(inp: tuple[list[int], list[list[int]]]) -> None:
    xs, chunks = inp

    async def go() -> tuple[list[int], list[int]]:
        aside: list[int] = []
        main = await source_from_chunks(chunks).divert_to(Sink.foreach(aside.append), lambda x: x < 0).run_with(
            Sink.collect()
        )
        await assert_no_running_graphs()
        return main, aside

    assert run(go) == ([x for x in xs if x >= 0], [x for x in xs if x < 0])


async def test_flow_from_sink_and_source() -> None:
    seen: list[int] = []
    flow = Flow.from_sink_and_source(Sink.foreach(seen.append), Source.from_iterable("ab"))
    assert await Source.from_iterable([1, 2, 3]).via(flow).run_with(Sink.collect()) == ["a", "b"]
    await assert_no_running_graphs()
    assert seen == [1, 2, 3]


# -- downstream cancellation reaches idle upstreams at once ------------------------------------------


def _fan_out_graph(junction: Any) -> Any:
    b = GraphBuilder()
    src = b.add(TestSource.probe())
    j = b.add(junction)
    sinks = [b.add(TestSink.probe()) for _ in range(2)]
    src >> j
    for i, sink in enumerate(sinks):
        j.out(i) >> sink
    return b.to_runnable([src, *sinks])


def _fan_in_graph(junction: Any) -> Any:
    b = GraphBuilder()
    srcs = [b.add(TestSource.probe()) for _ in range(2)]
    j = b.add(junction)
    sink = b.add(TestSink.probe())
    for i, src in enumerate(srcs):
        src >> j.inp(i)
    j >> sink
    return b.to_runnable([*srcs, sink])


@pytest.mark.parametrize(
    "junction",
    [Broadcast(2), Balance(2), Partition(2, lambda x: x % 2)],
    ids=["Broadcast", "Balance", "Partition"],
)
async def test_fan_out_cancels_upstream_when_every_output_cancelled_while_idle(junction: Any) -> None:
    src, out0, out1 = _fan_out_graph(junction).run()
    await src.send_next(0)
    out0.request(1)
    out1.request(1)
    await settle()
    out0.cancel()
    await settle()
    assert not src.cancelled  # one output is still there
    out1.cancel()  # the junction is waiting for input
    await src.expect_cancellation()


@pytest.mark.parametrize(
    "junction",
    [Merge(2), MergePreferred(2), Zip(), Concat(2)],
    ids=["Merge", "MergePreferred", "Zip", "Concat"],
)
async def test_fan_in_cancels_every_input_when_downstream_cancels_while_idle(junction: Any) -> None:
    src0, src1, out = _fan_in_graph(junction).run()
    await src0.send_next(1)
    out.request(1)
    await settle()
    out.cancel()  # the junction is waiting for input
    await src0.expect_cancellation()
    await src1.expect_cancellation()


async def test_kill_switch_passes_cancellation_upstream_while_idle() -> None:
    (src, switch), sink = TestSource.probe().via_mat(KillSwitches.single(), Keep.both).to_mat(
        TestSink.probe(), Keep.both
    ).run()
    await src.send_next(1)
    sink.request(1)
    await sink.expect_next(1)
    sink.cancel()
    await src.expect_cancellation()
    switch.shutdown()
