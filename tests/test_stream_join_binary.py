"""The two-input stage: combined watermarks, aligned barriers, checkpoints with two barrier sources."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import MemoryStore, RocksDBStore, Sink, Source
from streamlib._ops.binary import BinaryLogic, BinaryStage, with_other
from streamlib._runtime.context import RunContext
from streamlib._state.operator_state import OperatorState
from streamlib._state.store import Commit
from streamlib.testing import source_from_chunks, split_at


class Tag(BinaryStage):
    """Emits (side, element) per element and ("wm", t) per combined watermark."""

    name = "tag"

    def make_logic(self, ctx: RunContext) -> BinaryLogic:
        return _TagLogic()


class _TagLogic(BinaryLogic):
    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        out.extend((side, x) for x in chunk)

    def on_watermark(self, time_ms: int, out: list[Any]) -> None:
        out.append(("wm", time_ms))

    def on_input_end(self, side: int, out: list[Any]) -> None:
        out.append(("end", side))


class CountSides(BinaryStage):
    """Counts the elements of each side; the counts are its checkpointed state."""

    name = "count_sides"

    def __init__(self, store: Any, fail_after: int | None = None) -> None:
        self.store = store
        self.fail_after = fail_after

    def make_logic(self, ctx: RunContext) -> BinaryLogic:
        return _CountLogic(OperatorState(self.store, ctx, self.name), self.fail_after)


class _CountLogic(BinaryLogic):
    def __init__(self, state: OperatorState, fail_after: int | None) -> None:
        self.state = state
        self.fail_after = fail_after

    def on_start(self, out: list[Any]) -> None:
        self.state.load()
        self.state.data.setdefault(0, 0)
        self.state.data.setdefault(1, 0)

    def on_chunk(self, side: int, chunk: list[Any], out: list[Any]) -> None:
        for x in chunk:
            if self.fail_after is not None and self.state.data[0] + self.state.data[1] >= self.fail_after:
                raise RuntimeError("boom")
            self.state.data[side] += 1
            self.state.dirty.add(side)
            out.append((side, x))

    def on_barrier(self, checkpoint_id: int) -> None:
        self.state.stage(checkpoint_id)

    def on_finish(self, out: list[Any]) -> None:
        if self.state.run is not None:
            self.state.run.finish(self.state.member)

    def on_failure(self, error: BaseException) -> None:
        self.state.close()

    def on_cancel(self) -> None:
        self.state.close()


async def test_the_watermark_is_the_minimum_of_both_inputs_and_an_ended_input_stops_holding_it() -> None:
    a = source_from_chunks([[0, 10], [20], [30, 40]]).with_timestamps(lambda x: x)
    b = source_from_chunks([[100], [200, 300]]).with_timestamps(lambda x: x)
    got = await with_other(a, Tag(), b).run_with(Sink.collect())
    marks = [t for tag, t in got if tag == "wm"]
    assert marks == sorted(set(marks)), "watermarks only rise"
    a_end = got.index(("end", 0))
    b_end = got.index(("end", 1))
    for i, (tag, t) in enumerate(got):
        if tag != "wm":
            continue
        seen_a = max([x for s, x in got[:i] if s == 0], default=None)
        seen_b = max([x for s, x in got[:i] if s == 1], default=None)
        live = [m for m, end in ((seen_a, a_end), (seen_b, b_end)) if end > i]
        assert None not in live and t <= min(live)  # type: ignore[type-var]
    # once one input ended, the other's watermark goes through alone
    assert marks[-1] == (300 if a_end < b_end else 40)


async def test_an_input_without_watermarks_holds_the_watermark_back_until_it_ends() -> None:
    a = Source.from_iterable(range(0, 100, 10)).with_timestamps(lambda x: x)
    b = Source.from_iterable(["x", "y", "z"])
    got = await with_other(a, Tag(), b).run_with(Sink.collect())
    first_mark = next(i for i, e in enumerate(got) if e[0] == "wm")
    assert first_mark > got.index(("end", 1))
    assert ("wm", 90) in got


async def test_a_failure_on_either_input_fails_the_stage_after_what_came_before() -> None:
    def bad(x: int) -> int:
        if x == 3:
            raise ValueError("bad element")
        return x

    a = Source.from_iterable(range(6)).map(bad)
    b = Source.from_iterable(["x"])
    seen: list[Any] = []
    with pytest.raises(ValueError, match="bad element"):
        await with_other(a, Tag(), b).run_with(Sink.foreach(seen.append))
    assert [x for s, x in seen if s == 0] == [0, 1, 2]


async def test_downstream_cancellation_stops_both_inputs() -> None:
    got = await with_other(Source.repeat(1), Tag(), Source.repeat(2)).take(10).run_with(Sink.collect())
    assert len(got) == 10


def _check_commits(commits: list[Commit], na: int, nb: int) -> None:
    """Each committed checkpoint holds counts equal to the positions committed with it."""
    from streamlib._state.codec import decode_key, value_decoder

    decode = value_decoder()
    counts = {0: 0, 1: 0}
    for c in commits:
        for key, value in c.writes.get("count_sides", []):
            assert value is not None
            counts[decode_key(key)] = decode(value)
        assert counts[0] == c.meta["position:ckpt_a"]
        assert counts[1] == c.meta["position:ckpt_b"]
    assert commits[-1].meta["position:ckpt_a"] == na
    assert commits[-1].meta["position:ckpt_b"] == nb


@settings(max_examples=40, deadline=None)
@given(
    na=st.integers(0, 60),
    nb=st.integers(0, 60),
    cuts_a=st.lists(st.integers(0, 60), max_size=6),
    cuts_b=st.lists(st.integers(0, 60), max_size=6),
    every=st.integers(1, 7),
    rocks=st.booleans(),
)
async def test_aligned_barriers_commit_state_consistent_with_both_positions(
    na: int, nb: int, cuts_a: list[int], cuts_b: list[int], every: int, rocks: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = RocksDBStore(os.path.join(tmp, "db")) if rocks else MemoryStore()
        commits: list[Commit] = []
        store.add_commit_hook(commits.append)
        a = source_from_chunks(split_at(list(range(na)), cuts_a)).checkpointed(store, every=every, name="ckpt_a")
        b = source_from_chunks(split_at(list(range(nb)), cuts_b)).checkpointed(store, every=every, name="ckpt_b")
        got = await with_other(a, CountSides(store), b).run_with(Sink.collect())
        assert sorted(x for s, x in got if s == 0) == list(range(na))
        assert sorted(x for s, x in got if s == 1) == list(range(nb))
        # one input ending early (na != nb) must neither stall the other's checkpoints nor commit early
        _check_commits(commits, na, nb)
        store.close()


async def test_a_restart_resumes_both_inputs_from_one_consistent_checkpoint() -> None:
    store = MemoryStore()
    commits: list[Commit] = []
    store.add_commit_hook(commits.append)

    def build(fail_after: int | None) -> Any:
        a = source_from_chunks(split_at(list(range(40)), list(range(0, 40, 2))))
        b = source_from_chunks(split_at(list(range(100, 125)), list(range(0, 25, 3))))
        a = a.checkpointed(store, every=4, name="ckpt_a")
        b = b.checkpointed(store, every=4, name="ckpt_b")
        return with_other(a, CountSides(store, fail_after), b)

    first: list[Any] = []
    with pytest.raises(RuntimeError, match="boom"):
        await build(30).run_with(Sink.foreach(first.append))
    cp = store.last_checkpoint()
    assert cp is not None
    second = await build(None).run_with(Sink.collect())
    # the second run sees exactly what the last checkpoint did not cover, on each side
    assert sorted(x for s, x in second if s == 0) == list(range(cp.meta["position:ckpt_a"], 40))
    assert sorted(x for s, x in second if s == 1) == list(range(100 + cp.meta["position:ckpt_b"], 125))
    _check_commits(commits, 40, 25)


def test_barriers_on_one_input_only_are_refused_at_build_time() -> None:
    store = MemoryStore()
    a = Source.from_iterable(range(5)).checkpointed(store, every=2)
    with pytest.raises(ValueError, match="right input has none"):
        with_other(a, Tag(), Source.from_iterable(range(5)))
