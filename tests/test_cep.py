"""Patterns (streamlib.cep) against a brute-force reference matcher written from docs/cep.md.

The reference enumerates every labelled subsequence of a key's events (events
in timestamp order, ties in arrival order; each chosen event labelled with a
step, labels never decreasing), keeps those the documented rules accept, orders
them by when they complete and applies the skip strategy. The operator must
emit exactly those matches, per key and in that order, whatever the chunking
and the (bounded) disorder of the input, and after a restart from a checkpoint.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamlib import Keep, MemoryStore, Sink, Source
from streamlib.cep import (
    LateEventError,
    Match,
    Pattern,
    Timeout,
    no_skip,
    skip_past_last_event,
    skip_to_first,
    skip_to_next,
)
from streamlib.cep._pattern import INFINITE, NOT_FOLLOWED, NOT_NEXT, RELAXED, STRICT
from streamlib.testing import VirtualClock, source_from_chunks, split_at

Event = tuple[str, int, str, int]  # key, ts, kind, id


# -- conditions (classes, so hypothesis prints them) ------------------------------------


class Kind:
    def __init__(self, kinds: str) -> None:
        self.kinds = kinds

    def __call__(self, e: Event) -> bool:
        return e[2] in self.kinds

    def __repr__(self) -> str:
        return f"Kind({self.kinds!r})"


class FewerThan:
    """A condition on the match so far: step ``name`` holds fewer than ``n`` events."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __call__(self, e: Event, ctx: dict[str, list[Event]]) -> bool:
        return len(ctx[self.name]) < self.n

    def __repr__(self) -> str:
        return f"FewerThan({self.name!r}, {self.n})"


class ParityWith:
    """``(id + number of events of step name) % 2 == 0``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, e: Event, ctx: dict[str, list[Event]]) -> bool:
        return (e[3] + len(ctx[self.name])) % 2 == 0

    def __repr__(self) -> str:
        return f"ParityWith({self.name!r})"


def call(fn: Any, e: Event, ctx: dict[str, list[Event]]) -> bool:
    try:
        return bool(fn(e, ctx))
    except TypeError:
        return bool(fn(e))


def holds(conds: list[Any], e: Event, ctx: dict[str, list[Event]]) -> bool:
    return all(call(f, e, ctx) for f in conds)


# -- the pattern, as the test describes it -----------------------------------------------


class Spec:
    """A pattern's steps as plain data (what the reference reads) plus the Pattern built from them."""

    def __init__(self, steps: list[dict[str, Any]], within: int | None, skip: Any) -> None:
        self.steps = steps
        self.within = within
        self.skip = skip

    def build(self) -> Pattern[Any]:
        p: Any = None
        for s in self.steps:
            if p is None:
                p = Pattern.begin(s["name"], skip=self.skip)
            else:
                p = getattr(p, s["how"])(s["name"])
            for c in s["conds"]:
                p = p.where(c)
            q = s.get("quant")
            if q is not None:
                p = getattr(p, q[0])(*q[1:])
            if s.get("optional"):
                p = p.optional()
            if s.get("inner") == "consecutive":
                p = p.consecutive()
            elif s.get("inner") == "allow_combinations":
                p = p.allow_combinations()
            if s.get("greedy"):
                p = p.greedy()
            if s.get("until") is not None:
                p = p.until(s["until"])
        if self.within is not None:
            p = p.within(self.within)
        return p  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Spec({self.steps!r}, within={self.within}, skip={self.skip!r})"


KINDS = ["a", "b", "c", "ab", "bc"]


@st.composite
def specs(draw: Any) -> Spec:
    n = draw(st.integers(1, 4))
    steps: list[dict[str, Any]] = []
    positives = 0
    for k in range(n):
        how = "begin" if k == 0 else draw(
            st.sampled_from(["next", "followed_by", "followed_by_any", "not_next", "not_followed_by"])
        )
        negative = how in ("not_next", "not_followed_by")
        name = f"n{k}" if negative else f"s{positives}"
        conds: list[Any] = [Kind(draw(st.sampled_from(KINDS)))]
        if not negative and draw(st.integers(0, 5)) == 0:
            conds.append(draw(st.sampled_from([FewerThan("s0", 2), ParityWith("s0"), FewerThan(name, 2)])))
        step: dict[str, Any] = {"name": name, "how": how, "conds": conds}
        if not negative:
            positives += 1
            quant = draw(
                st.sampled_from(
                    [None, None, ("times", 2), ("times", 1, 2), ("times", 2, 3), ("one_or_more",), ("times_or_more", 2)]
                )
            )
            step["quant"] = quant
            looping = quant is not None and quant != ("times", 1) and not (quant[0] == "times" and len(quant) == 2 and quant[1] == 1)
            step["optional"] = draw(st.integers(0, 3)) == 0
            if looping:
                step["inner"] = draw(st.sampled_from(["relaxed", "relaxed", "consecutive", "allow_combinations"]))
                step["greedy"] = draw(st.integers(0, 3)) == 0
                step["until"] = Kind(draw(st.sampled_from(KINDS))) if draw(st.integers(0, 3)) == 0 else None
        steps.append(step)
    within = draw(st.one_of(st.none(), st.integers(1, 25)))
    names = [s["name"] for s in steps if s["how"] not in ("not_next", "not_followed_by")]
    skip = draw(
        st.sampled_from([no_skip(), skip_to_next(), skip_past_last_event()] + [skip_to_first(x) for x in names])
    )
    spec = Spec(steps, within, skip)
    try:
        spec.build().compile()
    except ValueError:
        assume(False)
    return spec


