"""Every window kind against a batch model, over random disorder, chunkings, keys and stores."""

from __future__ import annotations

import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import (
    CountWindows,
    HoppingWindows,
    Keep,
    LateRecord,
    MemoryStore,
    RocksDBStore,
    SessionWindows,
    Sink,
    SlidingWindows,
    Source,
    TumblingWindows,
    WindowResult,
    is_late,
)
from streamlib.testing import source_from_chunks, split_at


# -- batch models: sort by time, group by key and window ------------------------
def windows_of(assigner: Any, events: list[tuple[Any, int, Any]]) -> dict[tuple[Any, int, int], list[int]]:
    """(key, start, end) -> indices of the events in it, for events (key, ts, value) in arrival order."""
    out: dict[tuple[Any, int, int], list[int]] = defaultdict(list)
    by_key: dict[Any, list[int]] = defaultdict(list)
    for i, (k, _ts, _v) in enumerate(events):
        by_key[k].append(i)
    for k, idxs in by_key.items():
        if isinstance(assigner, (TumblingWindows, HoppingWindows)):
            size, step, offset = assigner.size, assigner.step, assigner.offset
            for i in idxs:
                ts = events[i][1]
                s = ts - (ts - offset) % step
                while s > ts - size:
                    out[(k, s, s + size)].append(i)
                    s -= step
        elif isinstance(assigner, SlidingWindows):
            size = assigner.size
            times = sorted({events[i][1] for i in idxs})
            starts = {t - size + 1 for t in times}
            starts |= {t + 1 for t in times if any(t < r <= t + size for r in times)}
            for s in starts:
                out[(k, s, s + size)] = [i for i in idxs if s <= events[i][1] < s + size]
        elif isinstance(assigner, SessionWindows):
            gap = assigner.gap
            order = sorted(idxs, key=lambda i: events[i][1])
            session: list[int] = []
            for i in order:
                if session and events[i][1] - events[session[-1]][1] >= gap:
                    out[(k, events[session[0]][1], events[session[-1]][1] + gap)] = session
                    session = []
                session.append(i)
            if session:
                out[(k, events[session[0]][1], events[session[-1]][1] + gap)] = session
        elif isinstance(assigner, CountWindows):
            n = assigner.n
            for j in range(0, len(idxs), n):
                part = idxs[j : j + n]
                out[(k, j, j + n)] = part
        else:
            raise TypeError(assigner)
    return dict(out)


def model_results(
    assigner: Any, events: list[tuple[Any, int, Any]], agg: Callable[[list[Any]], Any]
) -> dict[tuple[Any, int, int], Any]:
    """(key, start, end) -> agg(values of the window's events, in arrival order)."""
    return {w: agg([events[i][2] for i in sorted(idxs)]) for w, idxs in windows_of(assigner, events).items()}


def as_dict(results: Iterable[Any], value: Callable[[Any], Any] = lambda v: v) -> dict[tuple[Any, int, int], Any]:
    out: dict[tuple[Any, int, int], Any] = {}
    for r in results:
        w = (r.key, r.start, r.end)
        assert w not in out, f"window {w} emitted twice"
        out[w] = value(r.value)
    return out


Event = tuple[str, int, int]  # key, ts, value

assigners = st.one_of(
    st.builds(TumblingWindows, st.integers(1, 60), st.integers(0, 30)),
    st.integers(1, 40).flatmap(lambda step: st.builds(HoppingWindows, st.integers(step, 3 * step), st.just(step))),
    st.builds(SlidingWindows, st.integers(1, 50)),
    st.builds(SessionWindows, st.integers(1, 30)),
    st.builds(CountWindows, st.integers(1, 5)),
)


