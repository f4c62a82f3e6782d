"""Tables against batch models: contents, change streams, versions, aggregates, restarts."""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Change, Keep, MemoryStore, RocksDBStore, Sink, Source, Table, TableView
from streamlib.testing import source_from_chunks, split_at

Update = tuple[str, Any, int]  # (key, value or None, ts)


# -- batch models, from the documented semantics ----------------------------------------


def model_latest(updates: list[Update]) -> tuple[dict[str, Any], list[Change[str, Any]]]:
    """Latest-only table: updates in arrival order; None deletes; a delete of an absent key changes nothing."""
    table: dict[str, Any] = {}
    changes: list[Change[str, Any]] = []
    for k, v, ts in updates:
        old = table.get(k)
        if v is None:
            if old is not None:
                del table[k]
                changes.append(Change(k, old, None, ts))
        else:
            table[k] = v
            changes.append(Change(k, old, v, ts))
    return table, changes


def model_as_of(updates: list[Update], key: str, t: int) -> Any:
    """The value of the update of ``key`` with the greatest (ts, arrival) at or before ``t``."""
    best = None
    for i, (k, v, ts) in enumerate(updates):
        if k == key and ts <= t and (best is None or (ts, i) >= best[0]):
            best = ((ts, i), v)
    return None if best is None else best[1]


def model_versioned_changes(updates: list[Update]) -> list[Change[str, Any]]:
    """A change is emitted when an update is not older than the key's newest update so far (the latest moves)."""
    newest: dict[str, int] = {}
    latest: dict[str, Any] = {}
    changes: list[Change[str, Any]] = []
    for k, v, ts in updates:
        if k in newest and ts < newest[k]:
            continue  # older than the latest: goes into the history only
        newest[k] = ts
        old = latest.get(k)
        latest[k] = v
        if old is not None or v is not None:
            changes.append(Change(k, old, v, ts))
    return changes


@st.composite
def updates_with_disorder(draw: Any, max_size: int = 50) -> tuple[list[Update], int]:
    """Updates (key, value | None, ts) whose timestamps stay within a disorder bound."""
    n = draw(st.integers(0, max_size))
    bound = draw(st.integers(0, 30))
    ts = sorted(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    values = st.one_of(st.none(), st.integers(0, 9))
    raw = [(draw(st.sampled_from("abcd")), draw(values), t) for t in ts]
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [raw[i] for i in order], bound


def _store(kind: str, tmp: str) -> Any:
    return MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db")) if kind == "rocksdb" else None


def _source(chunks: list[list[Update]], store: Any, every: int) -> Source[Update, None]:
    src = source_from_chunks(chunks)
    return src if store is None else src.checkpointed(store, every=every)


async def _changes_and_view(table: Table[Any, Any]) -> tuple[list[Change[Any, Any]], TableView[Any, Any]]:
    view, done = table.to_stream_mat(Keep.right).to_mat(Sink.collect(), Keep.both).run()
    return await done, view


# -- latest-value tables ------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    data=updates_with_disorder(),
    cuts=st.lists(st.integers(0, 50), max_size=8),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 10),
)
async def test_contents_and_changes_equal_the_model(
    data: tuple[list[Update], int], cuts: list[int], kind: str, every: int
) -> None:
    updates, _bound = data
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        table = _source(split_at(updates, cuts), store, every).key_by(0).to_table(value=1)
        changes, view = await _changes_and_view(table)
        expected, expected_changes = model_latest([(k, v, ts) for k, v, ts in updates])
        assert [Change(c.key, c.old, c.new) for c in changes] == [Change(c.key, c.old, c.new) for c in expected_changes]
        assert view.to_dict() == expected
        assert all(view.get(k) == expected.get(k) for k in "abcd")
        assert len(view) == len(expected)
        if store is not None:
            # the table is checkpointed: a second run over the same store resumes at the end, with the rows
            changes2, view2 = await _changes_and_view(
                _source(split_at(updates, cuts), store, every).key_by(0).to_table(value=1)
            )
            assert changes2 == [] and view2.to_dict() == expected
            store.close()


@settings(max_examples=100, deadline=None)
@given(data=updates_with_disorder(), cuts=st.lists(st.integers(0, 50), max_size=8))
async def test_map_values_and_filter_derive_their_changes_and_reads(
    data: tuple[list[Update], int], cuts: list[int]
) -> None:
    updates, _ = data
    base = source_from_chunks(split_at(updates, cuts)).key_by(0).to_table(value=1)
    expected, base_changes = model_latest(updates)

    mapped_changes, mapped = await _changes_and_view(base.map_values(lambda v: v * 10))
    assert mapped.to_dict() == {k: v * 10 for k, v in expected.items()}
    assert [(c.key, c.old, c.new) for c in mapped_changes] == [
        (c.key, None if c.old is None else c.old * 10, None if c.new is None else c.new * 10) for c in base_changes
    ]

    filtered_changes, filtered = await _changes_and_view(base.filter(lambda v: v % 2 == 0))
    assert filtered.to_dict() == {k: v for k, v in expected.items() if v % 2 == 0}
    want = []
    for c in base_changes:
        old = c.old if c.old is not None and c.old % 2 == 0 else None
        new = c.new if c.new is not None and c.new % 2 == 0 else None
        if old is not None or new is not None:
            want.append((c.key, old, new))
    assert [(c.key, c.old, c.new) for c in filtered_changes] == want
    # applying the filtered changes in order gives the filtered table: a row filtered out became a delete
    applied: dict[str, Any] = {}
    for c in filtered_changes:
        assert applied.get(c.key) == c.old
        if c.new is None:
            applied.pop(c.key)
        else:
            applied[c.key] = c.new
    assert applied == filtered.to_dict()


