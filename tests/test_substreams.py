"""group_by / split_when / split_after / flat_map_*: list models, limits, backpressure, ownership."""

from __future__ import annotations

import asyncio
import operator
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Flow, Keep, Sink, Source, Supervision, TooManySubstreamsError
from streamlib.testing import VirtualClock, settle, source_from_chunks, split_at

SETTINGS = settings(max_examples=30, deadline=None)

chunked = st.lists(st.integers(0, 30), max_size=60).flatmap(
    lambda xs: st.tuples(st.just(xs), st.lists(st.integers(0, len(xs)), max_size=6))
)


def groups_model(xs: list[int], key: Any) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = defaultdict(list)
    for x in xs:
        out[key(x)].append(x)
    return dict(out)


# -- group_by ------------------------------------------------------------------------------


def tasks_or_inline(sub: Any, tasks: bool) -> Any:
    """With ``tasks``, an async boundary makes every substream a run of its own; else it runs inline."""
    return sub.async_boundary() if tasks else sub


@SETTINGS
@given(chunked, st.integers(1, 7), st.booleans())
async def test_group_by_fold_per_key(case: Any, mod: int, tasks: bool) -> None:
    xs, cuts = case
    sub = source_from_chunks(split_at(xs, cuts)).group_by(100, lambda x: x % mod)
    got = await (
        tasks_or_inline(sub, tasks)
        .fold((None, []), lambda acc, x: (x % mod, acc[1] + [x]))
        .merge_substreams()
        .run_with(Sink.collect())
    )
    assert dict(got) == groups_model(xs, lambda x: x % mod)


@settings(max_examples=20, deadline=None)
@given(chunked, st.integers(1, 5), st.integers(0, 3), st.booleans())
async def test_group_by_take_per_key_closes_keys(case: Any, mod: int, n: int, tasks: bool) -> None:
    xs, cuts = case
    sub = source_from_chunks(split_at(xs, cuts)).group_by(100, lambda x: x % mod)
    got = await tasks_or_inline(sub, tasks).take(n).merge_substreams().run_with(Sink.collect())
    per_key: dict[int, list[int]] = defaultdict(list)
    for x in got:
        per_key[x % mod].append(x)
    model = {k: v[:n] for k, v in groups_model(xs, lambda x: x % mod).items() if n}
    assert dict(per_key) == model


async def test_inline_substreams_need_no_task_per_key() -> None:
    async def run_and_count(tasks: bool) -> int:
        sub = Source.queue(2000, of=int).group_by(2000, lambda x: x)
        flow = tasks_or_inline(sub, tasks).map(lambda x: x + 1).merge_substreams()
        queue, q = flow.to_mat(Sink.queue(1), Keep.both).run()
        for x in range(2000):  # one element per key: 2000 open substreams
            assert queue.offer_nowait(x)
        await settle()
        count = len(asyncio.all_tasks())
        q.cancel()
        await settle()
        return count

    assert await run_and_count(tasks=False) < 10
    assert await run_and_count(tasks=True) > 2000


@SETTINGS
@given(chunked, st.integers(1, 5))
async def test_group_by_keeps_per_key_order_through_operators(case: Any, mod: int) -> None:
    xs, cuts = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .group_by(10, lambda x: x % mod)
        .map(lambda x: (x % mod, x * 2))
        .filter(lambda p: p[1] != 20)
        .merge_substreams()
        .run_with(Sink.collect())
    )
    per_key: dict[int, list[int]] = defaultdict(list)
    for k, v in got:
        per_key[k].append(v)
    model = {k: [x * 2 for x in v if x * 2 != 20] for k, v in groups_model(xs, lambda x: x % mod).items()}
    assert {k: v for k, v in per_key.items()} == {k: v for k, v in model.items() if v}


async def test_group_by_too_many_substreams_is_a_clear_error() -> None:
    src = Source.from_iterable(range(10)).group_by(3, lambda x: x).merge_substreams()
    with pytest.raises(TooManySubstreamsError, match=r"key 3 would open substream 4, more than max_substreams=3"):
        await src.run_with(Sink.collect())