@st.composite
def disordered(draw: Any, max_size: int = 60) -> tuple[list[Event], int]:
    """Events whose disorder stays within a bound: each ts >= (max ts before it) - bound."""
    n = draw(st.integers(0, max_size))
    keys = draw(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=4, unique=True))
    bound = draw(st.integers(0, 40))
    ts = sorted(draw(st.lists(st.integers(-50, 400), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    events = [(draw(st.sampled_from(keys)), t, draw(st.integers(-5, 20))) for t in ts]
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [events[i] for i in order], bound


def _pipeline(chunks: list[list[Event]], assigner: Any, bound: int, store: Any, every: int | None) -> Any:
    src = source_from_chunks(chunks)
    if every is not None:
        src = src.checkpointed(store, every=every)
    return (
        src.with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
        .key_by(lambda e: e[0])
        .window(assigner, store=store)
    )


def _sorted_values(v: list[int]) -> tuple[int, ...]:
    return tuple(sorted(v))


@settings(max_examples=300, deadline=None)
@given(
    data=disordered(),
    assigner=assigners,
    cuts=st.lists(st.integers(0, 60), max_size=10),
    store_kind=st.sampled_from(["none", "memory-checkpointed", "rocksdb-checkpointed"]),
    every=st.integers(1, 25),
)
async def test_final_results_equal_the_batch_model(
    data: tuple[list[Event], int], assigner: Any, cuts: list[int], store_kind: str, every: int
) -> None:
    events, bound = data
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = None
        if store_kind.startswith("memory"):
            store = MemoryStore()
        elif store_kind.startswith("rocksdb"):
            store = RocksDBStore(os.path.join(tmp, "db"))
        checkpoint = every if store_kind.endswith("checkpointed") else None
        windowed = _pipeline(split_at(events, cuts), assigner, bound, store, checkpoint)
        got = await windowed.collect(lambda e: e[2]).run_with(Sink.collect())
        assert all(type(r) is WindowResult for r in got)
        assert as_dict(got, _sorted_values) == model_results(assigner, events, _sorted_values)
        if store is not None:
            store.close()


@settings(max_examples=60, deadline=None)
@given(data=disordered(), assigner=assigners, cuts=st.lists(st.integers(0, 60), max_size=10))
async def test_every_aggregation_matches_the_model(
    data: tuple[list[Event], int], assigner: Any, cuts: list[int]
) -> None:
    events, bound = data
    w = _pipeline(split_at(events, cuts), assigner, bound, None, None)
    value = lambda e: e[2]  # noqa: E731
    checks: list[tuple[Any, Any]] = [
        (w.count(), len),
        (w.sum(value), sum),
        (w.min(value), min),
        (w.max(value), max),
        (w.mean(value), lambda vs: sum(vs) / len(vs)),
        (
            w.aggregate(lambda: [0, 0], lambda a, e: [a[0] + e[2], a[1] + 1], lambda a, b: [a[0] + b[0], a[1] + b[1]], tuple),
            lambda vs: (sum(vs), len(vs)),
        ),
    ]
    for blueprint, agg in checks:
        got = await blueprint.run_with(Sink.collect())
        want = model_results(assigner, events, agg)
        got_d = as_dict(got)
        assert got_d.keys() == want.keys()
        for k in want:
            assert abs(got_d[k] - want[k]) < 1e-9 if isinstance(want[k], float) else got_d[k] == want[k]


@settings(max_examples=60, deadline=None)
@given(data=disordered(), assigner=assigners, cuts=st.lists(st.integers(0, 60), max_size=10))
async def test_updates_end_with_the_final_value_of_every_window(
    data: tuple[list[Event], int], assigner: Any, cuts: list[int]
) -> None:
    events, bound = data
    src = source_from_chunks(split_at(events, cuts)).with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
    got = await src.key_by(lambda e: e[0]).window(assigner, emit="updates").collect(lambda e: e[2]).run_with(
        Sink.collect()
    )
    last: dict[tuple[Any, int, int], tuple[int, ...]] = {}
    for r in got:
        last[(r.key, r.start, r.end)] = _sorted_values(r.value)
    want = model_results(assigner, events, _sorted_values)
    if isinstance(assigner, SessionWindows):
        # A session's early updates may carry bounds it outgrew by merging: each is inside a final one.
        for (k, s, e), v in last.items():
            if (k, s, e) in want:
                assert want[(k, s, e)] == v
            else:
                assert any(k2 == k and s2 <= s and e <= e2 for (k2, s2, e2) in want)
        assert set(want) <= set(last)
    else:
        assert last == want


# -- late data -----------------------------------------------------------------


def _late_model(
    assigner: Any, chunks: list[list[Event]], bound: int, lateness: int
) -> tuple[list[Event], list[Event]]:
    """Which events are late: simulate the watermark chunk by chunk (it follows each chunk)."""
    accepted: list[Event] = []
    late: list[Event] = []
    high: int | None = None
    open_by_key: dict[str, list[Event]] = {}
    closed_end: dict[str, int] = {}  # end of each key's latest closed session
    for chunk in chunks:
        closed_to = (high - bound if high is not None else -(2**62)) - lateness
        if isinstance(assigner, SessionWindows):
            # Sessions closed by the watermark before this chunk are final: nothing may join them.
            for k, evs in list(open_by_key.items()):
                keep = []
                for (_k, _s, end), idxs in windows_of(assigner, evs).items():
                    if end > closed_to:
                        keep += [evs[i] for i in idxs]
                    else:
                        closed_end[k] = max(closed_end.get(k, end), end)
                open_by_key[k] = keep
        for e in chunk:
            k, ts, _v = e
            if isinstance(assigner, (TumblingWindows, HoppingWindows)):
                size, step, offset = assigner.size, assigner.step, assigner.offset
                last = ts - (ts - offset) % step
                first = last - ((size - 1 - (ts - last)) // step) * step
                is_late = first + size <= closed_to
            elif isinstance(assigner, SlidingWindows):
                is_late = ts + 1 <= closed_to
            else:
                gap = assigner.gap
                overlaps = any(t - gap < ts < t + gap for (_k, t, _v) in open_by_key.get(k, []))
                is_late = (
                    ts < closed_end.get(k, -(2**62))
                    or ts + 2 * gap <= closed_to
                    or (not overlaps and ts + gap <= closed_to)
                )
            if is_late:
                late.append(e)
            else:
                accepted.append(e)
                open_by_key.setdefault(k, []).append(e)
        if chunk:
            m = max(e[1] for e in chunk)
            high = m if high is None else max(high, m)
    return accepted, late


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 300), st.integers(0, 9)), max_size=50
    ),
    assigner=st.one_of(
        st.builds(TumblingWindows, st.integers(1, 60)),
        st.builds(HoppingWindows, st.just(30), st.sampled_from([5, 10, 30])),
        st.builds(SlidingWindows, st.integers(1, 40)),
        st.builds(SessionWindows, st.integers(1, 30)),
    ),
    cuts=st.lists(st.integers(0, 50), max_size=12),
    bound=st.integers(0, 30),
    lateness=st.integers(0, 30),
    late_kind=st.sampled_from(["sink", "emit"]),
)
async def test_late_elements_go_to_the_late_output_all_of_them_and_nowhere_else(
    events: list[Event], assigner: Any, cuts: list[int], bound: int, lateness: int, late_kind: str
) -> None:
    # Tag each event with its index so identical events stay distinguishable.
    tagged = [(k, ts, i) for i, (k, ts, _v) in enumerate(events)]
    chunks = split_at(tagged, cuts)
    accepted, late = _late_model(assigner, chunks, bound, lateness)
    late_sink = Sink.collect()
    w = (
        source_from_chunks(chunks)
        .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
        .key_by(lambda e: e[0])
    )
    if late_kind == "sink":
        blueprint = w.window(assigner, allowed_lateness=lateness, late=late_sink).collect(lambda e: e[2])
        results = await blueprint.run_with(Sink.collect())
        late_out: list[LateRecord] = []
    else:
        blueprint = w.window(assigner, allowed_lateness=lateness, late="emit").collect(lambda e: e[2])
        out = await blueprint.run_with(Sink.collect())
        results = [r for r in out if type(r) is WindowResult]
        late_out = [r for r in out if type(r) is LateRecord]
    del late_sink
    assert as_dict(results, _sorted_values) == model_results(assigner, accepted, _sorted_values)
    if late_kind == "emit":
        assert Counter(r.element for r in late_out) == Counter(late)
        for r in late_out:
            assert r.window_end + lateness <= r.watermark and "closed" in r.reason


