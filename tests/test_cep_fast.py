"""The fast path for chains of single-event steps gives the general NFA's results.

Patterns of steps that each take one event, joined by ``next``/``followed_by``,
run through ``feed_linear`` (compiled in ``streamlib._native._cep``, pure twin
in ``streamlib.cep._linear``; the window closing and the timestamp check in
``streamlib.cep._kernels``). Each test runs with the fast path off (the
general NFA), with the pure twin and with the compiled one, against the
brute-force reference matcher of ``test_cep.py``; and the two twins are driven
side by side on the same inputs, state compared after every call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cep import KINDS, Kind, Spec, blueprint, chunkings, inputs, per_key, reference, run

import streamlib.cep._stage as stage_mod
from streamlib import MemoryStore, Sink, Source
from streamlib import _native as switch
from streamlib.cep import no_skip, skip_past_last_event, skip_to_first, skip_to_next
from streamlib.cep._kernels import close_due, stamp
from streamlib.cep._linear import LinearPlan, feed_linear, is_linear
from streamlib.cep._nfa import NFA

PURE_FORCED = os.environ.get("STREAMLIB_PURE", "") not in ("", "0")
MODES = ["general", "fast-pure", "fast-compiled"]


@contextmanager
def mode(name: str) -> Iterator[None]:
    """Run the stages built inside with the fast path off, or on with the pure or compiled twin."""
    saved_fast, saved_env = stage_mod.FAST_PATH, os.environ.get("STREAMLIB_PURE")
    if name == "fast-compiled" and PURE_FORCED:
        pytest.skip("STREAMLIB_PURE is set: the compiled twin is not in use")
    stage_mod.FAST_PATH = name != "general"
    if name == "fast-pure":
        os.environ["STREAMLIB_PURE"] = "1"
    elif saved_env is not None and name == "fast-compiled":
        del os.environ["STREAMLIB_PURE"]
    switch.reset()
    try:
        yield
    finally:
        stage_mod.FAST_PATH = saved_fast
        if saved_env is None:
            os.environ.pop("STREAMLIB_PURE", None)
        else:
            os.environ["STREAMLIB_PURE"] = saved_env
        switch.reset()


@st.composite
def linear_specs(draw: Any) -> Spec:
    n = draw(st.integers(1, 4))
    steps = [
        {
            "name": f"s{k}",
            "how": "begin" if k == 0 else draw(st.sampled_from(["next", "followed_by"])),
            "conds": [Kind(draw(st.sampled_from(KINDS)))],
        }
        for k in range(n)
    ]
    within = draw(st.one_of(st.none(), st.integers(1, 25)))
    skip = draw(
        st.sampled_from([no_skip(), skip_to_next(), skip_past_last_event()] + [skip_to_first(s["name"]) for s in steps])
    )
    spec = Spec(steps, within, skip)
    assert is_linear(spec.build().compile())
    return spec


@pytest.mark.parametrize("which", MODES)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=linear_specs(), data=inputs(), chunking=chunkings)
async def test_chains_of_single_event_steps_equal_the_reference(
    which: str, spec: Spec, data: tuple[list[Any], int], chunking: Any
) -> None:
    events, bound = data
    with mode(which):
        got = per_key(await run(blueprint(spec, events, bound, chunking), chunking))
    assert got == reference(spec, events)


@pytest.mark.parametrize("which", MODES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=linear_specs(), data=inputs(), every=st.integers(1, 4))
async def test_timeouts_and_checkpointed_state_are_the_same_on_every_path(
    which: str, spec: Spec, data: tuple[list[Any], int], every: int
) -> None:
    """Timeouts (with within) and the store's rows after the run equal the general path's."""
    events, bound = data

    async def go() -> tuple[list[Any], list[Any], dict[str, int]]:
        store = MemoryStore()
        timeouts: list[Any] = []
        bp = (
            Source.from_iterable(events)
            .checkpointed(store, every=every)
            .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
            .key_by(lambda e: e[0])
            .match(
                spec.build(),
                timeouts=Sink.foreach(timeouts.append) if spec.within is not None else None,
                event_type=tuple[str, int, str, int],
            )
        )
        out = await bp.run_with(Sink.collect())
        rows = {t: store.table(t).count() for t in store.table_names()}
        return out, timeouts, rows

    with mode("general"):
        want = await go()
    with mode(which):
        got = await go()
    assert got == want


def test_a_pattern_with_loops_negatives_or_ctx_conditions_is_not_linear() -> None:
    from streamlib.cep import Pattern

    a = Pattern.begin("a").where(lambda e: e == 1)
    assert is_linear(a.next("b").followed_by("c").compile())
    assert not is_linear(a.times(2).next("b").compile())
    assert not is_linear(a.followed_by_any("b").compile())
    assert not is_linear(a.next("b").optional().next("c").compile())
    assert not is_linear(a.not_next("n").next("b").compile())
    assert not is_linear(a.next("b").where(lambda e, ctx: len(ctx["a"]) == 1).compile())


class _State:
    def __init__(self) -> None:
        self.dirty: set[Any] = set()
        self.removed: list[Any] = []

    def remove(self, k: Any) -> None:
        self.removed.append(k)


class _Logic:
    """What feed_linear reads of the match stage's logic."""

    def __init__(self, spec: Spec, timeouts: bool) -> None:
        from collections import deque

        c = spec.build().compile()
        self.nfa = NFA(c, timeouts)
        self.linear = LinearPlan(self.nfa)
        self.runs: dict[Any, Any] = {}
        self.key_of = lambda e: e[0]
        self.state = _State()
        self.tracking = True
        self.within = c.within
        self.due: dict[Any, int] = {}
        self.fifo: Any = deque()
        self.heap: list[Any] = []
        self.seq = 0
        self.pos = 0

    def _schedule(self, at: int, key: Any) -> None:
        from heapq import heappush

        self.due[key] = at
        self.seq += 1
        if not self.fifo or self.fifo[-1][0] <= at:
            self.fifo.append((at, self.seq, key))
        else:
            heappush(self.heap, (at, self.seq, key))

    def snapshot(self) -> Any:
        return (self.runs, self.state.dirty, self.state.removed, self.due, list(self.fifo), self.heap, self.seq, self.pos)