async def test_group_by_completed_substream_drops_or_recreates() -> None:
    xs = [1, 2, 1, 1, 2, 1]
    got = await Source.from_iterable(xs).group_by(5, lambda x: x).take(1).merge_substreams().run_with(
        Sink.collect()
    )
    assert sorted(got) == [1, 2]
    got = await (
        Source.from_iterable(xs)
        .async_boundary()
        .group_by(5, lambda x: x, allow_closed_substream_recreation=True)
        .take(1)
        .merge_substreams()
        .run_with(Sink.collect())
    )
    assert sorted(got) in ([1, 2], [1, 1, 2], [1, 1, 2, 2], [1, 1, 1, 2], [1, 1, 1, 2, 2], [1, 1, 1, 1, 2, 2])
    assert set(got) == {1, 2}


async def test_group_by_completed_keys_free_their_slot_in_max_substreams() -> None:
    clock = VirtualClock()

    async def spaced() -> Any:
        for x in range(20):
            await clock.sleep(1.0)
            yield x

    # each key's substream completes after one element: never more than one is open
    done = (
        Source.from_async_iterable(spaced)
        .group_by(2, lambda x: x)
        .take(1)
        .merge_substreams()
        .to_mat(Sink.collect(), Keep.right)
        .run(clock=clock)
    )
    assert sorted(await clock.run(done)) == list(range(20))


