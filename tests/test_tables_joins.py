"""Stream-table and table-table joins against batch models written from docs/joins.md."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Change, Keep, MemoryStore, RocksDBStore, Sink, Source, Table
from streamlib.testing import source_from_chunks, split_at

from test_tables import Update, model_as_of, model_latest, model_versioned_changes, updates_with_disorder

Element = tuple[int, str, int]  # (id, key, ts)


@st.composite
def elements_with_disorder(draw: Any, max_size: int = 40) -> tuple[list[Element], int]:
    n = draw(st.integers(0, max_size))
    bound = draw(st.integers(0, 30))
    ts = sorted(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    keys = [draw(st.sampled_from("abcde")) for _ in range(n)]
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [(i, keys[i], ts[i]) for i in order], bound


def model_stream_table(
    elements: list[Element], updates: list[Update], how: str, versioned: bool
) -> Counter[tuple[int, Any]]:
    """Each element joins the table's value for its key as of its event time (None: no row).

    A versioned table answers from all its updates; a latest-only table from its changes (applied in
    event-time order), which leave out deletes of absent keys.
    """
    if not versioned:
        updates = [(c.key, c.new, c.timestamp) for c in model_latest(updates)[1]]  # type: ignore[misc]
    out: Counter[tuple[int, Any]] = Counter()
    for i, k, t in elements:
        v = model_as_of(updates, k, t)
        if v is not None or how == "left":
            out[(i, v)] += 1
    return out


def _store(kind: str, tmp: str) -> Any:
    return MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db")) if kind == "rocksdb" else None


def _pair(e: Element, v: Any) -> tuple[int, Any]:
    return (e[0], v)


# -- stream-table join --------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    stream=elements_with_disorder(),
    table=updates_with_disorder(),
    cuts_s=st.lists(st.integers(0, 40), max_size=6),
    cuts_t=st.lists(st.integers(0, 50), max_size=6),
    how=st.sampled_from(["inner", "left"]),
    history=st.sampled_from([None, 0, 40]),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 6),
)
async def test_stream_table_join_equals_the_as_of_model(
    stream: tuple[list[Element], int],
    table: tuple[list[Update], int],
    cuts_s: list[int],
    cuts_t: list[int],
    how: str,
    history: int | None,
    kind: str,
    every: int,
) -> None:
    elements, bound_s = stream
    updates, bound_t = table
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        s = source_from_chunks(split_at(elements, cuts_s))
        t = source_from_chunks(split_at(updates, cuts_t))
        if store is not None:
            s = s.checkpointed(store, every=every, name="s")
            t = t.checkpointed(store, every=every, name="t")
        tbl = t.with_timestamps(lambda u: u[2], max_out_of_orderness=bound_t).key_by(0).to_table(value=1, history=history)
        joined = s.with_timestamps(lambda e: e[2], max_out_of_orderness=bound_s).join(
            tbl, key=1, combine=_pair, how=how  # type: ignore[arg-type]
        )
        got = await joined.run_with(Sink.collect())
        assert Counter(got) == model_stream_table(elements, updates, how, history is not None)
        if store is not None:
            store.close()


@settings(max_examples=60, deadline=None)
@given(
    elements=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("abc"), st.integers(0, 100)), max_size=30),
    updates=st.lists(st.tuples(st.sampled_from("abc"), st.one_of(st.none(), st.integers(0, 9)), st.integers(0, 100)), max_size=30),
    how=st.sampled_from(["inner", "left"]),
    history=st.sampled_from([None, 1000]),
)
async def test_bounded_inputs_in_any_order_join_as_of_each_element(
    elements: list[Element], updates: list[Update], how: str, history: int | None
) -> None:
    # bounded=True emits no watermark: everything is released in event-time order at the end
    tbl = (
        Source.from_iterable(updates).with_timestamps(lambda u: u[2], bounded=True).key_by(0).to_table(value=1, history=history)
    )
    joined = Source.from_iterable(elements).with_timestamps(lambda e: e[2], bounded=True).join(
        tbl, key=1, combine=_pair, how=how  # type: ignore[arg-type]
    )
    assert Counter(await joined.run_with(Sink.collect())) == model_stream_table(elements, updates, how, history is not None)


@settings(max_examples=50, deadline=None)
@given(
    stream=elements_with_disorder(),
    table=updates_with_disorder(),
    cuts_s=st.lists(st.integers(0, 40), max_size=6),
    how=st.sampled_from(["inner", "left"]),
    history=st.sampled_from([None, 40]),
    kind=st.sampled_from(["memory", "rocksdb"]),
    every=st.integers(1, 5),
    fail_at=st.integers(0, 45),
)
async def test_a_stream_table_join_restarted_from_its_checkpoint_loses_and_invents_nothing(
    stream: tuple[list[Element], int],
    table: tuple[list[Update], int],
    cuts_s: list[int],
    how: str,
    history: int | None,
    kind: str,
    every: int,
    fail_at: int,
) -> None:
    elements, bound_s = stream
    updates, bound_t = table
    armed = [True]

    def maybe_fail(e: Element) -> Element:
        if armed[0] and e[0] == fail_at:
            raise RuntimeError("crash")
        return e

    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)

        def build() -> Any:
            t = source_from_chunks([[u] for u in updates]).checkpointed(store, every=every, name="t")
            tbl = t.with_timestamps(lambda u: u[2], max_out_of_orderness=bound_t).key_by(0).to_table(value=1, history=history)
            s = source_from_chunks(split_at(elements, cuts_s)).checkpointed(store, every=every, name="s").map(maybe_fail)
            return s.with_timestamps(lambda e: e[2], max_out_of_orderness=bound_s).join(tbl, key=1, combine=_pair, how=how)

        first: list[Any] = []
        if any(e[0] == fail_at for e in elements):
            with pytest.raises(RuntimeError, match="crash"):
                await build().run_with(Sink.foreach(first.append))
        armed[0] = False
        second: list[Any] = []
        await build().run_with(Sink.foreach(second.append))
        expected = set(model_stream_table(elements, updates, how, history is not None))
        assert set(first) | set(second) == expected
        assert expected - set(first) <= set(second)
        store.close()


async def test_a_table_read_to_its_end_does_not_hold_the_stream_until_the_stream_checkpoints() -> None:
    """The table's source ends right after its last barrier; the stream's first barrier is far away."""
    from streamlib.testing import TestSink, TestSource

    store = MemoryStore()
    customers = Source.from_iterable([("c1", "Ann", 0), ("c2", "Bob", 0)]).checkpointed(store, every=100, name="t")
    table = customers.with_timestamps(2).key_by(0).to_table(value=1)
    stream = TestSource.probe(capacity=10).checkpointed(store, every=1000, replayable=False, name="s")
    joined = stream.with_timestamps(2).join(table, key=1, combine=_pair)
    src, sink = joined.to_mat(TestSink.probe(), Keep.both).run()
    sink.request(2)
    await src.send_chunk([(1, "c2", 10), (2, "c1", 20), (3, "c9", 30)])  # the watermark passes 10 and 20
    assert [await sink.expect_next(), await sink.expect_next()] == [(1, "Bob"), (2, "Ann")]
    src.send_complete()
    await sink.expect_complete()
    store.close()


async def test_checkpoints_after_the_table_input_ended_still_commit() -> None:
    from streamlib._state.store import Commit

    store = MemoryStore()
    commits: list[Commit] = []
    store.add_commit_hook(commits.append)
    customers = Source.from_iterable([("c1", "Ann", 0)]).checkpointed(store, every=10, name="t")
    table = customers.with_timestamps(2).key_by(0).to_table(value=1)
    orders = source_from_chunks(split_at([(i, "c1", i) for i in range(50)], list(range(5, 50, 5))))
    orders = orders.checkpointed(store, every=10, name="s")
    got = await orders.with_timestamps(2).join(table, key=1, combine=_pair).run_with(Sink.collect())
    assert len(got) == 50
    assert [c.meta["position:s"] for c in commits] == [10, 20, 30, 40, 50, 50]
    last = store.last_checkpoint()
    assert last is not None and last.meta["position:s"] == 50


def test_stream_table_join_errors_name_the_fix() -> None:
    timed = Source.from_iterable([(1, "a", 0)]).with_timestamps(lambda e: e[2])
    untimed_table = Source.from_iterable([("a", 1)]).key_by(0).to_table(value=1)
    with pytest.raises(ValueError, match="with_timestamps"):
        timed.join(untimed_table, key=1, combine=_pair)
    with pytest.raises(ValueError, match="'inner' or 'left'"):
        Source.from_iterable([(1, "a", 0)]).join(untimed_table, key=1, combine=_pair, how="outer")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="key="):
        Source.from_iterable([(1, "a", 0)]).join(untimed_table, combine=_pair)  # type: ignore[call-overload]


# -- table-table join ------------------------------------------------------------------------


def joined(left: Any, right: Any, how: str) -> Any:
    if left is None and (how != "outer" or right is None):
        return None
    if right is None and how == "inner":
        return None
    return (left, right)


def model_table_table(
    left_changes: list[Change[str, Any]], right_changes: list[Change[str, Any]], how: str
) -> tuple[list[Change[str, Any]], dict[str, Any]]:
    """Both change streams applied in (timestamp, left before right, arrival) order; a change per joined-row change.

    Returns the changes and the final joined rows.
    """
    merged = sorted(
        [(c.timestamp, 0, i, c) for i, c in enumerate(left_changes)]
        + [(c.timestamp, 1, i, c) for i, c in enumerate(right_changes)],
        key=lambda x: x[:3],
    )
    sides: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    out: list[Change[str, Any]] = []
    for ts, side, _i, c in merged:
        before = joined(sides[0].get(c.key), sides[1].get(c.key), how)
        if c.new is None:
            if c.key not in sides[side]:
                continue  # applied in event-time order, a delete may find nothing to delete
            del sides[side][c.key]
        else:
            sides[side][c.key] = c.new
        after = joined(sides[0].get(c.key), sides[1].get(c.key), how)
        if before is not None or after is not None:
            out.append(Change(c.key, before, after, ts))
    keys = set(sides[0]) | set(sides[1])
    return out, {k: j for k in keys if (j := joined(sides[0].get(k), sides[1].get(k), how)) is not None}


@settings(max_examples=150, deadline=None)
@given(
    left=updates_with_disorder(),
    right=updates_with_disorder(),
    cuts_l=st.lists(st.integers(0, 50), max_size=6),
    cuts_r=st.lists(st.integers(0, 50), max_size=6),
    how=st.sampled_from(["inner", "left", "outer"]),
    versioned=st.booleans(),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 6),
)
async def test_table_table_join_changes_and_contents_equal_the_model(
    left: tuple[list[Update], int],
    right: tuple[list[Update], int],
    cuts_l: list[int],
    cuts_r: list[int],
    how: str,
    versioned: bool,
    kind: str,
    every: int,
) -> None:
    (lu, lb), (ru, rb) = left, right
    history = 50 if versioned else None
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        ls = source_from_chunks(split_at(lu, cuts_l))
        rs = source_from_chunks(split_at([(k, None if v is None else f"r{v}", ts) for k, v, ts in ru], cuts_r))
        if store is not None:
            ls = ls.checkpointed(store, every=every, name="l")
            rs = rs.checkpointed(store, every=every, name="r")
        lt = ls.with_timestamps(lambda u: u[2], max_out_of_orderness=lb).key_by(0).to_table(value=1, history=history)
        rt = rs.with_timestamps(lambda u: u[2], max_out_of_orderness=rb).key_by(0).to_table(value=1, history=history)
        table = lt.join(rt, lambda a, b: (a, b), how=how)  # type: ignore[arg-type, call-overload]
        view, done = table.to_stream_mat(Keep.right).to_mat(Sink.collect(), Keep.both).run()
        changes = await done
        ru2 = [(k, None if v is None else f"r{v}", ts) for k, v, ts in ru]
        model = model_versioned_changes if versioned else (lambda us: model_latest(us)[1])
        want_changes, want = model_table_table(model(lu), model(ru2), how)
        assert changes == want_changes
        assert view.to_dict() == want
        assert all(view.get(k) == want.get(k) for k in "abcde")
        if store is not None:
            store.close()


@settings(max_examples=60, deadline=None)
@given(
    lu=st.lists(st.tuples(st.sampled_from("abc"), st.one_of(st.none(), st.integers(0, 9)), st.just(0)), max_size=30),
    ru=st.lists(st.tuples(st.sampled_from("abc"), st.one_of(st.none(), st.integers(0, 9)), st.just(0)), max_size=30),
    how=st.sampled_from(["inner", "left", "outer"]),
)
async def test_untimed_table_table_join_ends_with_the_join_of_the_final_tables(
    lu: list[Update], ru: list[Update], how: str
) -> None:
    lt = Source.from_iterable(lu).key_by(0).to_table(value=1)
    rt = Source.from_iterable(ru).key_by(0).to_table(value=1)
    table: Table[str, Any] = lt.join(rt, lambda a, b: (a, b), how=how)  # type: ignore[arg-type, call-overload]
    view, done = table.to_stream_mat(Keep.right).to_mat(Sink.collect(), Keep.both).run()
    changes = await done
    final_l, final_r = model_latest(lu)[0], model_latest(ru)[0]
    want = {k: j for k in "abc" if (j := joined(final_l.get(k), final_r.get(k), how)) is not None}
    assert view.to_dict() == want
    applied: dict[str, Any] = {}  # the changes chain: each old is the previous new, and they end at the join
    for c in changes:
        assert applied.get(c.key) == c.old
        if c.new is None:
            del applied[c.key]
        else:
            applied[c.key] = c.new
    assert applied == want


@settings(max_examples=50, deadline=None)
@given(
    left=updates_with_disorder(max_size=25),
    right=updates_with_disorder(max_size=25),
    how=st.sampled_from(["inner", "left", "outer"]),
    kind=st.sampled_from(["memory", "rocksdb"]),
    every=st.integers(1, 5),
    fail_at=st.integers(0, 30),
)
async def test_a_table_table_join_restarted_from_its_checkpoint_ends_with_the_model(
    left: tuple[list[Update], int],
    right: tuple[list[Update], int],
    how: str,
    kind: str,
    every: int,
    fail_at: int,
) -> None:
    (lu, lb), (ru, rb) = left, right
    armed = [True]

    def maybe_fail(u: tuple[str, Any, int, int]) -> tuple[str, Any, int, int]:
        if armed[0] and u[3] == fail_at:
            raise RuntimeError("crash")
        return u

    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)

        def build() -> Any:
            ls = Source.from_iterable([(k, v, ts, i) for i, (k, v, ts) in enumerate(lu)])
            rs = Source.from_iterable(ru)
            lt = (
                ls.checkpointed(store, every=every, name="l").map(maybe_fail)
                .with_timestamps(lambda u: u[2], max_out_of_orderness=lb).key_by(0).to_table(value=1)
            )  # fmt: skip
            rt = (
                rs.checkpointed(store, every=every, name="r")
                .with_timestamps(lambda u: u[2], max_out_of_orderness=rb).key_by(0).to_table(value=1)
            )  # fmt: skip
            return lt.join(rt, lambda a, b: (a, b), how=how)

        first: list[Any] = []
        if fail_at < len(lu):
            with pytest.raises(RuntimeError, match="crash"):
                await build().to_stream().run_with(Sink.foreach(first.append))
        armed[0] = False
        view, done = build().to_stream_mat(Keep.right).to_mat(Sink.collect(), Keep.both).run()
        second = await done
        want_changes, want = model_table_table(model_latest(lu)[1], model_latest(ru)[1], how)
        assert view.to_dict() == want
        assert set(first) | set(second) == set(want_changes)
        store.close()


async def test_a_flow_joins_a_table_when_it_is_attached_to_a_source() -> None:
    from streamlib import Flow

    table = Source.from_iterable([("a", 1, 0), ("b", 2, 0)]).with_timestamps(lambda u: u[2], bounded=True).key_by(0).to_table(value=1)
    enrich = Flow[tuple[str, int], tuple[str, int], None]().with_timestamps(lambda e: e[1], bounded=True).join(
        table, key=0, combine=lambda e, v: (e[0], v), how="left"
    )
    got = await Source.from_iterable([("a", 5), ("c", 6), ("b", 7)]).via(enrich).run_with(Sink.collect())
    assert sorted(got, key=str) == [("a", 1), ("b", 2), ("c", None)]
