"""Stream-stream windowed joins against a batch model of the documented semantics."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import JoinWindows, LateDataError, LateRecord, MemoryStore, RocksDBStore, Sink, Source
from streamlib.testing import TestSink, settle, source_from_chunks, split_at

Ev = tuple[str, int, str]  # (key, ts, id)


def model(a: list[Ev], b: list[Ev], before: int, after: int, how: str) -> Counter[tuple[str | None, str | None]]:
    """The documented result: pairs with equal keys and b.ts - a.ts in [-before, after]; unmatched rows once."""
    out: Counter[tuple[str | None, str | None]] = Counter()
    matched_a: set[str] = set()
    matched_b: set[str] = set()
    for ka, ta, ia in a:
        for kb, tb, ib in b:
            if ka == kb and -before <= tb - ta <= after:
                out[(ia, ib)] += 1
                matched_a.add(ia)
                matched_b.add(ib)
    if how in ("left", "outer"):
        out.update((ia, None) for _, _, ia in a if ia not in matched_a)
    if how == "outer":
        out.update((None, ib) for _, _, ib in b if ib not in matched_b)
    return out


def ids(x: Any, y: Any) -> tuple[str | None, str | None]:
    return (None if x is None else x[2], None if y is None else y[2])


@st.composite
def disordered(draw: Any, prefix: str, disorder: int) -> list[Ev]:
    """Events whose timestamps lag the largest one before them by at most ``disorder``."""
    n = draw(st.integers(0, 25))
    base = 0
    out: list[Ev] = []
    for i in range(n):
        base += draw(st.integers(0, 40))
        ts = base + draw(st.integers(0, disorder))
        out.append((draw(st.sampled_from("xyz")), ts, f"{prefix}{i}"))
    return out


cases = st.integers(0, 30).flatmap(
    lambda d: st.tuples(st.just(d), disordered("a", d), disordered("b", d))
)
windows = st.tuples(st.integers(-20, 60), st.integers(0, 80), st.integers(0, 50)).map(
    lambda t: JoinWindows(before=t[0], after=max(t[1], -t[0]), grace=t[2])
)


def _store(kind: str, tmp: str) -> Any:
    return {"none": None, "memory": MemoryStore(), "rocksdb": None}[kind] if kind != "rocksdb" else RocksDBStore(
        os.path.join(tmp, "db")
    )


@settings(max_examples=150, deadline=None)
@given(
    case=cases,
    within=windows,
    how=st.sampled_from(["inner", "left", "outer"]),
    cuts_a=st.lists(st.integers(0, 25), max_size=6),
    cuts_b=st.lists(st.integers(0, 25), max_size=6),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 8),
)
async def test_join_equals_the_batch_model(
    case: tuple[int, list[Ev], list[Ev]],
    within: JoinWindows,
    how: str,
    cuts_a: list[int],
    cuts_b: list[int],
    kind: str,
    every: int,
) -> None:
    disorder, a, b = case
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        left = source_from_chunks(split_at(a, cuts_a))
        right = source_from_chunks(split_at(b, cuts_b))
        if store is not None:
            left = left.checkpointed(store, every=every, name="a")
            right = right.checkpointed(store, every=every, name="b")
        left = left.with_timestamps(lambda e: e[1], max_out_of_orderness=disorder)
        right = right.with_timestamps(lambda e: e[1], max_out_of_orderness=disorder)
        joined = left.join(right, key=0, within=within, combine=ids, how=how)  # type: ignore[call-overload]
        got = await joined.run_with(Sink.collect())
        assert Counter(got) == model(a, b, within.before, within.after, how)
        if store is not None:
            store.close()


@settings(max_examples=60, deadline=None)
@given(
    case=cases,
    within=windows,
    how=st.sampled_from(["inner", "left", "outer"]),
    cuts_a=st.lists(st.integers(0, 25), max_size=6),
    cuts_b=st.lists(st.integers(0, 25), max_size=6),
    kind=st.sampled_from(["memory", "rocksdb"]),
    every=st.integers(1, 5),
    fail_at=st.integers(0, 30),
)
async def test_a_join_restarted_from_its_checkpoint_loses_nothing_and_invents_nothing(
    case: tuple[int, list[Ev], list[Ev]],
    within: JoinWindows,
    how: str,
    cuts_a: list[int],
    cuts_b: list[int],
    kind: str,
    every: int,
    fail_at: int,
) -> None:
    disorder, a, b = case
    armed = [True]

    def maybe_fail(e: Ev) -> Ev:
        if armed[0] and e[2] == f"b{fail_at}":
            raise RuntimeError("crash")
        return e

    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)

        def build() -> Any:
            left = source_from_chunks(split_at(a, cuts_a)).checkpointed(store, every=every, name="a")
            right = source_from_chunks(split_at(b, cuts_b)).checkpointed(store, every=every, name="b").map(maybe_fail)
            left = left.with_timestamps(lambda e: e[1], max_out_of_orderness=disorder)
            right = right.with_timestamps(lambda e: e[1], max_out_of_orderness=disorder)
            return left.join(right, key=0, within=within, combine=ids, how=how)

        out: list[Any] = []
        if fail_at < len(b):
            with pytest.raises(RuntimeError, match="crash"):
                await build().run_with(Sink.foreach(out.append))
        armed[0] = False
        second: list[Any] = []
        await build().run_with(Sink.foreach(second.append))
        expected = model(a, b, within.before, within.after, how)
        # at-least-once output across the crash: every result, nothing spurious
        assert set(out) | set(second) == set(expected)
        # the second run alone completes what the last checkpoint did not cover
        assert set(expected) - set(out) <= set(second)
        store.close()


# -- driving both inputs by hand -----------------------------------------------


def queue_source() -> tuple[asyncio.Queue[Ev | None], Source[Ev, None]]:
    q: asyncio.Queue[Ev | None] = asyncio.Queue()

    async def gen() -> AsyncIterator[Ev]:
        while True:
            item = await q.get()
            if item is None:
                return
            yield item

    return q, Source.from_async_iterable(gen)


async def test_unmatched_left_rows_wait_until_the_window_closed_and_come_once() -> None:
    qa, a = queue_source()
    qb, b = queue_source()
    joined = a.with_timestamps(lambda e: e[1]).join(
        b.with_timestamps(lambda e: e[1]),
        key=0,
        within=JoinWindows(before=0, after=1000, grace=500),
        combine=ids,
        how="left",
    )
    sink = joined.run_with(TestSink.probe())
    sink.request(100)
    await qa.put(("k", 1000, "a1"))
    await qb.put(("k", 9000, "b1"))  # right watermark far ahead; the left one holds the join at 1000
    await settle()
    await sink.expect_no_message(0)
    await qa.put(("z", 2400, "a2"))  # watermark 2400: 2400 - grace 500 is not past 1000 + 1000
    await settle()
    await sink.expect_no_message(0)
    await qa.put(("k", 2000, "a3"))  # still on time (2000 >= 2400 - 500); b1 is out of its window
    await qa.put(("z", 2600, "a4"))  # 2600 - 500 > 2000: a1's window closed
    assert await sink.expect_next() == ("a1", None)
    await settle()
    await sink.expect_no_message(0)  # a3 closes only when the watermark passes 2000 + 1000 + 500
    await qa.put(None)  # left ends: the right input's watermark alone closes everything
    got = [await sink.expect_next() for _ in range(3)]
    assert sorted(got, key=str) == sorted([("a3", None), ("a2", None), ("a4", None)], key=str)
    await qb.put(None)
    await sink.expect_complete()


async def test_inner_results_come_as_soon_as_the_pair_exists() -> None:
    qa, a = queue_source()
    qb, b = queue_source()
    joined = a.with_timestamps(lambda e: e[1]).join(
        b.with_timestamps(lambda e: e[1]), key=0, within=JoinWindows.within(timedelta(minutes=10)), combine=ids
    )
    sink = joined.run_with(TestSink.probe())
    sink.request(10)
    await qa.put(("k", 0, "a1"))
    await qb.put(("k", 60_000, "b1"))
    assert await sink.expect_next() == ("a1", "b1")
    await qb.put(("k", 700_000, "b2"))  # 11:40 after a1: no pair
    await qa.put(("k", 650_000, "a2"))
    assert await sink.expect_next() == ("a2", "b1")
    assert await sink.expect_next() == ("a2", "b2")
    await qa.put(None)
    await qb.put(None)
    await sink.expect_complete()


async def _late_setup(late: Any) -> tuple[Any, asyncio.Queue[Ev | None], asyncio.Queue[Ev | None], Any]:
    qa, a = queue_source()
    qb, b = queue_source()
    joined = a.with_timestamps(lambda e: e[1]).join(
        b.with_timestamps(lambda e: e[1]), key=0, within=JoinWindows(0, 100), combine=ids, how="left", late=late
    )
    return joined, qa, qb, None


async def test_a_late_element_fails_the_stream_by_default_naming_it() -> None:
    joined, qa, qb, _ = await _late_setup("fail")
    sink = joined.run_with(TestSink.probe())
    sink.request(10)
    await qb.put(("k", 5000, "b1"))
    await qa.put(("k", 5000, "a1"))  # both watermarks at 5000
    assert await sink.expect_next() == ("a1", "b1")
    await qb.put(("k", 10, "b-late"))
    error = await sink.expect_error()
    assert isinstance(error, LateDataError)
    assert "b-late" in str(error) and "late=" in str(error)


async def test_late_elements_can_be_emitted_as_late_records() -> None:
    joined, qa, qb, _ = await _late_setup("emit")
    sink = joined.run_with(TestSink.probe())
    sink.request(10)
    await qb.put(("k", 5000, "b1"))
    await qa.put(("k", 5000, "a1"))
    assert await sink.expect_next() == ("a1", "b1")
    await qa.put(("k", 10, "a-late"))
    record = await sink.expect_next()
    assert isinstance(record, LateRecord)
    assert record.element == ("k", 10, "a-late") and record.timestamp == 10 and record.watermark == 5000
    assert (record.window_start, record.window_end) == (10, 111)  # the right timestamps it could have joined
    await qa.put(None)
    await qb.put(None)
    await sink.expect_complete()  # the late element matched nothing and is no unmatched row either


async def test_late_elements_can_go_to_a_sink() -> None:
    late: list[LateRecord] = []
    joined, qa, qb, _ = await _late_setup(Sink.foreach(late.append))
    done = asyncio.ensure_future(joined.run_with(Sink.collect()))
    await qb.put(("k", 5000, "b1"))
    await qa.put(("k", 5000, "a1"))
    await settle()
    await qa.put(("k", 10, "a-late"))
    await qa.put(None)
    await qb.put(None)
    assert await done == [("a1", "b1")]
    assert [r.element for r in late] == [("k", 10, "a-late")]


# -- state ------------------------------------------------------------------------


class Order(msgspec.Struct, frozen=True):
    order_id: str
    ts: int
    amount: int


class Payment(msgspec.Struct, frozen=True):
    order_id: str
    ts: int


async def test_restored_buffers_decode_to_the_given_element_types() -> None:
    store = MemoryStore()
    orders = [Order(f"o{i}", i * 100, i) for i in range(20)]
    payments = [Payment(f"o{i}", i * 100 + 50) for i in range(0, 20, 2)]
    armed = [True]

    def crash(p: Payment) -> Payment:
        if armed[0] and p.order_id == "o14":
            raise RuntimeError("crash")
        return p

    def build() -> Any:
        o = source_from_chunks(split_at(orders, list(range(0, 20, 3)))).checkpointed(store, every=2, name="o")
        p = source_from_chunks(split_at(payments, list(range(0, 10, 2)))).checkpointed(store, every=2, name="p")
        return o.with_timestamps("ts").join(
            p.map(crash).with_timestamps("ts"),
            key="order_id",
            within=JoinWindows(before=0, after=1000),
            combine=lambda o, p: (o.order_id, o.amount, p is not None and p.ts),
            how="left",
            left_type=Order,
            right_type=Payment,
        )

    with pytest.raises(RuntimeError):
        await build().run_with(Sink.ignore())
    armed[0] = False
    got = await build().run_with(Sink.collect())
    assert ("o19", 19, False) in got and ("o18", 18, 1850) in got


async def test_the_store_holds_only_open_windows() -> None:
    store = MemoryStore()
    n = 2000
    left = [("k", i * 10, f"a{i}") for i in range(n)]
    right = [("k", i * 10 + 5, f"b{i}") for i in range(n)]
    a = source_from_chunks(split_at(left, list(range(0, n, 7))))
    b = source_from_chunks(split_at(right, list(range(0, n, 11))))
    joined = (
        a.checkpointed(store, every=50, name="a")
        .with_timestamps(lambda e: e[1])
        .join(
            b.checkpointed(store, every=50, name="b").with_timestamps(lambda e: e[1]),
            key=0,
            within=JoinWindows.within(100),
            combine=ids,
            name="pay",
        )
    )
    sizes: list[int] = []
    store.add_commit_hook(lambda c: sizes.append(store.table("pay").count()))
    got = await joined.run_with(Sink.collect())
    assert Counter(got) == model(left, right, 100, 100, "inner")
    # rows of buffered elements stay within a few windows' worth however long the stream runs
    assert len(sizes) > 20 and max(sizes) < 300


# -- errors -----------------------------------------------------------------------


def test_bad_join_arguments_are_named() -> None:
    a = Source.from_iterable([("k", 1, "a")]).with_timestamps(lambda e: e[1])
    b = Source.from_iterable([("k", 1, "b")]).with_timestamps(lambda e: e[1])
    w = JoinWindows(0, 10)
    with pytest.raises(ValueError, match="right input has no event time"):
        a.join(Source.from_iterable([1]), key=0, within=w, combine=ids)
    with pytest.raises(ValueError, match="left input has no event time"):
        Source.from_iterable([1]).join(b, key=0, within=w, combine=ids)
    with pytest.raises(TypeError, match="within=JoinWindows"):
        a.join(b, key=0, combine=ids)
    with pytest.raises(TypeError, match="key_a= and key_b="):
        a.join(b, key_a=0, within=w, combine=ids)
    with pytest.raises(ValueError, match="how="):
        a.join(b, key=0, within=w, combine=ids, how="right")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="needs a Source"):
        a.join([1, 2], key=0, within=w, combine=ids)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="matches nothing"):
        JoinWindows(before=-10, after=5)
    with pytest.raises(ValueError, match="grace"):
        JoinWindows(0, 10, grace=-1)
    with pytest.raises(TypeError, match="timedelta"):
        JoinWindows(before=1.5)  # type: ignore[arg-type]


def test_different_stores_on_the_two_inputs_are_refused() -> None:
    a = Source.from_iterable([("k", 1, "a")]).checkpointed(MemoryStore(), every=1).with_timestamps(lambda e: e[1])
    b = Source.from_iterable([("k", 1, "b")]).checkpointed(MemoryStore(), every=1).with_timestamps(lambda e: e[1])
    with pytest.raises(ValueError, match="different stores"):
        a.join(b, key=0, within=JoinWindows(0, 10), combine=ids)


async def test_a_join_in_a_flow_takes_the_other_source_when_it_runs() -> None:
    from streamlib import Flow

    b = Source.from_iterable([("k", 5, "b1"), ("j", 7, "b2")]).with_timestamps(lambda e: e[1])
    flow = (
        Flow[Ev, Ev, None]()
        .with_timestamps(lambda e: e[1])
        .join(b, key=0, within=JoinWindows(10, 10), combine=ids, how="outer")
    )
    got = await Source.from_iterable([("k", 1, "a1"), ("x", 2, "a2")]).via(flow).run_with(Sink.collect())
    assert Counter(got) == Counter([("a1", "b1"), ("a2", None), (None, "b2")])