# -- the reference matcher ----------------------------------------------------------------


def reference(spec: Spec, events: list[Event]) -> dict[str, list[dict[str, list[Event]]]]:
    """Per key, the matches in the order they complete, after the skip strategy."""
    out: dict[str, list[dict[str, list[Event]]]] = {}
    for key in sorted({e[0] for e in events}):
        seq = sorted([e for e in events if e[0] == key], key=lambda e: e[1])  # stable: ties in arrival order
        out[key] = _reference_key(spec, seq)
    return {k: v for k, v in out.items() if v}


def _reference_key(spec: Spec, seq: list[Event]) -> list[dict[str, list[Event]]]:
    pos_steps = [s for s in spec.steps if s["how"] not in ("not_next", "not_followed_by")]
    names = [s["name"] for s in pos_steps]
    m = len(pos_steps)
    # Negative steps: (kind, conds, index of the positive step before it).
    negs = []
    p = -1
    for s in spec.steps:
        if s["how"] in ("not_next", "not_followed_by"):
            negs.append((NOT_NEXT if s["how"] == "not_next" else NOT_FOLLOWED, s["conds"], p))
        else:
            p += 1
    trailing = spec.steps[-1]["how"] == "not_followed_by"

    def bounds(s: dict[str, Any]) -> tuple[int, int]:
        q = s.get("quant")
        if q is None:
            return 1, 1
        if q[0] == "times":
            return (q[1], q[1]) if len(q) == 2 else (q[1], q[2])
        if q[0] == "one_or_more":
            return 1, INFINITE
        return q[1], INFINITE

    lo = [bounds(s)[0] for s in pos_steps]
    hi = [bounds(s)[1] for s in pos_steps]
    opt = [bool(s.get("optional")) for s in pos_steps]
    inner = [{"consecutive": STRICT, "allow_combinations": 2}.get(s.get("inner", ""), RELAXED) for s in pos_steps]
    entry = [{"begin": RELAXED, "next": STRICT, "followed_by": RELAXED, "followed_by_any": 2}[s["how"]] for s in pos_steps]
    greedy = [bool(s.get("greedy")) for s in pos_steps]
    until = [s.get("until") for s in pos_steps]
    conds = [s["conds"] for s in pos_steps]
    W = spec.within
    n = len(seq)
    candidates = []  # (completion key, positions, labels)
    for size in range(1, n + 1):
        for positions in itertools.combinations(range(n), size):
            for labels in itertools.combinations_with_replacement(range(m), size):
                counts = [labels.count(j) for j in range(m)]
                if any((c == 0 and not opt[j]) or (c and not lo[j] <= c <= hi[j]) for j, c in enumerate(counts)):
                    continue
                if W is not None and seq[positions[-1]][1] - seq[positions[0]][1] >= W:
                    continue

                def ctx_upto(k: int) -> dict[str, list[Event]]:
                    ctx: dict[str, list[Event]] = {nm: [] for nm in names}
                    for pp, ll in zip(positions[:k], labels[:k]):
                        ctx[names[ll]].append(seq[pp])
                    return ctx

                if not all(holds(conds[labels[k]], seq[positions[k]], ctx_upto(k)) for k in range(size)):
                    continue
                ok = True
                for k in range(1, size):
                    q, r, i, j = positions[k - 1], positions[k], labels[k - 1], labels[k]
                    ctx = ctx_upto(k)
                    between = seq[q + 1 : r]
                    if i == j:
                        if inner[i] == STRICT and r != q + 1:
                            ok = False
                        if inner[i] == RELAXED and any(holds(conds[i], x, ctx) for x in between):
                            ok = False
                        if until[i] is not None and any(until[i](x) for x in between + [seq[r]]):
                            ok = False
                    else:
                        if entry[j] == STRICT and r != q + 1:
                            ok = False
                        if entry[j] == RELAXED and any(holds(conds[j], x, ctx) for x in between):
                            ok = False
                        if greedy[i] and counts[i] < hi[i] and any(holds(conds[i], x, ctx) for x in between + [seq[r]]):
                            ok = False
                        for kind, nconds, at in negs:
                            if i <= at < j:
                                if kind == NOT_FOLLOWED and any(holds(nconds, x, ctx) for x in between):
                                    ok = False
                                if kind == NOT_NEXT and holds(nconds, seq[q + 1], ctx):
                                    ok = False
                    if not ok:
                        break
                if not ok:
                    continue
                if trailing:
                    assert W is not None
                    q, i = positions[-1], labels[-1]
                    d = seq[positions[0]][1] + W
                    ctx = ctx_upto(size)
                    after = [x for x in seq[q + 1 :] if x[1] < d]
                    if any(holds(negs[-1][1], x, ctx) for x in after):
                        continue
                    if greedy[i] and counts[i] < hi[i] and any(holds(conds[i], x, ctx) for x in after):
                        continue
                    k_end = next((k for k in range(q + 1, n) if seq[k][1] >= d), n)
                    key = (k_end, 0, d, positions)
                else:
                    key = (positions[-1], 1, 0, positions)
                candidates.append((key, positions, labels))
    candidates.sort(key=lambda c: c[0])
    kind = spec.skip.kind
    emitted = []
    result = []
    for _key, positions, labels in candidates:
        start = positions[0]
        pruned = False
        for mp, ml in emitted:
            if kind == "skip_past_last_event" and start <= mp[-1]:
                pruned = True
            elif kind == "skip_to_next" and start <= mp[0]:
                pruned = True
            elif kind == "skip_to_first":
                target = names.index(spec.skip.name)
                firsts = [pp for pp, ll in zip(mp, ml) if ll == target]
                if firsts and start < firsts[0]:
                    pruned = True
        if pruned:
            continue
        emitted.append((positions, labels))
        events: dict[str, list[Event]] = {}
        for pp, ll in zip(positions, labels):
            events.setdefault(names[ll], []).append(seq[pp])
        result.append(events)
    return result


