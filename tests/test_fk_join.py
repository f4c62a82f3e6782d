"""Foreign-key table-table join (Table.join_on) against a batch model written from docs/tables.md."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Change, Keep, MemoryStore, RocksDBStore, Sink, Source
from streamlib.testing import source_from_chunks, split_at

from test_tables import Update, model_latest, updates_with_disorder


def fk(v: int) -> str:
    return "abcd"[v % 4]


def pair(v: int, r: Any) -> tuple[int, Any]:
    return (v, r)


def model_fk(
    left: list[Change[str, Any]], right: list[Change[str, Any]], how: str
) -> tuple[dict[str, list[tuple[Any, Any, Any]]], dict[str, Any]]:
    """Both change streams applied in (timestamp, left before right, arrival) order.

    A left change re-joins its row; a right change re-joins every left row whose fk names it.
    Returns each left key's changes (old, new, ts) in order and the final rows.
    """
    merged = sorted(
        [(c.timestamp, 0, i, c) for i, c in enumerate(left)] + [(c.timestamp, 1, i, c) for i, c in enumerate(right)],
        key=lambda x: x[:3],
    )
    rows: tuple[dict[str, Any], dict[str, Any]] = ({}, {})

    def joined(k: str) -> Any:
        v = rows[0].get(k)
        if v is None:
            return None
        r = rows[1].get(fk(v))
        return None if r is None and how == "inner" else pair(v, r)

    out: dict[str, list[tuple[Any, Any, Any]]] = {}
    for ts, side, _i, c in merged:
        keys = [c.key] if side == 0 else [k for k, v in rows[0].items() if fk(v) == c.key]
        befores = [joined(k) for k in keys]
        if c.new is None:
            if c.key not in rows[side]:
                continue  # applied in event-time order, a delete may find nothing to delete
            del rows[side][c.key]
        else:
            rows[side][c.key] = c.new
        for k, before in zip(keys, befores):
            after = joined(k)
            if before is not None or after is not None:
                out.setdefault(k, []).append((before, after, ts))
    return out, {k: j for k in rows[0] if (j := joined(k)) is not None}


def _store(kind: str, tmp: str) -> Any:
    return MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db")) if kind == "rocksdb" else None


def _right(ru: list[Update]) -> list[Update]:
    return [(k, None if v is None else f"r{v}", ts) for k, v, ts in ru]


@settings(max_examples=150, deadline=None)
@given(
    left=updates_with_disorder(),
    right=updates_with_disorder(),
    cuts_l=st.lists(st.integers(0, 50), max_size=6),
    cuts_r=st.lists(st.integers(0, 50), max_size=6),
    how=st.sampled_from(["inner", "left"]),
    kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 6),
)
async def test_foreign_key_join_changes_and_contents_equal_the_model(
    left: tuple[list[Update], int],
    right: tuple[list[Update], int],
    cuts_l: list[int],
    cuts_r: list[int],
    how: str,
    kind: str,
    every: int,
) -> None:
    (lu, lb), (ru, rb) = left, right
    ru = _right(ru)
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)
        ls: Any = source_from_chunks(split_at(lu, cuts_l))
        rs: Any = source_from_chunks(split_at(ru, cuts_r))
        if store is not None:
            ls = ls.checkpointed(store, every=every, name="l")
            rs = rs.checkpointed(store, every=every, name="r")
        lt = ls.with_timestamps(lambda u: u[2], max_out_of_orderness=lb).key_by(0).to_table(value=1)
        rt = rs.with_timestamps(lambda u: u[2], max_out_of_orderness=rb).key_by(0).to_table(value=1)
        table = lt.join_on(rt, fk=fk, combine=pair, how=how)
        view, done = table.to_stream_mat(Keep.right).to_mat(Sink.collect(), Keep.both).run()
        changes = await done
        want_changes, want = model_fk(model_latest(lu)[1], model_latest(ru)[1], how)
        got: dict[str, list[tuple[Any, Any, Any]]] = {}
        for c in changes:
            got.setdefault(c.key, []).append((c.old, c.new, c.timestamp))
        assert got == want_changes
        assert view.to_dict() == want
        assert all(view.get(k) == want.get(k) for k in "abcd")
        if store is not None:
            store.close()


@settings(max_examples=60, deadline=None)
@given(
    left=updates_with_disorder(max_size=30),
    right=updates_with_disorder(max_size=30),
    how=st.sampled_from(["inner", "left"]),
    kind=st.sampled_from(["memory", "rocksdb"]),
    every=st.integers(1, 5),
    fail_at=st.integers(0, 30),
)
async def test_a_foreign_key_join_restarted_from_its_checkpoint_ends_with_the_model(
    left: tuple[list[Update], int],
    right: tuple[list[Update], int],
    how: str,
    kind: str,
    every: int,
    fail_at: int,
) -> None:
    (lu, lb), (ru, rb) = left, right
    ru = _right(ru)
    numbered = [(i, u) for i, u in enumerate(lu)]
    armed = [True]

    def maybe_fail(x: tuple[int, Update]) -> Update:
        if armed[0] and x[0] == fail_at:
            raise RuntimeError("crash")
        return x[1]

    with tempfile.TemporaryDirectory() as tmp:
        store = _store(kind, tmp)

        def build() -> Any:
            ls = source_from_chunks([[x] for x in numbered]).checkpointed(store, every=every, name="l").map(maybe_fail)
            rs = source_from_chunks([[u] for u in ru]).checkpointed(store, every=every, name="r")
            lt = ls.with_timestamps(lambda u: u[2], max_out_of_orderness=lb).key_by(0).to_table(value=1)
            rt = rs.with_timestamps(lambda u: u[2], max_out_of_orderness=rb).key_by(0).to_table(value=1)
            return lt.join_on(rt, fk=fk, combine=pair, how=how)  # type: ignore[call-overload]

        if fail_at < len(lu):
            with pytest.raises(RuntimeError, match="crash"):
                await build().to_stream().run_with(Sink.ignore())
        armed[0] = False
        view, done = build().to_stream_mat(Keep.right).to_mat(Sink.ignore(), Keep.both).run()
        await done
        _changes, want = model_fk(model_latest(lu)[1], model_latest(ru)[1], how)
        assert {k: tuple(v) for k, v in view.to_dict().items()} == {k: tuple(v) for k, v in want.items()}
        store.close()


def test_join_on_errors_name_the_fix() -> None:
    timed = Source.from_iterable([("o", 1, 0)]).with_timestamps(2).key_by(0).to_table(value=1)
    plain = Source.from_iterable([("c", "x", 0)]).key_by(0).to_table(value=1)
    with pytest.raises(ValueError, match="with_timestamps"):
        timed.join_on(plain, fk=fk, combine=pair)
    with pytest.raises(ValueError, match="how"):
        timed.join_on(timed, fk=fk, combine=pair, how="outer")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="needs a Table"):
        timed.join_on(Source.single(1), fk=fk, combine=pair)  # type: ignore[call-overload]
