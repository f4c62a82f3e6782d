"""stateful_map and dedupe: per-key state against dict models, with and without stores."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Flow, Keep, KeyState, MemoryStore, RocksDBStore, Sink, Source, StateEncodingError
from streamlib.testing import VirtualClock, source_from_chunks, split_at

Op = tuple[str, str, int]  # (key, action, amount)

ops_strategy = st.lists(
    st.tuples(st.sampled_from("abcde"), st.sampled_from(["add", "add", "add", "delete", "peek"]), st.integers(-3, 9)),
    max_size=60,
)


def _apply(e: Op, state: KeyState[str, int]) -> tuple[str, int | None] | None:
    key, action, amount = e
    if action == "delete":
        state.delete()
        return (key, None)
    if action == "peek":
        return (key, state.get()) if state.exists() else None
    total = (state.get(0) or 0) + amount
    state.set(total)
    return (key, total)


def _model(ops: list[Op]) -> list[tuple[str, int | None]]:
    state: dict[str, int] = {}
    out: list[tuple[str, int | None]] = []
    for key, action, amount in ops:
        if action == "delete":
            state.pop(key, None)
            out.append((key, None))
        elif action == "peek":
            if key in state:
                out.append((key, state[key]))
        else:
            state[key] = state.get(key, 0) + amount
            out.append((key, state[key]))
    return out


@settings(max_examples=80, deadline=None)
@given(
    ops=ops_strategy,
    cuts=st.lists(st.integers(0, 60), max_size=8),
    store_kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 20),
    cache_size=st.integers(1, 4),
)
async def test_stateful_map_matches_a_dict_model(
    ops: list[Op], cuts: list[int], store_kind: str, every: int, cache_size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = {"none": None, "memory": MemoryStore(), "rocksdb": None}[store_kind]
        if store_kind == "rocksdb":
            store = RocksDBStore(os.path.join(tmp, "db"))
        src = source_from_chunks(split_at(ops, cuts))
        if store is not None:
            src = src.checkpointed(store, every=every)
        got = await src.key_by(lambda e: e[0]).stateful_map(_apply, cache_size=cache_size).run_with(Sink.collect())
        assert got == _model(ops)
        if store is not None:
            store.close()


@settings(max_examples=40, deadline=None)
@given(
    ops=ops_strategy,
    every=st.integers(1, 10),
    fail_at=st.integers(0, 60),
    kind=st.sampled_from(["memory", "rocksdb"]),
)
async def test_stateful_map_resumes_from_its_last_checkpoint_after_a_failure(
    ops: list[Op], every: int, fail_at: int, kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db"))
        tagged = list(enumerate(ops))
        armed = [True]

        def maybe_fail(x: tuple[int, Op]) -> tuple[int, Op]:
            if armed[0] and x[0] == fail_at:
                raise RuntimeError("crash")
            return x

        def step(x: tuple[int, Op], state: KeyState[str, int]) -> Any:
            r = _apply(x[1], state)
            return None if r is None else (x[0], r)

        blueprint = (
            Source.from_iterable(tagged)
            .checkpointed(store, every=every)
            .map(maybe_fail)
            .key_by(lambda x: x[1][0])
            .stateful_map(step, cache_size=2)
        )
        out: list[Any] = []
        first = blueprint.run_with(Sink.foreach(out.append))
        if fail_at < len(ops):
            with pytest.raises(RuntimeError, match="crash"):
                await first
        else:
            await first
        armed[0] = False
        await blueprint.run_with(Sink.foreach(out.append))
        # At-least-once output: what came after the last checkpoint came twice, identically.
        model_by_index: dict[int, Any] = {}
        state: dict[str, int] = {}
        for i, (key, action, amount) in tagged:
            if action == "delete":
                state.pop(key, None)
                model_by_index[i] = (key, None)
            elif action == "peek":
                if key in state:
                    model_by_index[i] = (key, state[key])
            else:
                state[key] = state.get(key, 0) + amount
                model_by_index[i] = (key, state[key])
        assert list(model_by_index.values()) == _model(ops)
        assert dict(out) == model_by_index
        for i, r in out:
            assert model_by_index[i] == r
        store.close()


async def test_state_type_decodes_stored_values() -> None:
    class Profile(msgspec.Struct):
        visits: int
        last_page: str

    def visit(e: tuple[str, str], state: KeyState[str, Profile]) -> Profile:
        p = state.get()
        p = Profile(1, e[1]) if p is None else Profile(p.visits + 1, e[1])
        state.set(p)
        return p

    store = MemoryStore()
    events = [("u1", "/a"), ("u2", "/b"), ("u1", "/c")]
    blueprint = (
        Source.from_iterable(events)
        .checkpointed(store, every=1)
        .key_by(lambda e: e[0])
        .stateful_map(visit, state_type=Profile, cache_size=1)
    )
    assert await blueprint.run_with(Sink.collect()) == [Profile(1, "/a"), Profile(1, "/b"), Profile(2, "/c")]
    again = Source.from_iterable([("u1", "/d")]).checkpointed(store, every=1, name="second")
    out = await again.key_by(lambda e: e[0]).stateful_map(visit, store=store, state_type=Profile).run_with(
        Sink.collect()
    )
    assert out == [Profile(3, "/d")]


async def test_unencodable_state_fails_at_the_checkpoint_naming_the_stage() -> None:
    def keep_object(e: int, state: KeyState[int, Any]) -> int:
        state.set(object())
        return e

    with pytest.raises(StateEncodingError, match="never pickle") as info:
        await (
            Source.from_iterable([1, 2])
            .checkpointed(MemoryStore(), every=1)
            .key_by(lambda e: e)
            .stateful_map(keep_object)
            .run_with(Sink.collect())
        )
    assert "in stage 'stateful_map'" in info.value.__notes__


def test_stateful_map_bad_arguments() -> None:
    with pytest.raises(TypeError, match="fn\\(element, state\\)"):
        Source.empty().key_by(str).stateful_map(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_size"):
        Source.empty().key_by(str).stateful_map(lambda e, s: e, cache_size=0)
    with pytest.raises(TypeError, match="state store"):
        Source.empty().key_by(str).stateful_map(lambda e, s: e, store="dir")  # type: ignore[arg-type]


# -- dedupe ----------------------------------------------------------------------


def _dedupe_model(events: list[tuple[str, int]], within: int) -> list[tuple[str, int]]:
    last: dict[str, int] = {}
    out = []
    for k, ts in events:
        if k in last and abs(ts - last[k]) < within:
            continue
        last[k] = ts
        out.append((k, ts))
    return out


@st.composite
def _disordered_keys(draw: Any) -> tuple[list[tuple[str, int]], int]:
    n = draw(st.integers(0, 60))
    bound = draw(st.integers(0, 20))
    ts = sorted(draw(st.lists(st.integers(0, 500), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    events = [(draw(st.sampled_from("abc")), t) for t in ts]
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [events[i] for i in order], bound


@settings(max_examples=80, deadline=None)
@given(
    data=_disordered_keys(),
    within=st.integers(1, 100),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    store_kind=st.sampled_from(["none", "memory"]),
)
async def test_dedupe_by_event_time_matches_the_model(
    data: tuple[list[tuple[str, int]], int], within: int, cuts: list[int], store_kind: str
) -> None:
    events, bound = data
    src = source_from_chunks(split_at(events, cuts))
    if store_kind == "memory":
        src = src.checkpointed(MemoryStore(), every=3)
    got = await (
        src.with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
        .dedupe(lambda e: e[0], within=within)
        .run_with(Sink.collect())
    )
    assert got == _dedupe_model(events, within)
    keyed = await (
        source_from_chunks(split_at(events, cuts))
        .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
        .key_by(lambda e: e[0])
        .dedupe(within)
        .run_with(Sink.collect())
    )
    assert keyed == got


async def test_dedupe_forgets_keys_once_the_watermark_passes() -> None:
    events = [("a", 0), ("a", 50), ("b", 60), ("a", 99), ("a", 100), ("a", 150)]
    got = await (
        source_from_chunks([[e] for e in events])
        .with_timestamps(lambda e: e[1])
        .dedupe(lambda e: e[0], within=timedelta(milliseconds=100))
        .run_with(Sink.collect())
    )
    assert got == [("a", 0), ("b", 60), ("a", 100)]


async def test_dedupe_without_timestamps_uses_arrival_time() -> None:
    clock = VirtualClock()
    out: list[str] = []
    queue, done = Source.queue(10).dedupe(lambda x: x, within=timedelta(seconds=10)).to_mat(
        Sink.foreach(out.append), Keep.both
    ).run(clock=clock)
    await queue.offer("a")
    await clock.advance(5)
    await queue.offer("a")  # 5 s later: a duplicate
    await queue.offer("b")
    await clock.advance(6)
    await queue.offer("a")  # 11 s after the first "a": passes again
    queue.complete()
    await clock.run(done)
    assert out == ["a", "b", "a"]


async def test_dedupe_state_survives_a_restart(tmp_path: Any) -> None:
    store = RocksDBStore(tmp_path / "db")
    first = Source.from_iterable([1, 2, 3]).checkpointed(store, every=1, name="run1")
    assert await first.dedupe(lambda x: x, within=timedelta(days=1)).run_with(Sink.collect()) == [1, 2, 3]
    second = Source.from_iterable([3, 4, 1, 5]).checkpointed(store, every=1, name="run2")
    assert await second.dedupe(lambda x: x, within=timedelta(days=1)).run_with(Sink.collect()) == [4, 5]
    store.close()


# -- a store is written only at checkpoints --------------------------------------------------


def test_a_store_without_checkpoints_is_an_error_at_build_time(tmp_path: Any) -> None:
    from streamlib import TumblingWindows

    store = RocksDBStore(tmp_path / "db")
    events = Source.from_iterable([("a", 1), ("b", 2)])
    with pytest.raises(ValueError, match=r"would never be written.*\.checkpointed\(store"):
        events.key_by(lambda e: e[0]).stateful_map(lambda e, s: e, store=store)
    with pytest.raises(ValueError, match="would never be written"):
        events.dedupe(lambda e: e[0], within=10, store=MemoryStore())
    with pytest.raises(ValueError, match="would never be written"):
        events.with_timestamps(lambda e: e[1]).key_by(lambda e: e[0]).window(TumblingWindows(10), store=store)
    store.close()


async def test_a_flow_with_a_store_fails_when_it_runs_without_checkpoints() -> None:
    from streamlib import Flow

    counts = Flow[str, str, None]().key_by(lambda e: e).stateful_map(lambda e, s: e, store=MemoryStore())
    with pytest.raises(ValueError, match="would never be written"):
        Source.from_iterable("ab").via(counts).run_with(Sink.collect())


async def test_a_flow_with_a_windowed_store_fails_when_it_runs_without_checkpoints() -> None:
    from streamlib import Flow, TumblingWindows

    per_second = (
        Flow[int, int, None]()
        .with_timestamps(lambda e: e)
        .key_by(lambda e: e % 2)
        .window(TumblingWindows(1000), store=MemoryStore())
        .count()
    )
    with pytest.raises(ValueError, match="would never be written"):
        Source.from_iterable(range(10)).via(per_second).run_with(Sink.collect())


async def test_a_flow_with_a_store_persists_behind_checkpointed() -> None:
    from streamlib import Flow

    store = MemoryStore()

    def count(e: str, state: KeyState[str, int]) -> tuple[str, int]:
        n = (state.get(0) or 0) + 1
        state.set(n)
        return (e, n)

    counts = Flow[str, str, None]().key_by(lambda e: e).stateful_map(count, store=store)
    first = await Source.from_iterable("aba").checkpointed(store, every=1).via(counts).run_with(Sink.collect())
    assert first == [("a", 1), ("b", 1), ("a", 2)]
    again = Source.from_iterable("abaa").checkpointed(store, every=1).via(counts)
    assert await again.run_with(Sink.collect()) == [("a", 3)]


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
async def test_a_stateful_branch_that_ended_does_not_hold_back_later_checkpoints(kind: str, tmp_path: Any) -> None:
    """A stateful_map on a side branch ends early (take); the checkpoints after it still commit,
    so a second run of the same graph resumes from the end instead of reading everything again."""
    store: Any = MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp_path, "db"))

    def count(x: int, state: KeyState[int, int]) -> tuple[int, int]:
        n = (state.get(0) or 0) + 1
        state.set(n)
        return (x, n)

    def blueprint() -> Source[tuple[int, int], None]:
        early = Flow().take(15).key_by(lambda x: x % 3).stateful_map(count, store=store, name="early")
        return (
            Source.from_iterable(range(100))
            .checkpointed(store, every=10)
            .also_to(early.to(Sink.ignore()))
            .key_by(lambda x: x % 5)
            .stateful_map(count, store=store, name="late")
        )

    first = await blueprint().run_with(Sink.collect())
    assert first == [(x, x // 5 + 1) for x in range(100)]
    again = await blueprint().run_with(Sink.collect())
    assert again == []  # every checkpoint committed: nothing is left to read
    store.close()