def per_key(out: list[Any]) -> dict[str, list[dict[str, list[Event]]]]:
    got: dict[str, list[dict[str, list[Event]]]] = {}
    for r in out:
        assert type(r) is Match
        got.setdefault(r.key, []).append({k: [tuple(e) for e in v] for k, v in r.events.items()})
    return got


# -- inputs ------------------------------------------------------------------------------------


@st.composite
def inputs(draw: Any) -> tuple[list[Event], int]:
    """Events in arrival order, and a disorder bound none of them breaks."""
    raw = draw(
        st.lists(st.tuples(st.sampled_from("xy"), st.integers(0, 20), st.sampled_from("abc")), max_size=9)
    )
    bound = draw(st.integers(0, 6))
    jitter = draw(st.lists(st.integers(0, bound), min_size=len(raw), max_size=len(raw)))
    order = sorted(range(len(raw)), key=lambda i: raw[i][1] + jitter[i])
    return [(raw[i][0], raw[i][1], raw[i][2], i) for i in order], bound


chunkings = st.one_of(st.lists(st.integers(0, 6), max_size=12), st.sampled_from([1, 2, 1024]))


def blueprint(spec: Spec, events: list[Event], bound: int, chunking: Any, store: Any = None, every: int = 0) -> Any:
    src: Any = Source.from_iterable(events) if isinstance(chunking, int) else source_from_chunks(split_at(events, chunking))
    if store is not None:
        src = src.checkpointed(store, every=every)
    return (
        src.with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
        .key_by(lambda e: e[0])
        .match(spec.build(), event_type=tuple[str, int, str, int])
    )


async def run(bp: Any, chunking: Any) -> list[Any]:
    max_chunk = chunking if isinstance(chunking, int) else None
    return await bp.to_mat(Sink.collect(), Keep.right).run(max_chunk=max_chunk)  # type: ignore[no-any-return]


# -- the model tests -------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(spec=specs(), data=inputs(), chunking=chunkings)
async def test_matches_equal_the_reference_matcher(spec: Spec, data: tuple[list[Event], int], chunking: Any) -> None:
    events, bound = data
    got = per_key(await run(blueprint(spec, events, bound, chunking), chunking))
    assert got == reference(spec, events)