@pytest.mark.parametrize("tasks", [False, True])
async def test_substream_failure_fails_the_stream(tasks: bool) -> None:
    sub = Source.from_iterable([1, 2, 0, 4]).group_by(10, lambda x: x % 2)
    got: list[float] = []
    done = tasks_or_inline(sub, tasks).map(lambda x: 1 // x).merge_substreams().run_with(Sink.foreach(got.append))
    with pytest.raises(ZeroDivisionError) as info:
        await done
    assert "in stage 'map'" in info.value.__notes__
    if not tasks:
        assert got == [1, 0]  # what came before the failing element is delivered


async def test_key_function_failure_and_upstream_failure() -> None:
    src = Source.from_iterable([1, 2]).group_by(10, lambda x: 1 // (x - 2)).merge_substreams()
    with pytest.raises(ZeroDivisionError):
        await src.run_with(Sink.collect())
    src = Source.from_iterable([1, 0]).map(lambda x: 1 // x).group_by(10, str).merge_substreams()
    with pytest.raises(ZeroDivisionError):
        await src.run_with(Sink.collect())


async def test_run_supervision_default_reaches_substreams() -> None:
    graph = (
        Source.from_iterable([1, 0, 2, 0, 3])
        .group_by(3, lambda x: x % 2)
        .map(lambda x: 6 // x)
        .merge_substreams()
        .to_mat(Sink.collect(), Keep.right)
    )
    assert sorted(await graph.run(supervision=Supervision.resume)) == [2, 3, 6]


async def test_group_by_on_a_flow_and_sub_via() -> None:
    flow = Flow.map(lambda x: x + 1).group_by(4, lambda x: x % 2).via(Flow.map(lambda x: -x)).merge_substreams()
    got = await Source.from_iterable(range(6)).via(flow).run_with(Sink.collect())
    assert sorted(got) == [-6, -5, -4, -3, -2, -1]


def test_subflow_rejects_what_is_not_an_operator() -> None:
    sub = Source.from_iterable([1]).group_by(2, str)
    with pytest.raises(AttributeError, match="no operator 'to_mat'"):
        sub.to_mat  # noqa: B018
    with pytest.raises(TypeError, match="not available inside substreams"):
        sub.group_by(2, str)
    assert "merge_substreams" in dir(sub) and "map" in dir(sub)
    assert repr(sub.map(str)) == "SubFlow(group_by: map)"


async def test_slow_substream_backpressures_upstream() -> None:
    """One stalled substream stops the group_by, which stops the source: nothing piles up."""
    clock = VirtualClock()
    pulled = 0

    def numbers() -> Any:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield i

    gate = asyncio.Event()

    async def slow(x: int) -> int:
        if x % 10 == 0:
            await gate.wait()
        return x

    done = (
        Source.from_iterator(numbers)
        .group_by(10, lambda x: x % 10)
        .map_async(1, slow)
        .merge_substreams()
        .to_mat(Sink.fold(0, lambda n, _x: n + 1), Keep.right)
        .run(clock=clock)
    )
    await clock.settle()
    stalled_at = pulled
    await clock.advance(60.0)  # neither more time nor more running moves it on
    assert pulled == stalled_at
    # bounded: the stalled substream's buffers plus a few chunks in channels
    assert stalled_at < 10 * 10 * 2 * 256 + 8 * 4096
    done.cancel()
    with pytest.raises(asyncio.CancelledError):
        await done


async def test_cancelling_the_run_cancels_every_substream() -> None:
    started: list[int] = []

    async def forever(x: int) -> int:
        started.append(x)
        await asyncio.Event().wait()
        return x

    done = (
        Source.from_iterable(range(50))
        .group_by(100, lambda x: x)
        .map_async(1, forever)
        .merge_substreams()
        .run_with(Sink.ignore())
    )
    await settle()
    assert len(started) == 50
    done.cancel()
    with pytest.raises(asyncio.CancelledError):
        await done


# -- split_when / split_after --------------------------------------------------------------------


def split_model(xs: list[int], p: Any, after: bool) -> list[list[int]]:
    out: list[list[int]] = []
    cur: list[int] | None = None
    for x in xs:
        if after:
            if cur is None:
                cur = []
                out.append(cur)
            cur.append(x)
            if p(x):
                cur = None
        else:
            if cur is None or (p(x) and cur):
                cur = []
                out.append(cur)
            cur.append(x)
    return out


@SETTINGS
@given(chunked, st.booleans(), st.integers(2, 5), st.booleans())
async def test_split_matches_model(case: Any, after: bool, mod: int, tasks: bool) -> None:
    xs, cuts = case

    def p(x: int) -> bool:
        return x % mod == 0

    src = source_from_chunks(split_at(xs, cuts))
    sub = tasks_or_inline(src.split_after(p) if after else src.split_when(p), tasks)
    got = await sub.fold([], lambda acc, x: acc + [x]).concat_substreams().run_with(Sink.collect())
    assert got == split_model(xs, p, after)


@pytest.mark.parametrize("tasks", [False, True])
async def test_split_when_merge_and_early_completion_drops_until_next_split(tasks: bool) -> None:
    sub = Source.from_iterable([0, 1, 2, 0, 3, 4, 0]).split_when(lambda x: x == 0)
    got = await tasks_or_inline(sub, tasks).take(2).concat_substreams().run_with(Sink.collect())
    assert got == [0, 1, 0, 3, 0]
    got = await (
        Source.from_iterable(range(10)).split_after(lambda x: x % 3 == 2).fold(0, operator.add).merge_substreams()
    ).run_with(Sink.collect())
    assert sorted(got) == sorted([3, 12, 21, 9])


# -- flat_map ---------------------------------------------------------------------------------------


@SETTINGS
@given(chunked)
async def test_flat_map_concat_matches_model(case: Any) -> None:
    xs, cuts = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .flat_map_concat(lambda n: Source.from_iterable([n] * (n % 4)))
        .run_with(Sink.collect())
    )
    assert got == [n for n in xs for _ in range(n % 4)]


@SETTINGS
@given(chunked, st.integers(1, 4))
async def test_flat_map_merge_same_multiset_and_per_source_order(case: Any, breadth: int) -> None:
    xs, cuts = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .zip_with_index()
        .flat_map_merge(breadth, lambda p: Source.from_iterable([(p[1], k) for k in range(p[0] % 4)]))
        .run_with(Sink.collect())
    )
    assert sorted(got) == sorted((i, k) for i, n in enumerate(xs) for k in range(n % 4))
    for i in range(len(xs)):
        mine = [k for j, k in got if j == i]
        assert mine == sorted(mine)


async def test_flat_map_merge_runs_at_most_breadth_sources() -> None:
    running = 0
    peak = 0

    async def work(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        return x

    def source_of(x: int) -> Source[int, None]:
        return Source.single(x).map_async(1, work)

    got = await Source.from_iterable(range(30)).flat_map_merge(3, source_of).run_with(Sink.collect())
    assert sorted(got) == list(range(30))
    assert peak <= 3


async def test_flat_map_wrong_return_type_is_clear() -> None:
    with pytest.raises(TypeError, match="f must return a Source, got \\[1\\] for element 1"):
        await Source.single(1).flat_map_concat(lambda x: [x]).run_with(Sink.collect())  # type: ignore[arg-type, return-value]


async def test_flat_map_concat_inner_failure_and_downstream_cancel() -> None:
    with pytest.raises(ZeroDivisionError):
        await Source.from_iterable([1, 0]).flat_map_concat(lambda x: Source.single(x).map(lambda y: 1 // y)).run_with(
            Sink.collect()
        )
    got = await Source.repeat(1).flat_map_concat(lambda x: Source.repeat(x)).take(5).run_with(Sink.collect())
    assert got == [1] * 5
