"""MergeSorted, Interleave, Unzip and UnzipWith against list models, over random chunkings."""

from __future__ import annotations

import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Flow, GraphBuilder, Interleave, Keep, MergeSorted, Sink, Source, Unzip, UnzipWith
from streamlib.testing import source_from_chunks, split_at

SETTINGS = settings(max_examples=40, deadline=None)


def chunked(elements: Any) -> Any:
    return elements.flatmap(lambda xs: st.tuples(st.just(xs), st.lists(st.integers(0, len(xs)), max_size=6)))


sorted_ints = st.lists(st.integers(-50, 50), max_size=40).map(sorted)


# -- MergeSorted ---------------------------------------------------------------------------


@SETTINGS
@given(st.lists(chunked(sorted_ints), min_size=1, max_size=4))
async def test_merge_sorted_is_sorted_union(inputs: Any) -> None:
    b = GraphBuilder()
    merge = b.add(MergeSorted(len(inputs)))
    for i, (xs, cuts) in enumerate(inputs):
        b.add(source_from_chunks(split_at(xs, cuts))) >> merge.inp(i)
    sink = b.add(Sink.collect())
    merge >> sink
    got = await b.to_runnable(sink).run()
    assert got == sorted(x for xs, _ in inputs for x in xs)


@SETTINGS
@given(chunked(sorted_ints), chunked(sorted_ints))
async def test_merge_sorted_operator_with_key_is_stable_by_side(a: Any, b: Any) -> None:
    (xs, xcuts), (ys, ycuts) = a, b
    left = [(x, "L") for x in xs]
    right = [(y, "R") for y in ys]
    got = await (
        source_from_chunks(split_at(left, xcuts))
        .merge_sorted(source_from_chunks(split_at(right, ycuts)), key=lambda p: p[0])
        .run_with(Sink.collect())
    )
    assert [p[0] for p in got] == sorted(xs + ys)
    assert sorted(got) == sorted(left + right)
    # each side keeps its own order
    assert [p for p in got if p[1] == "L"] == left and [p for p in got if p[1] == "R"] == right


async def test_merge_sorted_unsorted_input_is_a_clear_error() -> None:
    src = Source.from_iterable([1, 5, 3]).merge_sorted(Source.from_iterable([2, 4]))
    with pytest.raises(ValueError, match=r"input 0 is not sorted: 3 came after 5") as info:
        await src.run_with(Sink.collect())
    assert "in stage 'MergeSorted'" in info.value.__notes__


async def test_merge_sorted_waits_for_slow_side() -> None:
    queue, out = (
        Source.queue(10)
        .merge_sorted(Source.from_iterable([2, 4, 6]))
        .to_mat(Sink.queue(100), Keep.both)
        .run()
    )
    await queue.offer(1)
    assert await out.pull() == 1
    await queue.offer(5)
    assert [await out.pull(), await out.pull()] == [2, 4]
    queue.complete()
    assert [x async for x in out] == [5, 6]


# -- Interleave ----------------------------------------------------------------------------


def interleave_model(inputs: list[list[int]], size: int, eager: bool) -> list[int]:
    """Turns of ``size`` elements; an input that runs out ends its turn (the next starts afresh)."""
    bufs = [list(xs) for xs in inputs]
    live = list(range(len(inputs)))
    out: list[int] = []
    pos = 0
    while live:
        i = live[pos]
        seg = bufs[i][:size]
        del bufs[i][:size]
        out += seg
        if len(seg) < size:
            if eager:
                return out
            live.pop(pos)
            if live:
                pos %= len(live)
        else:
            pos = (pos + 1) % len(live)
    return out


@SETTINGS
@given(
    st.lists(chunked(st.lists(st.integers(0, 99), max_size=25)), min_size=1, max_size=3),
    st.integers(1, 4),
)
async def test_interleave_matches_model(inputs: Any, size: int) -> None:
    b = GraphBuilder()
    inter = b.add(Interleave(len(inputs), size))
    for i, (xs, cuts) in enumerate(inputs):
        b.add(source_from_chunks(split_at(xs, cuts))) >> inter.inp(i)
    sink = b.add(Sink.collect())
    inter >> sink
    got = await b.to_runnable(sink).run()
    assert got == interleave_model([xs for xs, _ in inputs], size, eager=False)


async def test_interleave_operator_and_eager_close() -> None:
    got = await Source.from_iterable([1, 2, 3, 4, 5]).interleave(Source.from_iterable([8, 9]), 2).run_with(
        Sink.collect()
    )
    assert got == [1, 2, 8, 9, 3, 4, 5]
    got = await Source.from_iterable([1, 2, 3, 4, 5]).interleave(
        Source.from_iterable([8]), 2, eager_close=True
    ).run_with(Sink.collect())
    assert got == [1, 2, 8]
    with pytest.raises(ValueError, match="segment_size"):
        Interleave(2, 0)


# -- Unzip / UnzipWith --------------------------------------------------------------------


@SETTINGS
@given(chunked(st.lists(st.tuples(st.integers(), st.text(max_size=3)), max_size=40)))
async def test_unzip_splits_pairs(case: Any) -> None:
    pairs, cuts = case
    b = GraphBuilder()
    unzip = b.add(Unzip())
    b.add(source_from_chunks(split_at(pairs, cuts))) >> unzip
    left, right = b.add(Sink.collect()), b.add(Sink.collect())
    unzip.out(0) >> left
    unzip.out(1) >> right
    got_left, got_right = b.to_runnable([left, right]).run()
    assert await got_left == [a for a, _ in pairs]
    assert await got_right == [t for _, t in pairs]


async def test_unzip_with_three_outputs_and_one_cancelled() -> None:
    b = GraphBuilder()
    uz = b.add(UnzipWith(3, lambda x: (x, x * x, -x)))
    b.add(Source.from_iterable(range(1000))) >> uz
    a, sq, neg = b.add(Sink.collect()), b.add(Sink.head()), b.add(Sink.fold(0, operator.add))
    uz.out(0) >> a
    uz.out(1) >> Flow.drop(3) >> sq
    uz.out(2) >> neg
    fa, fsq, fneg = b.to_runnable([a, sq, neg]).run()
    assert await fa == list(range(1000))
    assert await fsq == 9
    assert await fneg == -sum(range(1000))


async def test_unzip_with_wrong_arity_names_element() -> None:
    b = GraphBuilder()
    uz = b.add(UnzipWith(2, lambda x: (x,) * x))
    b.add(Source.from_iterable([2, 2, 3])) >> uz
    a, c = b.add(Sink.collect()), b.add(Sink.collect())
    uz.out(0) >> a
    uz.out(1) >> c
    fa, fc = b.to_runnable([a, c]).run()
    with pytest.raises(ValueError, match="3 values for element 3, expected 2"):
        await fa
    with pytest.raises(ValueError):
        await fc


def test_describe_shows_junction_ports() -> None:
    b = GraphBuilder()
    uz = b.add(Unzip())
    b.add(Source.from_iterable([(1, 2)])) >> uz
    m = b.add(MergeSorted(2))
    uz.out(0) >> m.inp(0)
    uz.out(1) >> Flow.map(lambda x: x) >> m.inp(1)
    sink = b.add(Sink.collect())
    m >> sink
    text = b.to_runnable(sink).describe()
    assert "Unzip(2)" in text and "MergeSorted(2)" in text
    assert "out1" in text and "in1" in text