@pytest.mark.parametrize("skip", [no_skip(), skip_to_next(), skip_past_last_event(), skip_to_first("s1")])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(spec=specs(), data=inputs(), chunking=chunkings)
async def test_each_skip_strategy_equals_the_reference(
    skip: Any, spec: Spec, data: tuple[list[Event], int], chunking: Any
) -> None:
    spec = Spec(spec.steps, spec.within, skip)
    try:
        spec.build().compile()
    except ValueError:
        assume(False)
    events, bound = data
    got = per_key(await run(blueprint(spec, events, bound, chunking), chunking))
    assert got == reference(spec, events)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(spec=specs(), data=inputs(), every=st.integers(1, 5), fail_at=st.integers(0, 10))
async def test_a_restart_from_a_checkpoint_does_not_change_the_matches(
    spec: Spec, data: tuple[list[Event], int], every: int, fail_at: int
) -> None:
    events, bound = data

    def bp(store: Any, armed: bool) -> Any:
        def maybe_fail(e: Event) -> Event:
            if armed and e[3] == fail_at:
                raise RuntimeError("crash")
            return e

        return (
            Source.from_iterable(events)
            .checkpointed(store, every=every)
            .map(maybe_fail)
            .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
            .key_by(lambda e: e[0])
            .match(spec.build(), event_type=tuple[str, int, str, int])
        )

    def as_set(out: list[Any]) -> set[Any]:
        return {(r.key, tuple(sorted((k, tuple(tuple(e) for e in v)) for k, v in r.events.items()))) for r in out}

    want = reference(spec, events)
    store = MemoryStore()
    out: list[Any] = []
    first = bp(store, True).to_mat(Sink.foreach(out.append), Keep.right).run(max_chunk=1)
    if fail_at < len(events):
        with pytest.raises(RuntimeError, match="crash"):
            await first
    else:
        await first
    await bp(store, False).to_mat(Sink.foreach(out.append), Keep.right).run(max_chunk=1)
    expected = {
        (k, tuple(sorted((n, tuple(v)) for n, v in m.items()))) for k, ms in want.items() for m in ms
    }
    assert as_set(out) == expected


# -- examples from the docs ----------------------------------------------------------------------


def login(user: str, ts: int, kind: str) -> dict[str, Any]:
    return {"user": user, "ts": ts, "kind": kind}


FAILS_THEN_SUCCESS = (
    Pattern.begin("fail")
    .where(lambda e: e["kind"] == "fail")
    .times(3)
    .followed_by("success")
    .where(lambda e: e["kind"] == "ok")
    .within(60_000)
)


async def test_three_failures_then_a_success_within_a_minute() -> None:
    events = [
        login("ann", 0, "fail"), login("bob", 1, "fail"), login("ann", 10, "fail"), login("ann", 20, "fail"),
        login("bob", 30, "ok"), login("ann", 30, "ok"),
        login("cy", 0, "fail"), login("cy", 1, "fail"), login("cy", 2, "fail"), login("cy", 70_000, "ok"),
    ]  # fmt: skip
    out = await (
        Source.from_iterable(sorted(events, key=lambda e: e["ts"]))
        .with_timestamps(lambda e: e["ts"])
        .key_by(lambda e: e["user"])
        .match(FAILS_THEN_SUCCESS)
        .run_with(Sink.collect())
    )
    assert [(m.key, [e["ts"] for e in m.events["fail"]], m.events["success"][0]["ts"]) for m in out] == [
        ("ann", [0, 10, 20], 30)
    ]


async def test_out_of_order_events_within_the_bound_are_matched_in_time_order() -> None:
    p = Pattern.begin("a").where(lambda e: e[1] == "a").next("b").where(lambda e: e[1] == "b")
    events = [(2, "b"), (1, "a"), (5, "b"), (3, "x"), (4, "a")]
    out = await (
        Source.from_iterable(events)
        .with_timestamps(lambda e: e[0], max_out_of_orderness=2)
        .key_by(lambda e: "k")
        .match(p)
        .run_with(Sink.collect())
    )
    assert [m.events for m in out] == [{"a": [(1, "a")], "b": [(2, "b")]}, {"a": [(4, "a")], "b": [(5, "b")]}]


async def test_timed_out_partial_matches_go_to_the_timeouts_output() -> None:
    timeouts: list[Timeout[str, dict[str, Any]]] = []
    events = [login("ann", 0, "fail"), login("ann", 1, "fail"), login("bob", 100_000, "fail")]
    out = await (
        Source.from_iterable(events)
        .with_timestamps(lambda e: e["ts"])
        .key_by(lambda e: e["user"])
        .match(FAILS_THEN_SUCCESS, timeouts=Sink.foreach(timeouts.append))
        .run_with(Sink.collect())
    )
    assert out == []
    # ann's two partial matches (from ts 0 and ts 1) time out on bob's watermark; bob's at the end of input.
    assert [(t.key, [e["ts"] for e in t.events["fail"]], t.deadline) for t in timeouts] == [
        ("ann", [0, 1], 60_000), ("ann", [1], 60_001), ("bob", [100_000], 160_000),
    ]  # fmt: skip