# -- sessions: no overlap, nothing lost, whatever the disorder --------------------


@st.composite
def beyond_bound(draw: Any, max_size: int = 50) -> tuple[list[Event], int, int, int]:
    """``(events, bound, gap, lateness)``: tagged events ``(key, ts, index)`` in arrival order.

    Some events arrive within the bound, some far beyond it. Random delays
    rarely make a key's stragglers arrive newest first right after another key
    moved the watermark past a closed session, the case where an open session
    could grow back into the closed one; so up to three such shapes are built
    on purpose (random spacing, inserted among the others, any chunking).
    """
    gap = draw(st.integers(1, 40))
    bound = draw(st.integers(0, 30))
    lateness = draw(st.one_of(st.just(0), st.integers(0, 40)))
    n = draw(st.integers(0, max_size))
    keys = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=3, unique=True))
    far = draw(st.integers(0, 150))
    span = draw(st.sampled_from([60, 150, 400]))
    ts = sorted(draw(st.lists(st.integers(0, span), min_size=n, max_size=n)))
    delays = draw(st.lists(st.one_of(st.integers(0, bound), st.integers(0, bound + far)), min_size=n, max_size=n))
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    arrivals = [(draw(st.sampled_from(keys)), ts[i]) for i in order]
    for _ in range(draw(st.integers(0, 3))):
        k, other = draw(st.sampled_from(keys)), draw(st.sampled_from("xy"))
        first = draw(st.integers(0, span))
        # ``other`` moves the watermark past the end of k's session [first, first + gap), up to the
        # point where it may be forgotten (two gaps past its end) and beyond ...
        closed_to = first + gap + draw(st.integers(0, 4 * gap))
        push = closed_to + bound + lateness
        # ... then k's stragglers arrive newest first, each at most a gap before the previous one.
        straggler = closed_to - gap + 1 + draw(st.integers(0, gap))
        shape = [(k, first), (other, push)]
        for _ in range(draw(st.integers(1, 6))):
            shape.append((k, straggler))
            straggler -= draw(st.integers(1, gap))
        at = sorted(draw(st.lists(st.integers(0, len(arrivals)), min_size=len(shape), max_size=len(shape))))
        for j, e in reversed(list(zip(at, shape))):
            arrivals.insert(j, e)
    return [(k, t, i) for i, (k, t) in enumerate(arrivals)], bound, gap, lateness


