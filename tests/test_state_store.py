"""The StateStore protocol: MemoryStore and RocksDBStore against a dict model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Checkpoint, MemoryStore, RocksDBStore, StateStore
from streamlib._state.codec import StateEncodingError, decode_key, encode, encode_key, value_decoder
from streamlib._state.store import BaseStore, Commit, Table


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[BaseStore]:
    s: BaseStore = MemoryStore() if request.param == "memory" else RocksDBStore(tmp_path / "db")
    yield s
    s.close()


def test_both_stores_implement_the_protocol(store: BaseStore) -> None:
    """Code written against the StateStore and Table protocols alone works on either store."""
    assert isinstance(store, StateStore)

    def use(s: StateStore) -> tuple[Table, list[Commit]]:
        commits: list[Commit] = []
        s.add_commit_hook(commits.append)
        t = s.table("t")
        t.write([(b"a", b"1"), (b"b", b"2")])
        t.put(b"c", b"3")
        t.delete(b"b")
        s.checkpoint(1, {"at": 1})
        t.put(b"d", b"4")
        return t, commits

    table, commits = use(store)
    assert isinstance(table, Table) and table.name == "t"
    assert [c.checkpoint_id for c in commits] == [1] and commits[0].meta == {"at": 1}
    assert list(table.scan()) == [(b"a", b"1"), (b"c", b"3"), (b"d", b"4")] and table.count() == 3
    assert store.restore() == store.last_checkpoint() == Checkpoint(1, {"at": 1})
    assert list(table.scan()) == [(b"a", b"1"), (b"c", b"3")] and store.table_names() == ["t"]


def test_writes_are_pending_until_a_checkpoint(store: BaseStore) -> None:
    t = store.table("ops")
    t.put(b"a", b"1")
    assert t.get(b"a") == b"1"
    assert store.last_checkpoint() is None
    assert store.restore() is None
    assert t.get(b"a") is None
    t.put(b"a", b"1")
    t.write([(b"b", b"2"), (b"c", b"3"), (b"c", None)])
    cp = store.checkpoint(1, {"position": 7})
    assert cp == Checkpoint(1, {"position": 7})
    t.delete(b"a")
    assert t.get(b"a") is None
    assert store.restore() == Checkpoint(1, {"position": 7})
    assert list(t.scan()) == [(b"a", b"1"), (b"b", b"2")]


def test_prefix_and_range_scans_merge_pending_writes(store: BaseStore) -> None:
    t = store.table("scan")
    t.write([(b"k1a", b"1"), (b"k1b", b"2"), (b"k2a", b"3"), (b"k\xff", b"4")])
    store.checkpoint(1)
    t.put(b"k1c", b"5")
    t.delete(b"k1a")
    assert list(t.scan(b"k1")) == [(b"k1b", b"2"), (b"k1c", b"5")]
    assert list(t.scan(start=b"k1b", stop=b"k2b")) == [(b"k1b", b"2"), (b"k1c", b"5"), (b"k2a", b"3")]
    assert list(t.scan(b"k\xff")) == [(b"k\xff", b"4")]
    assert t.count() == 4


def test_tables_are_separate_and_listed(store: BaseStore) -> None:
    store.table("a").put(b"x", b"1")
    store.table("b").put(b"x", b"2")
    store.checkpoint(1)
    assert store.table("a").get(b"x") == b"1"
    assert store.table("b").get(b"x") == b"2"
    assert store.table_names() == ["a", "b"]
    assert store.stats() == {"a": 1, "b": 1}


def test_checkpoint_ids_must_increase(store: BaseStore) -> None:
    store.checkpoint(3)
    with pytest.raises(ValueError, match="increase"):
        store.checkpoint(3)


def test_a_failing_commit_hook_commits_nothing(store: BaseStore) -> None:
    seen: list[Commit] = []
    store.add_commit_hook(seen.append)
    t = store.table("t")
    t.put(b"a", b"1")
    store.checkpoint(1, {"offsets": {"topic-0": 5}})
    assert seen == [Commit(1, {"offsets": {"topic-0": 5}}, {"t": [(b"a", b"1")]})]

    def boom(commit: Commit) -> None:
        raise OSError("changelog unavailable")

    store.add_commit_hook(boom)
    t.put(b"a", b"2")
    with pytest.raises(OSError, match="changelog"):
        store.checkpoint(2)
    assert store.restore() == Checkpoint(1, {"offsets": {"topic-0": 5}})
    assert t.get(b"a") == b"1"


def test_keys_and_values_must_be_bytes(store: BaseStore) -> None:
    with pytest.raises(TypeError, match="bytes"):
        store.table("t").put("a", b"1")  # type: ignore[arg-type]


def test_rocksdb_state_survives_reopening(tmp_path: Any) -> None:
    path = tmp_path / "db"
    s = RocksDBStore(path)
    s.table("w").write([(b"a", b"1"), (b"b", b"2")])
    s.checkpoint(5, {"position:src": 100})
    s.table("w").put(b"c", b"3")  # never checkpointed
    s.close()
    again = RocksDBStore(path)
    assert again.last_checkpoint() == Checkpoint(5, {"position:src": 100})
    assert list(again.table("w").scan()) == [(b"a", b"1"), (b"b", b"2")]
    assert again.table_names() == ["w"]
    again.close()


def test_rocksdb_rejects_the_default_table_and_a_locked_directory(tmp_path: Any) -> None:
    s = RocksDBStore(tmp_path / "db")
    with pytest.raises(ValueError, match="reserved"):
        s.table("default")
    s.table("t")
    other = RocksDBStore(tmp_path / "db")
    with pytest.raises(OSError, match="cannot open RocksDB"):
        other.table("t")
    s.close()


def test_codec_round_trips_keys_and_refuses_unencodable_values() -> None:
    for key in ["k", 7, ("a", 3), ("nested", ("t", 1)), b"raw"]:
        assert decode_key(encode_key(key)) == key
    assert value_decoder(tuple[int, float])(encode((1, 2.5))) == (1, 2.5)

    class Point(msgspec.Struct):
        x: int

    assert value_decoder(Point)(encode(Point(3))) == Point(3)
    with pytest.raises(StateEncodingError, match="never pickle"):
        encode(object())


# -- model-based ---------------------------------------------------------------

_keys = st.binary(min_size=0, max_size=3)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["t1", "t2"]), _keys, st.binary(max_size=4)),
        st.tuples(st.just("delete"), st.sampled_from(["t1", "t2"]), _keys),
        st.tuples(st.just("checkpoint")),
        st.tuples(st.just("restore")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("scan"), st.sampled_from(["t1", "t2"]), st.binary(max_size=2)),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(ops=_ops, kind=st.sampled_from(["memory", "rocksdb"]))
def test_store_matches_a_dict_model(ops: list[tuple[Any, ...]], kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db")
        store: BaseStore = MemoryStore() if kind == "memory" else RocksDBStore(path)
        committed: dict[str, dict[bytes, bytes]] = {"t1": {}, "t2": {}}
        live = {name: dict(d) for name, d in committed.items()}
        next_id = 1
        try:
            for op in ops:
                if op[0] == "put":
                    store.table(op[1]).put(op[2], op[3])
                    live[op[1]][op[2]] = op[3]
                elif op[0] == "delete":
                    store.table(op[1]).delete(op[2])
                    live[op[1]].pop(op[2], None)
                elif op[0] == "checkpoint":
                    store.checkpoint(next_id, {"n": next_id})
                    next_id += 1
                    committed = {name: dict(d) for name, d in live.items()}
                elif op[0] in ("restore", "reopen"):
                    if op[0] == "reopen" and kind == "rocksdb":
                        store.close()
                        store = RocksDBStore(path)
                    cp = store.restore()
                    assert (cp.id if cp else 0) == next_id - 1
                    live = {name: dict(d) for name, d in committed.items()}
                else:
                    expect = sorted((k, v) for k, v in live[op[1]].items() if k.startswith(op[2]))
                    assert list(store.table(op[1]).scan(op[2])) == expect
            for name in ("t1", "t2"):
                assert list(store.table(name).scan()) == sorted(live[name].items())
        finally:
            store.close()
