"""Keyed timers in stateful_map and process, against a batch model of the documented semantics.

The model program keeps per-key buckets of event time (a tumbling window
written by hand with timers): each element adds to its bucket and sets the
bucket's timer, a "cancel" element drops its bucket and cancels the timer, the
timer emits the bucket's sum and, for odd sums, sets a second timer ("echo",
one per key, replaced by the next one). With disorder within the watermark
bound, no element arrives after its bucket's timer fired, so the results are
those of a batch run: all elements in arrival order, then every timer in order
of (time, order of setting). Chunking, watermarks, restarts from checkpoints
and stores must not change them.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, KeyState, MemoryStore, RocksDBStore, Sink, Source, Timer
from streamlib.testing import VirtualClock, source_from_chunks, split_at

SIZE = 20  # bucket size: bucket ends are even
ECHO = 7  # an echo timer is odd: never at the time of a bucket timer

Ev = tuple[str, int, str, int]  # (key, ts, op, index)


@st.composite
def _events(draw: Any) -> tuple[list[Ev], int]:
    n = draw(st.integers(0, 60))
    bound = draw(st.integers(0, 30))
    ts = sorted(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    ops = draw(st.lists(st.sampled_from(["add", "add", "add", "cancel"]), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n))
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [(keys[i], ts[i], ops[i], j) for j, i in enumerate(order)], bound


def _bucket(ts: int) -> int:
    return (ts // SIZE + 1) * SIZE


def on_element(e: Ev, state: KeyState[str, dict[str, int]]) -> Any:
    key, ts, op, i = e
    end = _bucket(ts)
    sums = dict(state.get({}))
    if op == "cancel":
        sums.pop(str(end), None)
        state.cancel_timer(f"b{end}")
    else:
        sums[str(end)] = sums.get(str(end), 0) + ts
        state.timer_at(end, f"b{end}")
    state.set(sums)
    return ("seen", i, sums.get(str(end)))


def on_timer(key: str, state: KeyState[str, dict[str, int]], timer: Timer) -> Any:
    if timer.name == "echo":
        return ("echo", key, timer.time)
    sums = dict(state.get({}))
    total = sums.pop(str(timer.time))
    state.set(sums)
    if total % 2:
        state.timer_at(timer.time + ECHO, "echo")
    return ("fired", key, timer.time, total)


def model(events: list[Ev]) -> tuple[list[Any], list[Any]]:
    """Element outputs in order, then timer outputs in order: the batch run of the documented semantics."""
    seen: list[Any] = []
    sums: dict[str, dict[int, int]] = {}
    timers: dict[tuple[str, str], tuple[int, int]] = {}  # (key, name) -> (time, seq)
    seq = 0

    def set_timer(key: str, name: str, time: int) -> None:
        nonlocal seq
        if timers.get((key, name), (None,))[0] == time:
            return  # same time: unchanged
        seq += 1
        timers[(key, name)] = (time, seq)

    for key, ts, op, i in events:
        end = _bucket(ts)
        mine = sums.setdefault(key, {})
        if op == "cancel":
            mine.pop(end, None)
            timers.pop((key, f"b{end}"), None)
        else:
            mine[end] = mine.get(end, 0) + ts
            set_timer(key, f"b{end}", end)
        seen.append(("seen", i, mine.get(end)))
    fired: list[Any] = []
    while timers:
        (key, name), (time, _s) = min(timers.items(), key=lambda kv: kv[1])
        del timers[(key, name)]
        if name == "echo":
            fired.append(("echo", key, time))
            continue
        total = sums[key].pop(time)
        if total % 2:
            set_timer(key, "echo", time + ECHO)
        fired.append(("fired", key, time, total))
    return seen, fired


def _split(out: list[Any]) -> tuple[list[Any], list[Any]]:
    return [o for o in out if o[0] == "seen"], [o for o in out if o[0] != "seen"]


def _blueprint(chunks: list[list[Ev]], bound: int, store: Any, every: int, fail_at: int | None) -> Any:
    def maybe_fail(e: Ev) -> Ev:
        if e[3] == fail_at:
            raise RuntimeError("crash")
        return e

    src: Any = source_from_chunks(chunks)
    if store is not None:
        src = src.checkpointed(store, every=every)
    return (
        src.map(maybe_fail)
        .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
        .key_by(lambda e: e[0])
        .stateful_map(on_element, on_timer=on_timer)
    )


@settings(max_examples=120, deadline=None)
@given(
    data=_events(),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    store_kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 20),
    max_chunk=st.sampled_from([1, 3, 1024]),
)
async def test_event_time_timers_match_the_batch_model(
    data: tuple[list[Ev], int], cuts: list[int], store_kind: str, every: int, max_chunk: int
) -> None:
    events, bound = data
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = {"none": None, "memory": MemoryStore(), "rocksdb": None}[store_kind]
        if store_kind == "rocksdb":
            store = RocksDBStore(os.path.join(tmp, "db"))
        bp = _blueprint(split_at(events, cuts), bound, store, every, None)
        out = await bp.to_mat(Sink.collect(), Keep.right).run(max_chunk=max_chunk)
        assert _split(out) == model(events)
        if store is not None:
            store.close()


@settings(max_examples=100, deadline=None)
@given(
    data=_events(),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    every=st.integers(1, 10),
    fail_at=st.integers(0, 70),
    kind=st.sampled_from(["memory", "rocksdb"]),
)
async def test_timers_resume_from_the_last_checkpoint_after_a_failure(
    data: tuple[list[Ev], int], cuts: list[int], every: int, fail_at: int, kind: str
) -> None:
    events, bound = data
    seen, fired = model(events)
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db"))
        chunks = split_at(events, cuts)
        out: list[Any] = []
        first = _blueprint(chunks, bound, store, every, fail_at).run_with(Sink.foreach(out.append))
        if fail_at < len(events):
            with pytest.raises(RuntimeError, match="crash"):
                await first
        else:
            await first
        await _blueprint(chunks, bound, store, every, None).run_with(Sink.foreach(out.append))
        # Output after the last checkpoint comes again (at-least-once); every timer fired at least once.
        got_seen, got_fired = _split(out)
        assert set(got_seen) == set(seen)
        assert set(got_fired) == set(fired)
        # The rerun alone fires exactly the timers not yet fired at the checkpoint it resumed from.
        assert all(r in fired for r in got_fired)
        store.close()


async def test_a_restored_timer_fires_once_in_the_resumed_run() -> None:
    store = MemoryStore()
    events = [("a", 5, "add", 0), ("b", 7, "add", 1), ("a", 30, "add", 2), ("b", 45, "add", 3)]
    # First run: crashes at index 2, after the checkpoint taken after index 1 (timers at 20 pending).
    with pytest.raises(RuntimeError):
        await _blueprint([events], 0, store, 2, 2).run_with(Sink.collect())
    out = await _blueprint([events], 0, store, 2, None).run_with(Sink.collect())
    assert [o for o in out if o[0] == "fired"] == [
        ("fired", "a", 20, 5),
        ("fired", "b", 20, 7),
        ("fired", "a", 40, 30),
        ("fired", "b", 60, 45),
    ]


async def test_event_time_timer_fires_on_a_watermark_without_a_new_element_of_its_key() -> None:
    clock = VirtualClock()

    def fn(e: tuple[str, int], state: KeyState[str, int]) -> None:
        state.timer_at(e[1] + 1_000, "deadline")

    def fired(key: str, state: KeyState[str, int], timer: Timer) -> tuple[str, int]:
        return (key, timer.time)

    queue, got = (
        Source.queue(10)
        .with_timestamps(lambda e: e[1], idle_timeout=5.0)
        .key_by(lambda e: e[0])
        .stateful_map(fn, on_timer=fired)
        .to_mat(Sink.collect(), Keep.both)
        .run(clock=clock)
    )
    await queue.offer(("a", 10_000))
    await clock.advance(0.5)
    # No element comes again: the idle input's watermark advances with the clock and fires the timer.
    await clock.advance(7.0)
    queue.complete()
    assert await got == [("a", 11_000)]


async def test_processing_time_timers_fire_by_the_virtual_clock_without_new_elements() -> None:
    clock = VirtualClock()
    out: list[Any] = []

    def fn(e: str, state: KeyState[str, int]) -> str:
        state.set(state.get(0) + 1)
        state.timer_after(10, "idle")  # replaces the key's pending "idle" timer
        return f"in {e}"

    def idle(key: str, state: KeyState[str, int], timer: Timer) -> tuple[str, int, int]:
        n = state.get(0)
        state.delete()
        return (key, n, timer.time - clock.wall_ms())

    queue, done = (
        Source.queue(10)
        .key_by(str)
        .stateful_map(fn, on_timer=idle)
        .to_mat(Sink.foreach(out.append), Keep.both)
        .run(clock=clock)
    )
    await queue.offer("a")
    await clock.advance(6)
    await queue.offer("a")
    await queue.offer("b")
    await clock.advance(9.5)
    assert out == ["in a", "in a", "in b"]  # a's timer was replaced at 6 s: due at 16 s
    await clock.advance(1)
    assert out[3:] == [("a", 2, 0), ("b", 1, 0)]
    await clock.advance(100)
    assert len(out) == 5
    queue.complete()
    await done


async def test_cancel_and_inspect_timers() -> None:
    clock = VirtualClock()

    def fn(e: tuple[str, str], state: KeyState[str, int]) -> Any:
        key, op = e
        if op == "start":
            state.timer_after(5)
            t = state.timer()
            assert t is not None and t.domain == "processing" and t.name == "timer"
            return ("started", key)
        if op == "event":
            state.timer_after(2)
            state.timer_at(99)  # the same name: replaces the processing-time timer
            return ("now", state.timer())
        return ("cancelled", key, state.cancel_timer(), state.cancel_timer(), state.timer())

    def fired(key: str, state: KeyState[str, int], timer: Timer) -> Any:
        return ("fired", key, timer)

    queue, done = (
        Source.queue(10)
        .key_by(lambda e: e[0])
        .stateful_map(fn, on_timer=fired)
        .to_mat(Sink.collect(), Keep.both)
        .run(clock=clock)
    )
    await queue.offer(("a", "start"))
    await queue.offer(("b", "start"))
    await queue.offer(("b", "stop"))
    await queue.offer(("c", "event"))
    await clock.advance(10)
    queue.complete()
    assert await done == [
        ("started", "a"),
        ("started", "b"),
        ("cancelled", "b", True, False, None),
        ("now", Timer("timer", 99, "event")),
        ("fired", "a", Timer("timer", clock.wall_ms() - 5_000, "processing")),
        ("fired", "c", Timer("timer", 99, "event")),  # no watermark: event time ends with the input
    ]


async def test_processing_time_timers_survive_a_restart_by_wall_clock_deadline() -> None:
    store = MemoryStore()
    clock = VirtualClock()

    def fn(e: str, state: KeyState[str, int]) -> None:
        state.timer_after(30)

    def fired(key: str, state: KeyState[str, int], timer: Timer) -> tuple[str, int]:
        return (key, timer.time)

    bp = Source.from_iterable(["x"]).checkpointed(store, every=1).key_by(str).stateful_map(fn, on_timer=fired)
    assert await bp.to_mat(Sink.collect(), Keep.right).run(clock=clock) == []  # the input ended first
    deadline = clock.wall_ms() + 30_000
    # A later run over the same store (nothing to replay) fires it once the clock reaches the deadline.
    out: list[Any] = []
    bp2 = Source.queue(1).checkpointed(store, every=1, replayable=False).key_by(str)
    queue, done = bp2.stateful_map(fn, on_timer=fired).to_mat(Sink.foreach(out.append), Keep.both).run(clock=clock)
    await clock.advance(29)
    assert out == []
    await clock.advance(2)
    assert out == [("x", deadline)]
    queue.complete()
    await done


def _gen_fn(e: tuple[str, int], state: KeyState[str, list[int]]) -> Any:
    seen = state.get([]) + [e[1]]
    state.set(seen)
    state.timer_at(e[1] + 10)
    for v in seen:
        yield (e[0], "has", v)


def _gen_timer(key: str, state: KeyState[str, list[int]], timer: Timer) -> Any:
    seen = state.get([])
    state.delete()
    return [(key, "flush", v) for v in seen]


async def test_process_emits_every_output_of_fn_and_on_timer() -> None:
    events = [("a", 1), ("a", 2), ("b", 3), ("a", 40)]
    got = await (
        Source.from_iterable(events)
        .with_timestamps(lambda e: e[1])
        .key_by(lambda e: e[0])
        .process(_gen_fn, on_timer=_gen_timer)
        .run_with(Sink.collect())
    )
    # The one chunk goes through before its watermark (40) fires the timers at 12 and 13; a's timer was replaced.
    assert got == [
        ("a", "has", 1),
        ("a", "has", 1),
        ("a", "has", 2),
        ("b", "has", 3),
        ("a", "has", 1),
        ("a", "has", 2),
        ("a", "has", 40),
        ("b", "flush", 3),
        ("a", "flush", 1),
        ("a", "flush", 2),
        ("a", "flush", 40),
    ]


async def test_process_without_timers_emits_iterables() -> None:
    got = await Source.from_iterable("abca").key_by(str).process(lambda e, s: [e] * 2).run_with(Sink.collect())
    assert got == list("aabbccaa")


async def test_timers_without_on_timer_are_a_clear_error() -> None:
    def fn(e: str, state: KeyState[str, int]) -> str:
        state.timer_at(5)
        return e

    with pytest.raises(RuntimeError, match="on_timer="):
        await Source.single("a").key_by(str).stateful_map(fn).run_with(Sink.collect())


def test_timer_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="on_timer"):
        Source.single("a").key_by(str).stateful_map(lambda e, s: e, on_timer=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_time"):
        Source.single("a").key_by(str).stateful_map(lambda e, s: e, ttl=5, ttl_time="wall")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s: s.timer_at(1.5), TypeError, "int milliseconds"),
        (lambda s: s.timer_at(True), TypeError, "int milliseconds"),
        (lambda s: s.timer_after("soon"), TypeError, "seconds"),
        (lambda s: s.timer_after(-1), ValueError, "negative"),
        (lambda s: s.timer_at(5, name=3), TypeError, "name"),
    ],
)
async def test_bad_timer_calls_fail_the_stream_naming_the_problem(call: Any, error: type, match: str) -> None:
    def fn(e: str, state: KeyState[str, int]) -> str:
        call(state)
        return e

    with pytest.raises(error, match=match):
        await Source.single("a").key_by(str).stateful_map(fn, on_timer=lambda k, s, t: None).run_with(Sink.collect())


async def test_many_timers_fire_in_time_order_then_setting_order() -> None:
    keys = [f"k{i}" for i in range(200)]

    def fn(e: tuple[str, int], state: KeyState[str, int]) -> None:
        state.timer_at(e[1])

    got = await (
        Source.from_iterable([(k, (i * 37) % 50) for i, k in enumerate(keys)] + [("end", 1_000)])
        .with_timestamps(lambda e: e[1], bounded=True)
        .key_by(lambda e: e[0])
        .stateful_map(fn, on_timer=lambda k, s, t: (t.time, k))
        .run_with(Sink.collect())
    )
    expected = [t for _s, t in heapq.nsmallest(201, [(((i * 37) % 50, i), ((i * 37) % 50, k)) for i, k in enumerate(keys)])]
    assert got == expected + [(1_000, "end")]


async def test_a_timer_the_watermark_already_passed_fires_with_the_next_watermark() -> None:
    def fn(e: tuple[str, int], state: KeyState[str, int]) -> Any:
        if e[0] == "late":
            state.timer_at(5)  # the watermark is at 100 already
        return ("in", e[0])

    got = await (
        source_from_chunks([[("a", 100)], [("late", 50)], [("b", 101)], [("c", 300)]])
        .with_timestamps(lambda e: e[1], max_out_of_orderness=0)
        .key_by(lambda e: e[0])
        .stateful_map(fn, on_timer=lambda k, s, t: ("fired", k, t.time))
        .run_with(Sink.collect())
    )
    assert got == [("in", "a"), ("in", "late"), ("in", "b"), ("fired", "late", 5), ("in", "c")]