def _check_sessions(gap: int, events: list[Event], results: list[Any], late: list[LateRecord]) -> None:
    """Sessions of a key are disjoint; each event is in one session or late, once; results = batch of the rest."""
    late_idx = [r.element[2] for r in late]
    assert len(late_idx) == len(set(late_idx)), "an element was reported late twice"
    counted = [i for r in results for i in r.value]
    assert Counter(counted + late_idx) == Counter(range(len(events))), "an element was lost or counted twice"
    by_key: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for r in results:
        by_key[r.key].append((r.start, r.end))
    for k, bounds in by_key.items():
        bounds.sort()
        for (_s1, e1), (s2, _e2) in zip(bounds, bounds[1:]):
            assert e1 <= s2, f"sessions of {k!r} overlap: {bounds}"
    accepted = [e for e in events if e[2] not in set(late_idx)]
    assert as_dict(results, _sorted_values) == model_results(SessionWindows(gap), accepted, _sorted_values)


#: How a test cuts the events: positions of chunk boundaries (many, so watermarks move between
#: elements), or a ``max_chunk`` for ``Source.from_iterable``.
chunkings = st.one_of(st.lists(st.integers(0, 60), max_size=60), st.sampled_from([1, 2, 5, 1024]))


def _session_blueprint(
    events: list[Event],
    chunking: list[int] | int,
    gap: int,
    bound: int,
    lateness: int,
    store: Any,
    every: int | None,
    emit: Any = "final",
) -> Any:
    src: Any = (
        Source.from_iterable(events) if isinstance(chunking, int) else source_from_chunks(split_at(events, chunking))
    )
    if every is not None:
        src = src.checkpointed(store, every=every)
    return (
        src.with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
        .key_by(lambda e: e[0])
        .window(SessionWindows(gap), store=store, allowed_lateness=lateness, late="emit", emit=emit)
        .collect(lambda e: e[2])
    )


async def _run(blueprint: Any, chunking: list[int] | int) -> list[Any]:
    max_chunk = chunking if isinstance(chunking, int) else None
    return await blueprint.to_mat(Sink.collect(), Keep.right).run(max_chunk=max_chunk)  # type: ignore[no-any-return]


@settings(max_examples=400, deadline=None)
@given(
    data=beyond_bound(),
    chunking=chunkings,
    store_kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 20),
)
async def test_sessions_never_overlap_and_only_late_elements_are_left_out(
    data: tuple[list[Event], int, int, int],
    chunking: list[int] | int,
    store_kind: str,
    every: int,
) -> None:
    events, bound, gap, lateness = data
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = None
        if store_kind == "memory":
            store = MemoryStore()
        elif store_kind == "rocksdb":
            store = RocksDBStore(os.path.join(tmp, "db"))
        blueprint = _session_blueprint(events, chunking, gap, bound, lateness, store, None if store is None else every)
        out = await _run(blueprint, chunking)
        _check_sessions(gap, events, [r for r in out if type(r) is WindowResult], [r for r in out if is_late(r)])
        if store is not None:
            store.close()


