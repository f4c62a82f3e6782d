"""Windows by example: the API, emission modes, late data, idle inputs, errors, bounded state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from streamlib import (
    CountWindows,
    Flow,
    HoppingWindows,
    Keep,
    LateDataError,
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
from streamlib.testing import VirtualClock, source_from_chunks


@dataclass(frozen=True)
class Event:
    key: str
    ts: int
    value: int


def _events(n: int, keys: int = 3, step_ms: int = 1_000) -> list[Event]:
    return [Event(f"k{i % keys}", i * step_ms, i) for i in range(n)]


async def test_the_documented_shape_with_both_stores(tmp_path: Any) -> None:
    events = _events(30)
    expected = {}
    for e in events:
        w = (e.key, e.ts // 10_000 * 10_000)
        expected[w] = expected.get(w, 0) + e.value
    for store in (MemoryStore(), RocksDBStore(tmp_path / "db")):
        results = await (
            Source.from_iterable(events)
            .checkpointed(store, every=7)
            .with_timestamps(lambda e: e.ts)
            .key_by(lambda e: e.key)
            .window(TumblingWindows(timedelta(seconds=10)), store=store)
            .sum(lambda e: e.value)
            .run_with(Sink.collect())
        )
        assert {(r.key, r.start): r.value for r in results} == expected
        assert all(r.end == r.start + 10_000 for r in results)
        store.close()


async def test_each_aggregation() -> None:
    events = [Event("a", 1, 4), Event("a", 2, 1), Event("b", 3, 7), Event("a", 4, 3)]
    w = Source.from_iterable(events).with_timestamps(lambda e: e.ts).key_by(lambda e: e.key).window(TumblingWindows(10))

    async def run(blueprint: Any) -> dict[str, Any]:
        return {r.key: r.value for r in await blueprint.run_with(Sink.collect())}

    assert await run(w.count()) == {"a": 3, "b": 1}
    assert await run(w.sum(lambda e: e.value)) == {"a": 8, "b": 7}
    assert await run(w.min(lambda e: e.value)) == {"a": 1, "b": 7}
    assert await run(w.max(lambda e: e.value)) == {"a": 4, "b": 7}
    assert await run(w.mean(lambda e: e.value)) == {"a": 8 / 3, "b": 7.0}
    assert await run(w.collect(lambda e: e.value)) == {"a": [4, 1, 3], "b": [7]}
    assert await run(w.collect()) == {"a": [events[0], events[1], events[3]], "b": [events[2]]}
    assert await run(w.aggregate("", lambda acc, e: acc + str(e.value))) == {"a": "413", "b": "7"}
    assert await run(w.aggregate(list, lambda acc, e: acc + [e.ts], result=tuple)) == {"a": (1, 2, 4), "b": (3,)}


async def test_final_results_come_when_the_watermark_passes_the_end() -> None:
    queue, out = (
        Source.queue(10)
        .with_timestamps(lambda e: e.ts)
        .key_by(lambda e: e.key)
        .window(TumblingWindows(10))
        .count()
        .to_mat(Sink.queue(), Keep.both)
        .run()
    )
    await queue.offer(Event("a", 3, 0))
    await queue.offer(Event("a", 9, 0))
    await queue.offer(Event("a", 10, 0))  # watermark 10 closes [0, 10)
    assert await out.pull() == WindowResult("a", 0, 10, 2)
    queue.complete()  # end of stream flushes [10, 20)
    assert await out.pull() == WindowResult("a", 10, 20, 1)
    assert await out.pull() is None


async def test_updates_mode_emits_each_change() -> None:
    chunks = [[Event("a", 1, 1)], [Event("a", 2, 2), Event("b", 3, 5)], [Event("a", 12, 3)]]
    results = await (
        source_from_chunks(chunks)
        .with_timestamps(lambda e: e.ts)
        .key_by(lambda e: e.key)
        .window(TumblingWindows(10), emit="updates")
        .sum(lambda e: e.value)
        .run_with(Sink.collect())
    )
    assert results[0] == WindowResult("a", 0, 10, 1)
    assert set(results[1:3]) == {WindowResult("a", 0, 10, 3), WindowResult("b", 0, 10, 5)}
    assert results[3:] == [WindowResult("a", 10, 20, 3)]


async def test_allowed_lateness_keeps_a_window_open() -> None:
    # One element per chunk, so the watermark moves between elements.
    chunks = [[Event("a", 5, 1)], [Event("a", 14, 1)], [Event("a", 7, 1)], [Event("a", 30, 1)], [Event("a", 8, 1)]]
    late: list[LateRecord] = []
    results = await (
        source_from_chunks(chunks)
        .with_timestamps(lambda e: e.ts)
        .key_by(lambda e: e.key)
        .window(TumblingWindows(10), allowed_lateness=5, late=Sink.foreach(late.append))
        .count()
        .run_with(Sink.collect())
    )
    # 7 arrives at watermark 14 < 10 + 5: counted. 8 arrives at watermark 30: late.
    assert results == [WindowResult("a", 0, 10, 2), WindowResult("a", 10, 20, 1), WindowResult("a", 30, 40, 1)]
    assert [r.element for r in late] == [Event("a", 8, 1)]


async def test_late_records_carry_the_reason_and_go_where_asked() -> None:
    events = [Event("a", 25, 1), Event("a", 3, 2)]

    def keyed() -> Any:
        src = source_from_chunks([[e] for e in events])
        return src.with_timestamps(lambda e: e.ts).key_by(lambda e: e.key)

    late: list[LateRecord] = []
    results = await keyed().window(TumblingWindows(10), late=Sink.foreach(late.append)).count().run_with(
        Sink.collect()
    )
    assert results == [WindowResult("a", 20, 30, 1)]
    (record,) = late
    assert (record.element, record.key, record.timestamp, record.watermark) == (events[1], "a", 3, 25)
    assert (record.window_start, record.window_end) == (0, 10)
    assert "window [0, 10) closed" in record.reason

    mixed = await keyed().window(TumblingWindows(10), late="emit").count().run_with(Sink.collect())
    assert [type(x) for x in mixed] == [LateRecord, WindowResult]
    assert [x for x in mixed if is_late(x)] == late

    with pytest.raises(LateDataError, match=r"timestamp 3\) arrived after its window \[0, 10\) closed") as info:
        await keyed().window(TumblingWindows(10)).count().run_with(Sink.collect())
    assert "late=" in str(info.value)


async def test_idle_timeout_closes_windows_without_more_events() -> None:
    clock = VirtualClock()
    out: list[WindowResult[str, int]] = []
    queue, done = (
        Source.queue(10)
        .with_timestamps(lambda e: e.ts, idle_timeout=timedelta(seconds=30))
        .key_by(lambda e: e.key)
        .window(TumblingWindows(timedelta(seconds=10)))
        .count()
        .to_mat(Sink.foreach(out.append), Keep.both)
        .run(clock=clock)
    )
    await queue.offer(Event("a", 1_000, 0))
    await queue.offer(Event("a", 2_000, 0))
    await clock.advance(29)
    assert out == []
    await clock.advance(1)  # 30 s quiet: the watermark moves to 32 000, [0, 10 000) closes
    assert out == [WindowResult("a", 0, 10_000, 2)]
    queue.complete()
    await clock.run(done)


async def test_windows_in_a_flow_and_an_explicit_timestamp() -> None:
    flow = Flow().key_by(lambda e: e.key).window(SessionWindows(5), timestamp=lambda e: e.ts).count()
    events = [Event("a", 0, 0), Event("a", 3, 0), Event("a", 20, 0)]
    assert await Source.from_iterable(events).via(flow).run_with(Sink.collect()) == [
        WindowResult("a", 0, 8, 2),
        WindowResult("a", 20, 25, 1),
    ]
    timed = Flow().with_timestamps(lambda e: e.ts).key_by(lambda e: e.key).window(HoppingWindows(10, 5)).count()
    assert [(r.start, r.value) for r in await Source.from_iterable(events).via(timed).run_with(Sink.collect())] == [
        (-5, 2),
        (0, 2),
        (15, 1),
        (20, 1),
    ]


async def test_sliding_windows_follow_kafka_streams() -> None:
    # The Kafka Streams SlidingWindows javadoc example: time difference 5000 ms (inclusive) is size 5001 here.
    events = [Event("A", 8000, 1), Event("A", 9200, 2), Event("A", 12400, 3)]
    results = await (
        Source.from_iterable(events)
        .with_timestamps(lambda e: e.ts)
        .key_by(lambda e: e.key)
        .window(SlidingWindows(5001))
        .collect(lambda e: e.value)
        .run_with(Sink.collect())
    )
    assert sorted((r.start, r.end - 1, r.value) for r in results) == [
        (3000, 8000, [1]),
        (4200, 9200, [1, 2]),
        (7400, 12400, [1, 2, 3]),
        (8001, 13001, [2, 3]),
        (9201, 14201, [3]),
    ]


async def test_count_windows_need_no_timestamps() -> None:
    results = await Source.from_iterable("aabab").key_by(str).window(CountWindows(2)).collect().run_with(
        Sink.collect()
    )
    assert results == [
        WindowResult("a", 0, 2, ["a", "a"]),
        WindowResult("b", 0, 2, ["b", "b"]),
        WindowResult("a", 2, 4, ["a"]),
    ]


def test_build_time_errors() -> None:
    keyed = Source.from_iterable([Event("a", 0, 0)]).key_by(lambda e: e.key)
    with pytest.raises(ValueError, match=r"needs event timestamps: add \.with_timestamps"):
        keyed.window(TumblingWindows(10))
    timed = Source.from_iterable([Event("a", 0, 0)]).with_timestamps(lambda e: e.ts).key_by(lambda e: e.key)
    with pytest.raises(ValueError, match="merge"):
        timed.window(SessionWindows(10)).aggregate(0, lambda a, e: a + 1)
    with pytest.raises(TypeError, match="TumblingWindows, HoppingWindows"):
        timed.window(10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'final' or 'updates'"):
        timed.window(TumblingWindows(10), emit="often")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Sink, 'emit' or 'fail'"):
        timed.window(TumblingWindows(10), late="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step <= size"):
        HoppingWindows(10, 20)
    with pytest.raises(TypeError, match="int milliseconds or datetime.timedelta"):
        TumblingWindows(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        SessionWindows(0)
    with pytest.raises(ValueError, match="no event time"):
        timed.window(CountWindows(3), allowed_lateness=5)
    with pytest.raises(TypeError, match=r"key_by\(f\) needs a function of the element, a field name"):
        Source.empty().key_by(3.5)  # type: ignore[call-overload]
    assert TumblingWindows(timedelta(seconds=1)) == TumblingWindows(1000)


async def test_user_function_errors_name_the_window_stage() -> None:
    w = Source.from_iterable([Event("a", 0, 0)]).with_timestamps(lambda e: e.ts).key_by(lambda e: 1 / 0)
    with pytest.raises(ZeroDivisionError) as info:
        await w.window(TumblingWindows(10)).count().run_with(Sink.collect())
    assert "in stage 'window.tumbling.count'" in info.value.__notes__


async def test_expired_windows_leave_the_store(tmp_path: Any) -> None:
    store = RocksDBStore(tmp_path / "db")
    n = 20_000
    results = await (
        Source.from_iterable(range(n))
        .checkpointed(store, every=1_000)
        .with_timestamps(lambda i: i)
        .key_by(lambda i: i % 50)
        .window(SessionWindows(40))
        .count()
        .run_with(Sink.collect())
    )
    # Each key sees an event every 50 ms: 20 000 sessions of one event each.
    assert len(results) == n and {r.value for r in results} == {1}
    # The store holds one row per key (its open or last closed session) and the watermark.
    assert sum(store.stats().values()) <= 50 + 1
    store.close()


async def test_an_aggregation_with_typed_accumulators_restores_them(tmp_path: Any) -> None:
    import msgspec

    class Stats(msgspec.Struct):
        n: int = 0
        total: int = 0

    def add(s: Stats, e: Event) -> Stats:
        return Stats(s.n + 1, s.total + e.value)

    store = MemoryStore()
    blueprint = (
        Source.from_iterable(_events(6, keys=1))
        .checkpointed(store, every=2)
        .with_timestamps(lambda e: e.ts)
        .key_by(lambda e: e.key)
        .window(TumblingWindows(100_000))
        .aggregate(Stats, add, lambda a, b: Stats(a.n + b.n, a.total + b.total), acc_type=Stats)
    )
    assert await blueprint.run_with(Sink.collect()) == [WindowResult("k0", 0, 100_000, Stats(6, 15))]
    # A rerun resumes after the last checkpoint (the end) with the restored, typed accumulator.
    assert await blueprint.run_with(Sink.collect()) == [WindowResult("k0", 0, 100_000, Stats(6, 15))]


async def test_a_session_never_grows_back_into_a_closed_one() -> None:
    events = [("k", 1000), ("z", 1250), ("k", 1200), ("k", 1120), ("k", 1090)]
    out = await (
        Source.from_iterable(events)
        .with_timestamps(1)
        .key_by(0)
        .window(SessionWindows(100), late="emit")
        .collect(1)
        .to_mat(Sink.collect(), Keep.right)
        .run(max_chunk=1)
    )
    results = [(r.key, r.start, r.end) for r in out if type(r) is WindowResult and r.key == "k"]
    assert results == [("k", 1000, 1100), ("k", 1120, 1300)]
    late = [r for r in out if is_late(r)]
    assert [(r.element, r.window_start, r.window_end) for r in late] == [(("k", 1090), 1000, 1100)]


async def test_the_late_sinks_materialized_value_through_late_mat() -> None:
    events = [Event("a", 25, 1), Event("a", 3, 2), Event("b", 40, 3), Event("a", 1, 4)]
    keyed = source_from_chunks([[e] for e in events]).with_timestamps(lambda e: e.ts).key_by(lambda e: e.key)
    late, results = (
        keyed.window(TumblingWindows(10), late=Sink.collect(), late_mat=Keep.right)
        .count()
        .to_mat(Sink.collect(), Keep.both)
        .run()
    )
    assert [r.element for r in await late] == [events[1], events[3]]
    assert await results == [WindowResult("a", 20, 30, 1), WindowResult("b", 40, 50, 1)]

    # In a Flow, combined with the Flow's own value like via_mat / to_mat.
    flow = (
        Flow()
        .watch_termination()
        .with_timestamps(lambda e: e.ts)
        .key_by(lambda e: e.key)
        .window(SessionWindows(5), late=Sink.fold(0, lambda n, r: n + 1), late_mat=Keep.both)
        .count()
    )
    (done, late_count), results = (
        source_from_chunks([[e] for e in events]).via_mat(flow, Keep.right).to_mat(Sink.collect(), Keep.both).run()
    )
    assert await late_count == 2
    assert [(r.key, r.start) for r in await results] == [("a", 25), ("b", 40)]
    await done

    # Without late_mat the late Sink's value is dropped, as with divert_to.
    plain = keyed.window(TumblingWindows(10), late=Sink.ignore()).count()
    assert await plain.run_with(Sink.collect()) == [WindowResult("a", 20, 30, 1), WindowResult("b", 40, 50, 1)]
    with pytest.raises(ValueError, match=r"late_mat=\) combines the materialized value of a late-data Sink"):
        keyed.window(TumblingWindows(10), late="emit", late_mat=Keep.right)  # type: ignore[call-overload]


async def test_a_bounded_input_closes_windows_at_its_end() -> None:
    # An unsorted file: by default the watermark follows the largest timestamp seen, so 3 is late.
    rows = [Event("a", 25, 1), Event("a", 3, 2), Event("b", 12, 3), Event("a", 7, 4)]

    def totals(**options: Any) -> Any:
        return (
            Source.from_iterable(rows)
            .with_timestamps(lambda e: e.ts, **options)
            .key_by(lambda e: e.key)
            .window(TumblingWindows(10))
            .sum(lambda e: e.value)
            .to_mat(Sink.collect(), Keep.right)
            .run(max_chunk=1)  # a watermark after each element, as a large file gives after each chunk
        )

    with pytest.raises(LateDataError):
        await totals()
    assert sorted(await totals(bounded=True), key=lambda r: (r.key, r.start)) == [
        WindowResult("a", 0, 10, 6),
        WindowResult("a", 20, 30, 1),
        WindowResult("b", 10, 20, 3),
    ]
    with pytest.raises(ValueError, match=r"bounded=True\) keeps every window open"):
        Source.from_iterable(rows).with_timestamps(lambda e: e.ts, max_out_of_orderness=5, bounded=True)
    with pytest.raises(ValueError, match="idle_timeout do not apply"):
        Source.from_iterable(rows).with_timestamps(lambda e: e.ts, idle_timeout=1.0, bounded=True)
