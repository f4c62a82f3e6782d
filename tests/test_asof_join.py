"""The as-of join of two streams against a batch model written from docs/joins.md."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import LateDataError, LateRecord, MemoryStore, RocksDBStore, Sink, Source
from streamlib.testing import source_from_chunks, split_at

Item = tuple[int, str, int]  # (id, key, ts)


@st.composite
def items_with_disorder(draw: Any, max_size: int = 30) -> tuple[list[Item], int]:
    """Elements in arrival order, each at most ``bound`` behind the greatest timestamp before it."""
    n = draw(st.integers(0, max_size))
    bound = draw(st.integers(0, 20))
    ts = sorted(draw(st.lists(st.integers(0, 200), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    keys = [draw(st.sampled_from("abc")) for _ in range(n)]
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [(i, keys[i], ts[i]) for i in order], bound


def model(lefts: list[Item], rights: list[Item], how: str, tolerance: int | None) -> Counter[tuple[int, int | None]]:
    """Each left element with the right element of its key with the greatest ts <= its ts (within tolerance);
    of several with that ts, the last to arrive."""
    out: Counter[tuple[int, int | None]] = Counter()
    for i, k, t in lefts:
        best: Item | None = None
        for r in rights:  # arrival order: a later one at the same ts wins
            if r[1] == k and r[2] <= t and (tolerance is None or t - r[2] <= tolerance):
                if best is None or r[2] >= best[2]:
                    best = r
        if best is not None:
            out[(i, best[0])] += 1
        elif how == "left":
            out[(i, None)] += 1
    return out


def _pair(a: Item, b: Item | None) -> tuple[int, int | None]:
    return (a[0], None if b is None else b[0])


def _store(kind: str, tmp: str) -> Any:
    return MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db")) if kind == "rocksdb" else None


@settings(max_examples=150, deadline=None)
@given(
    left=items_with_disorder(),
    right=items_with_disorder(),
    cuts_l=st.lists(st.integers(0, 30), max_size=6),
    cuts_r=st.lists(st.integers(0, 30), max_size=6),
    how=st.sampled_from(["inner", "left"]),
    tolerance=st.sampled_from([None, 0, 5, 40]),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 6),
)
async def test_as_of_join_equals_the_batch_model(
    left: tuple[list[Item], int],
    right: tuple[list[Item], int],
    cuts_l: list[int],
    cuts_r: list[int],
    how: str,
    tolerance: int | None,
    kind: str,
    every: int,
) -> None:
    lefts, bound_l = left
    rights, bound_r = right
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        a: Any = source_from_chunks(split_at(lefts, cuts_l))
        b: Any = source_from_chunks(split_at(rights, cuts_r))
        if store is not None:
            a = a.checkpointed(store, every=every, name="a")
            b = b.checkpointed(store, every=every, name="b")
        a = a.with_timestamps(2, max_out_of_orderness=bound_l)
        b = b.with_timestamps(2, max_out_of_orderness=bound_r)
        got = await a.join_asof(b, key=1, combine=_pair, how=how, tolerance=tolerance).run_with(Sink.collect())  # type: ignore[call-overload]
        assert Counter(got) == model(lefts, rights, how, tolerance)
        if store is not None:
            store.close()


@settings(max_examples=80, deadline=None)
@given(
    left=items_with_disorder(),
    right=items_with_disorder(),
    cuts_l=st.lists(st.integers(0, 30), max_size=6),
    how=st.sampled_from(["inner", "left"]),
    tolerance=st.sampled_from([None, 10]),
    kind=st.sampled_from(["memory", "rocksdb"]),
    every=st.integers(1, 5),
    fail_at=st.integers(0, 35),
)
async def test_an_as_of_join_restarted_from_its_checkpoint_loses_and_invents_nothing(
    left: tuple[list[Item], int],
    right: tuple[list[Item], int],
    cuts_l: list[int],
    how: str,
    tolerance: int | None,
    kind: str,
    every: int,
    fail_at: int,
) -> None:
    lefts, bound_l = left
    rights, bound_r = right
    armed = [True]

    def maybe_fail(e: Item) -> Item:
        if armed[0] and e[0] == fail_at:
            raise RuntimeError("crash")
        return e

    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)

        def build() -> Any:
            a = source_from_chunks(split_at(lefts, cuts_l)).checkpointed(store, every=every, name="a").map(maybe_fail)
            b = source_from_chunks([[r] for r in rights]).checkpointed(store, every=every, name="b")
            return a.with_timestamps(2, max_out_of_orderness=bound_l).join_asof(  # type: ignore[call-overload]
                b.with_timestamps(2, max_out_of_orderness=bound_r), key=1, combine=_pair, how=how, tolerance=tolerance
            )

        first: list[Any] = []
        if any(e[0] == fail_at for e in lefts):
            with pytest.raises(RuntimeError, match="crash"):
                await build().run_with(Sink.foreach(first.append))
        armed[0] = False
        second = await build().run_with(Sink.collect())
        expected = set(model(lefts, rights, how, tolerance))
        assert set(first) | set(second) == expected
        assert expected - set(first) <= set(second)
        store.close()


async def test_a_left_element_waits_for_the_watermark_of_the_right_input() -> None:
    """A later quote with an earlier timestamp still wins, because the trade waits for the watermark."""
    trades = Source.from_iterable([("x", 10, "t1")]).with_timestamps(1)
    quotes = Source.from_iterable([("x", 2, 1.0), ("x", 20, 3.0), ("x", 8, 2.0)]).with_timestamps(1, max_out_of_orderness=15)
    got = await trades.join_asof(quotes, key=0, combine=lambda t, q: (t[2], q[2])).run_with(Sink.collect())
    assert got == [("t1", 2.0)]


async def test_key_a_key_b_and_a_timedelta_tolerance() -> None:
    trades = Source.from_iterable([{"sym": "x", "ts": 10_000}, {"sym": "x", "ts": 20_000}]).with_timestamps("ts")
    quotes = Source.from_iterable([("x", 9_000, 1.5)]).with_timestamps(1)
    got = await trades.join_asof(
        quotes, key_a="sym", key_b=0, combine=lambda t, q: (t["ts"], q and q[2]),
        tolerance=timedelta(seconds=5), how="left",
    ).run_with(Sink.collect())  # fmt: skip
    assert got == [(10_000, 1.5), (20_000, None)]


async def test_late_elements_fail_or_are_emitted() -> None:
    from streamlib import Keep
    from streamlib.testing import TestSink, TestSource

    def run(late: Any) -> Any:
        quotes = Source.from_iterable([("x", 0, 1.0), ("x", 60, 2.0)]).with_timestamps(1)
        trades = TestSource.probe(capacity=10).with_timestamps(1)
        joined = trades.join_asof(quotes, key=0, combine=lambda t, q: (t[2], q[2]), late=late)
        return joined.to_mat(TestSink.probe(), Keep.both).run()

    src, sink = run("emit")
    sink.request(2)
    await src.send_chunk([("x", 50, "t1")])
    assert await sink.expect_next() == ("t1", 1.0)  # the quotes ended: the watermark is the trades' own, 50
    await src.send_chunk([("x", 10, "t2")])
    record = await sink.expect_next()
    assert isinstance(record, LateRecord) and record.element == ("x", 10, "t2") and record.watermark == 50
    src.send_complete()
    await sink.expect_complete()

    src, sink = run("fail")
    sink.request(2)
    await src.send_chunk([("x", 50, "t1")])
    assert await sink.expect_next() == ("t1", 1.0)
    await src.send_chunk([("x", 10, "t2")])
    error = await sink.expect_error()
    assert isinstance(error, LateDataError) and "late left element" in str(error)


def test_errors_name_the_fix() -> None:
    timed = Source.from_iterable([("x", 1)]).with_timestamps(1)
    plain = Source.from_iterable([("x", 1)])
    with pytest.raises(ValueError, match="with_timestamps"):
        timed.join_asof(plain, key=0, combine=lambda a, b: a)
    with pytest.raises(TypeError, match="key_a= and key_b="):
        timed.join_asof(timed, combine=lambda a, b: a)
    with pytest.raises(ValueError, match="how"):
        timed.join_asof(timed, key=0, combine=lambda a, b: a, how="outer")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="non-negative"):
        timed.join_asof(timed, key=0, combine=lambda a, b: a, tolerance=-1)