async def test_a_tombstone_deletes_and_a_delete_of_an_absent_key_emits_nothing() -> None:
    table = Table.from_source(Source.from_iterable([("a", 1), ("x", None), ("a", None), ("a", 2)]), key=0, value=1)
    changes, view = await _changes_and_view(table)
    assert changes == [Change("a", None, 1), Change("a", 1, None), Change("a", None, 2)]
    assert view.get("a") == 2 and view.get("x") is None and "x" not in view and view.get("x", 0) == 0


async def test_a_table_of_whole_elements_and_from_a_flow_is_refused() -> None:
    from streamlib import Flow

    table = Source.from_iterable([{"k": "a", "n": 1}, {"k": "a", "n": 2}]).key_by("k").to_table()
    changes, view = await _changes_and_view(table)
    assert view.get("a") == {"k": "a", "n": 2} and len(changes) == 2
    with pytest.raises(TypeError, match="needs a Source"):
        Flow().key_by("k").to_table()  # type: ignore[misc]


# -- versioned tables ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    data=updates_with_disorder(),
    cuts=st.lists(st.integers(0, 50), max_size=8),
    history=st.integers(0, 120),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 10),
)
async def test_versions_and_as_of_reads_equal_the_model(
    data: tuple[list[Update], int], cuts: list[int], history: int, kind: str, every: int
) -> None:
    updates, bound = data
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        table = (
            _source(split_at(updates, cuts), store, every)
            .with_timestamps(lambda u: u[2], max_out_of_orderness=bound)
            .key_by(0)
            .to_table(value=1, history=history)
        )
        changes, view = await _changes_and_view(table)
        assert changes == model_versioned_changes(updates)
        final_wm = max((u[2] for u in updates), default=0) - bound
        for k in "abcd":
            assert view.get(k) == (model_versioned_changes([u for u in updates if u[0] == k]) or [Change(k, None, None)])[-1].new
            for t in range(final_wm - history, 310):
                assert view.as_of(k, t) == model_as_of(updates, k, t), (k, t)
        if store is not None:
            store.close()


async def test_as_of_on_a_latest_only_table_says_how_to_get_versions() -> None:
    table = Source.from_iterable([("a", 1)]).key_by(0).to_table(value=1)
    _changes, view = await _changes_and_view(table)
    with pytest.raises(ValueError, match="history="):
        view.as_of("a", 0)
    with pytest.raises(ValueError, match="with_timestamps"):
        Source.from_iterable([("a", 1)]).key_by(0).to_table(value=1, history=1000)


# -- aggregates ------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from("abc"), st.integers(-5, 9)), max_size=50),
    cuts=st.lists(st.integers(0, 50), max_size=8),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
)
async def test_an_aggregate_without_windows_is_a_table_of_running_values(
    events: list[tuple[str, int]], cuts: list[int], kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        src: Source[tuple[str, int], None] = source_from_chunks(split_at(events, cuts))
        if store is not None:
            src = src.checkpointed(store, every=3)
        totals = src.key_by(0).aggregate(0, lambda n, e: n + e[1])
        changes, view = await _changes_and_view(totals)
        running: dict[str, int] = defaultdict(int)
        want = []
        for k, x in events:
            old = running.get(k)
            running[k] += x
            want.append(Change(k, old, running[k]))
        assert changes == want
        assert view.to_dict() == dict(running)
        if store is not None:
            store.close()


# -- restarts from checkpoints -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=updates_with_disorder(),
    every=st.integers(1, 8),
    fail_at=st.integers(0, 60),
    kind=st.sampled_from(["memory", "rocksdb"]),
    history=st.sampled_from([None, 50]),
)
async def test_a_table_restarted_from_its_checkpoint_ends_with_the_model_contents(
    data: tuple[list[Update], int], every: int, fail_at: int, kind: str, history: int | None
) -> None:
    updates, bound = data
    indexed = [(k, v, ts, i) for i, (k, v, ts) in enumerate(updates)]

    def blueprint(store: Any, armed: bool) -> Table[Any, Any]:
        def maybe_fail(u: tuple[str, Any, int, int]) -> tuple[str, Any, int, int]:
            if armed and u[3] == fail_at:
                raise RuntimeError("crash")
            return u

        return (
            Source.from_iterable(indexed)
            .checkpointed(store, every=every)
            .map(maybe_fail)
            .with_timestamps(lambda u: u[2], max_out_of_orderness=bound)
            .key_by(0)
            .to_table(value=1, history=history)
        )

    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        first: list[Change[Any, Any]] = []
        run = blueprint(store, True).to_stream().to_mat(Sink.foreach(first.append), Keep.right).run()
        if fail_at < len(updates):
            with pytest.raises(RuntimeError, match="crash"):
                await run
        else:
            await run
        second, view = await _changes_and_view(blueprint(store, False))
        want = model_versioned_changes(updates) if history is not None else model_latest(updates)[1]
        # the second run re-emits the changes after the last checkpoint: a suffix of the model's changes
        assert second == want[len(want) - len(second) :]
        assert set(first) | set(second) == set(want)
        expected = {k: v for k in "abcd" if (v := model_as_of(updates, k, 10**9)) is not None}
        if history is None:
            expected = model_latest(updates)[0]
        assert view.to_dict() == expected
        store.close()
