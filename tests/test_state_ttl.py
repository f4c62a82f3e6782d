"""State TTL of stateful_map: keys not touched for ``ttl`` lose their value, in memory and in the store.

Model (event time, the documented semantics): a key's value is gone when an
element of it arrives at or after (its latest earlier timestamp + ttl), and the
store keeps a key's value only while the watermark has not reached that time.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, KeyState, MemoryStore, RocksDBStore, Sink, Source
from streamlib._state.codec import decode_key
from streamlib.testing import VirtualClock, source_from_chunks, split_at

Ev = tuple[str, int, int]  # (key, ts, index)


@st.composite
def _events(draw: Any) -> tuple[list[Ev], int]:
    n = draw(st.integers(0, 60))
    bound = draw(st.integers(0, 20))
    ts = sorted(draw(st.lists(st.integers(0, 400), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from("abcd"), min_size=n, max_size=n))
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [(keys[i], ts[i], j) for j, i in enumerate(order)], bound


def count(e: Ev, state: KeyState[str, int]) -> tuple[int, int]:
    n = state.get(0) + 1
    state.set(n)
    return (e[2], n)


def model(events: list[Ev], ttl: int) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """Outputs, and the value of each key still live at the end (expiry after the last watermark)."""
    counts: dict[str, int] = {}
    expiry: dict[str, int] = {}
    out = []
    for key, ts, i in events:
        if key in expiry and ts >= expiry[key]:
            counts.pop(key, None)
            del expiry[key]
        counts[key] = counts.get(key, 0) + 1
        expiry[key] = max(expiry.get(key, ts + ttl), ts + ttl)
        out.append((i, counts[key]))
    return out, {k: v for k, v in counts.items() if expiry[k] > _last_watermark(events)}


_BOUND = [0]


def _last_watermark(events: list[Ev]) -> int:
    return max((ts for _k, ts, _i in events), default=-(2**63)) - _BOUND[0]


def _stored_values(store: Any) -> dict[Any, Any]:
    import msgspec

    table = store.table("stateful_map")
    return {decode_key(k): msgspec.msgpack.decode(v) for k, v in table.scan() if not k.startswith(b"\xc1")}


@settings(max_examples=120, deadline=None)
@given(
    data=_events(),
    ttl=st.integers(1, 120),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    store_kind=st.sampled_from(["none", "memory", "rocksdb"]),
    every=st.integers(1, 20),
    cache_size=st.integers(1, 4),
)
async def test_event_time_ttl_matches_the_model(
    data: tuple[list[Ev], int], ttl: int, cuts: list[int], store_kind: str, every: int, cache_size: int
) -> None:
    events, bound = data
    _BOUND[0] = bound
    expected, live = model(events, ttl)
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = {"none": None, "memory": MemoryStore(), "rocksdb": None}[store_kind]
        if store_kind == "rocksdb":
            store = RocksDBStore(os.path.join(tmp, "db"))
        src: Any = source_from_chunks(split_at(events, cuts))
        if store is not None:
            src = src.checkpointed(store, every=every)
        got = await (
            src.with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
            .key_by(lambda e: e[0])
            .stateful_map(count, ttl=ttl, cache_size=cache_size)
            .run_with(Sink.collect())
        )
        assert got == expected
        if store is not None:
            # The final checkpoint holds exactly the keys the last watermark had not expired.
            assert _stored_values(store) == live
            store.close()


@settings(max_examples=60, deadline=None)
@given(
    data=_events(),
    ttl=st.integers(1, 120),
    every=st.integers(1, 10),
    fail_at=st.integers(0, 70),
    kind=st.sampled_from(["memory", "rocksdb"]),
)
async def test_ttl_resumes_after_a_failure(
    data: tuple[list[Ev], int], ttl: int, every: int, fail_at: int, kind: str
) -> None:
    events, bound = data
    _BOUND[0] = bound
    expected, live = model(events, ttl)
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db"))

        def blueprint(armed: bool) -> Any:
            def maybe_fail(e: Ev) -> Ev:
                if armed and e[2] == fail_at:
                    raise RuntimeError("crash")
                return e

            return (
                Source.from_iterable(events)
                .checkpointed(store, every=every)
                .map(maybe_fail)
                .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
                .key_by(lambda e: e[0])
                .stateful_map(count, ttl=timedelta(milliseconds=ttl), cache_size=2)
            )

        out: list[Any] = []
        if fail_at < len(events):
            with pytest.raises(RuntimeError, match="crash"):
                await blueprint(True).run_with(Sink.foreach(out.append))
        else:
            await blueprint(True).run_with(Sink.foreach(out.append))
        await blueprint(False).run_with(Sink.foreach(out.append))
        assert dict(out) == dict(expected)
        assert set(out) == set(expected)
        # After the restart the resumed watermark only rises again: rows still expire as in one run.
        assert _stored_values(store) == live
        store.close()


def _count_str(e: str, state: KeyState[str, int]) -> tuple[str, int]:
    n = state.get(0) + 1
    state.set(n)
    return (e, n)


async def test_processing_time_ttl_removes_idle_keys_by_the_clock() -> None:
    clock = VirtualClock()
    store = MemoryStore()
    queue, got = (
        Source.queue(10)
        .checkpointed(store, every=1, replayable=False)
        .key_by(lambda e: e[0])
        .stateful_map(_count_str, ttl=timedelta(seconds=10), ttl_time="processing")
        .to_mat(Sink.collect(), Keep.both)
        .run(clock=clock)
    )
    await queue.offer("a1")
    await clock.advance(6)
    await queue.offer("a2")  # touched at 6 s: lives until 16 s
    await queue.offer("b1")
    await clock.advance(9)
    assert set(_stored_values(store)) == {"a", "b"}
    await clock.advance(2)  # 17 s: no element came, the TTL timers of a and b fired
    await queue.offer("c1")  # the next checkpoint deletes their rows
    await clock.advance(0)
    assert _stored_values(store) == {"c": 1}
    await queue.offer("a3")
    queue.complete()
    assert await got == [("a1", 1), ("a2", 2), ("b1", 1), ("c1", 1), ("a3", 1)]


async def test_ttl_and_user_timers_together() -> None:
    # A timer that writes the state keeps the key alive: the TTL restarts at the timer's time.
    events = [("a", 0), ("a", 50), ("b", 100), ("b", 300)]

    def fn(e: tuple[str, int], state: KeyState[str, int]) -> Any:
        state.set(state.get(0) + 1)
        if e[1] == 0:
            state.timer_at(80)
        return (e, state.get())

    def on_timer(key: str, state: KeyState[str, int], timer: Any) -> Any:
        state.set(state.get(0) + 100)
        return (key, "timer", state.get())

    got = await (
        Source.from_iterable(events)
        .with_timestamps(lambda e: e[1], bounded=True)
        .key_by(lambda e: e[0])
        .stateful_map(fn, on_timer=on_timer, ttl=60)
        .run_with(Sink.collect())
    )
    assert got == [
        (("a", 0), 1),
        (("a", 50), 2),
        (("b", 100), 1),
        (("b", 300), 1),  # b untouched since 100: expired (300 >= 160)
        ("a", "timer", 102),
    ]


def test_ttl_arguments() -> None:
    keyed = Source.from_iterable([1]).key_by(str)
    with pytest.raises(ValueError, match="needs event timestamps"):
        keyed.stateful_map(lambda e, s: e, ttl=5)
    with pytest.raises(ValueError, match="positive"):
        keyed.stateful_map(lambda e, s: e, ttl=0, ttl_time="processing")
    with pytest.raises(TypeError, match="event-time duration"):
        keyed.stateful_map(lambda e, s: e, ttl=1.5, ttl_time="processing")  # type: ignore[arg-type]
    keyed.stateful_map(lambda e, s: e, ttl=5, timestamp=lambda e: e)