RESET_NOT_LOGIN = (
    Pattern.begin("reset")
    .where(lambda e: e["kind"] == "reset")
    .not_followed_by("login")
    .where(lambda e: e["kind"] == "ok")
    .within(600_000)
)


async def test_an_absence_fires_on_the_watermark_with_no_new_event() -> None:
    clock = VirtualClock()
    out: list[Any] = []
    src = Source.queue(10).with_timestamps(lambda e: e["ts"], idle_timeout=1.0)
    queue, done = (
        src.key_by(lambda e: e["user"]).match(RESET_NOT_LOGIN).to_mat(Sink.foreach(out.append), Keep.both).run(clock=clock)
    )
    await queue.offer(login("ann", 0, "reset"))
    await queue.offer(login("bob", 0, "reset"))
    await queue.offer(login("bob", 5_000, "ok"))
    await clock.advance(300.0)
    assert out == []
    await clock.advance(310.0)  # the idle watermark passes 600 s: no event arrived meanwhile
    assert [m.key for m in out] == ["ann"]
    queue.complete()
    await clock.run(done)
    assert [m.key for m in out] == ["ann"]


async def test_an_absence_fires_on_the_virtual_clock_in_processing_time() -> None:
    clock = VirtualClock()
    out: list[Any] = []
    timeouts: list[Any] = []
    queue, done = (
        Source.queue(10)
        .key_by(lambda e: e["user"])
        .match(RESET_NOT_LOGIN, time="processing", timeouts=Sink.foreach(timeouts.append))
        .to_mat(Sink.foreach(out.append), Keep.both)
        .run(clock=clock)
    )
    await queue.offer(login("ann", 0, "reset"))
    await queue.offer(login("bob", 0, "reset"))
    await clock.advance(60.0)
    await queue.offer(login("bob", 0, "ok"))
    await clock.advance(539.0)
    assert out == []
    await clock.advance(2.0)  # 601 s after the resets: ann's window closed with no login
    assert [m.key for m in out] == ["ann"]
    await queue.offer(login("cy", 0, "reset"))
    queue.complete()
    await clock.run(done)
    # At the end of the stream cy's absence is unconfirmed: a timeout, not a match.
    assert [m.key for m in out] == ["ann"]
    assert [t.key for t in timeouts] == ["cy"]


async def test_conditions_see_the_events_matched_so_far() -> None:
    p = (
        Pattern.begin("small").where(lambda e: e < 5).one_or_more().consecutive()
        .next("big").where(lambda e, ctx: e > sum(ctx["small"]))
    )  # fmt: skip
    out = await Source.from_iterable([3, 4, 6]).key_by(lambda e: 0).match(p, time="processing").run_with(
        Sink.collect()
    )
    # 6 follows [3, 4] but is not above 3 + 4; it is above 4 alone.
    assert [m.events for m in out] == [{"small": [3], "big": [4]}, {"small": [4], "big": [6]}]


async def test_a_late_event_fails_the_stream_with_a_clear_error() -> None:
    p = Pattern.begin("a").where(lambda e: True)
    with pytest.raises(LateEventError, match="max_out_of_orderness"):
        await (
            source_from_chunks([[("k", 10)], [("k", 1)]])
            .with_timestamps(lambda e: e[1])
            .key_by(lambda e: e[0])
            .match(p)
            .run_with(Sink.collect())
        )


def test_bad_patterns_are_refused_with_a_reason() -> None:
    a = Pattern.begin("a").where(lambda e: True)
    with pytest.raises(ValueError, match="needs within"):
        a.not_followed_by("b").compile()
    with pytest.raises(ValueError, match="cannot end with not_next"):
        a.not_next("b").compile()
    with pytest.raises(ValueError, match="used twice"):
        a.followed_by("a")
    with pytest.raises(ValueError, match="looping step"):
        a.greedy()
    with pytest.raises(ValueError, match="nothing after it must match"):
        a.one_or_more().greedy().compile()
    with pytest.raises(ValueError, match="no positive step"):
        Pattern.begin("a", skip=skip_to_first("zz")).compile()
    with pytest.raises(ValueError, match="needs timestamps"):
        Source.from_iterable([1]).key_by(lambda e: e).match(a)