@pytest.mark.skipif(PURE_FORCED, reason="STREAMLIB_PURE is set: the compiled twin is not in use")
@settings(max_examples=300, deadline=None)
@given(spec=linear_specs(), data=inputs(), cuts=st.lists(st.integers(1, 5), max_size=6), timeouts=st.booleans())
def test_compiled_and_pure_twins_agree_call_by_call(
    spec: Spec, data: tuple[list[Any], int], cuts: list[int], timeouts: bool
) -> None:
    from streamlib._native._cep import close_due as compiled_close, feed_linear as compiled

    events = sorted(data[0], key=lambda e: e[1])
    pure_logic, native_logic = _Logic(spec, timeouts), _Logic(spec, timeouts)
    i = 0
    for size in cuts + [len(events)]:
        part = events[i : i + size]
        i += size
        tss = [e[1] for e in part]
        out_pure: list[Any] = []
        out_native: list[Any] = []
        feed_linear(pure_logic, tss, part, out_pure)
        compiled(native_logic, tss, part, out_native)
        assert out_native == out_pure
        assert native_logic.snapshot() == pure_logic.snapshot()
        if tss and pure_logic.within is not None:  # the watermark reaches the last event: windows close
            close_due(pure_logic, tss[-1], out_pure)
            compiled_close(native_logic, tss[-1], out_native)
            assert out_native == out_pure
            assert native_logic.snapshot() == pure_logic.snapshot()
    if pure_logic.within is not None:  # the end of the stream
        out_pure, out_native = [], []
        close_due(pure_logic, 2**62, out_pure, False)
        compiled_close(native_logic, 2**62, out_native, False)
        assert out_native == out_pure
        assert native_logic.snapshot() == pure_logic.snapshot()
        assert not pure_logic.runs


@pytest.mark.skipif(PURE_FORCED, reason="STREAMLIB_PURE is set: the compiled twin is not in use")
@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 50), st.floats(0, 9), st.booleans(),
                                 st.none()), min_size=1, max_size=12))
def test_compiled_and_pure_stamp_agree(values: list[Any]) -> None:
    from streamlib._native._cep import stamp as compiled

    def result(fn: Any) -> Any:
        try:
            return fn(lambda e: e, values, "match")
        except TypeError as exc:
            return ("TypeError", str(exc))

    expected = result(stamp)
    assert result(compiled) == expected
    if all(type(v) is int for v in values):
        assert expected == (values, min(values), values == sorted(values))
    else:
        assert expected[0] == "TypeError" and "int milliseconds" in expected[1]