@settings(max_examples=200, deadline=None)
@given(data=beyond_bound(), chunking=chunkings)
async def test_session_updates_stay_inside_the_batch_sessions_of_what_was_not_late(
    data: tuple[list[Event], int, int, int], chunking: list[int] | int
) -> None:
    events, bound, gap, lateness = data
    out = await _run(_session_blueprint(events, chunking, gap, bound, lateness, None, None, "updates"), chunking)
    late = {r.element[2] for r in out if is_late(r)}
    want = model_results(SessionWindows(gap), [e for e in events if e[2] not in late], _sorted_values)
    last: dict[tuple[Any, int, int], tuple[int, ...]] = {}
    for r in out:
        if type(r) is WindowResult:
            assert not late & set(r.value), "a late element was counted in an update"
            last[(r.key, r.start, r.end)] = _sorted_values(r.value)
    assert {w: last[w] for w in want} == want
    for (k, s, e), v in last.items():
        assert any(k2 == k and s2 <= s and e <= e2 and set(v) <= set(v2) for (k2, s2, e2), v2 in want.items())


@settings(max_examples=150, deadline=None)
@given(
    data=beyond_bound(),
    every=st.integers(1, 15),
    fail_at=st.integers(0, 70),
    kind=st.sampled_from(["memory", "rocksdb"]),
)
async def test_sessions_and_late_records_survive_a_restart(
    data: tuple[list[Event], int, int, int], every: int, fail_at: int, kind: str
) -> None:
    # One element per chunk, so the replay after the restart sees the same watermarks.
    events, bound, gap, lateness = data

    def blueprint(store: Any, armed: bool) -> Any:
        def maybe_fail(e: Event) -> Event:
            if armed and e[2] == fail_at:
                raise RuntimeError("crash")
            return e

        return (
            Source.from_iterable(events)
            .checkpointed(store, every=every)
            .map(maybe_fail)
            .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
            .key_by(lambda e: e[0])
            .window(SessionWindows(gap), allowed_lateness=lateness, late="emit")
            .collect(lambda e: e[2])
        )

    def as_set(out: list[Any]) -> set[Any]:
        return {
            ("late", r.element) if is_late(r) else (r.key, r.start, r.end, tuple(sorted(r.value))) for r in out
        }

    expected = await blueprint(MemoryStore(), False).to_mat(Sink.collect(), Keep.right).run(max_chunk=1)
    _check_sessions(gap, events, [r for r in expected if type(r) is WindowResult], [r for r in expected if is_late(r)])
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db"))
        out: list[Any] = []
        first = blueprint(store, True).to_mat(Sink.foreach(out.append), Keep.right).run(max_chunk=1)
        if fail_at < len(events):
            with pytest.raises(RuntimeError, match="crash"):
                await first
        else:
            await first
        await blueprint(store, False).to_mat(Sink.foreach(out.append), Keep.right).run(max_chunk=1)
        assert as_set(out) == as_set(expected)
        store.close()


# -- bounded inputs: windows close at the end, the result is the batch result ------


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from("abc"), st.integers(-100, 400), st.integers(-5, 20)), max_size=60),
    assigner=assigners,
    chunking=chunkings,
    emit=st.sampled_from(["final", "updates"]),
    store_kind=st.sampled_from(["none", "memory-checkpointed", "rocksdb-checkpointed"]),
    every=st.integers(1, 25),
)
async def test_a_bounded_input_in_any_order_gives_the_batch_result(
    events: list[Event], assigner: Any, chunking: list[int] | int, emit: str, store_kind: str, every: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = None
        if store_kind.startswith("memory"):
            store = MemoryStore()
        elif store_kind.startswith("rocksdb"):
            store = RocksDBStore(os.path.join(tmp, "db"))
        src: Any = source_from_chunks(split_at(events, chunking)) if isinstance(chunking, list) else None
        if src is None:
            src = Source.from_iterable(events)
        if store is not None:
            src = src.checkpointed(store, every=every)
        blueprint = (
            src.with_timestamps(lambda e: e[1], bounded=True)
            .key_by(lambda e: e[0])
            .window(assigner, store=store, emit=emit)  # late="fail": nothing may be late
            .collect(lambda e: e[2])
        )
        got = await _run(blueprint, chunking)
        want = model_results(assigner, events, _sorted_values)
        if emit == "final":
            assert as_dict(got, _sorted_values) == want
        else:
            last = {(r.key, r.start, r.end): _sorted_values(r.value) for r in got}
            assert {w: last[w] for w in want} == want
        if store is not None:
            store.close()
