"""The metrics registry, the operations HTTP server, state queries and the endpoint assignor, without Kafka."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streamlib import Keep, MemoryStore, MetricsRegistry, MetricsServer, QueryableStore, Sink, Source, TumblingWindows
from streamlib._metrics import registry as registry_module
from streamlib._metrics.registry import Rate, WindowedStat, sample


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-50, 50), max_size=300), st.integers(1, 64))
def test_process_total_counts_each_operators_input_whatever_the_chunking(xs: list[int], max_chunk: int) -> None:
    registry = MetricsRegistry()

    async def main() -> list[int]:
        graph = Source.from_iterable(xs).map(lambda x: x * 2).filter(lambda x: x > 0).grouped(4).to_mat(
            Sink.collect(), Keep.right
        )
        return await graph.run(metrics=registry, max_chunk=max_chunk)  # type: ignore[no-any-return]

    groups = run(main())
    positive = [x * 2 for x in xs if x * 2 > 0]
    assert sum(len(g) for g in groups) == len(positive)
    totals = {s.label("operator"): s.value for s in registry.values("process-total")}
    assert totals.get("map+filter", 0) == len(xs)  # one fused chain: counted at its input
    assert totals.get("grouped", 0) == len(positive)
    assert totals.get("collect", 0) == len(groups)
    assert registry.value("process-total", operator="grouped") == totals.get("grouped")
    for s in registry.values("process-rate"):
        assert s.value >= 0


def test_a_run_without_a_registry_counts_nothing_and_a_bad_one_is_refused() -> None:
    registry = MetricsRegistry()

    async def main() -> None:
        assert await Source.from_iterable(range(5)).map(str).run_with(Sink.collect()) == list("01234")
        with pytest.raises(TypeError, match="MetricsRegistry"):
            Source.single(1).to_mat(Sink.collect(), Keep.right).run(metrics=object())

    run(main())
    assert registry.samples() == []
    assert registry.value("process-total") is None


def test_late_records_total_counts_what_a_window_sends_to_its_late_output() -> None:
    registry = MetricsRegistry()
    times = [1_000, 5_000, 12_000, 2_000, 25_000, 3_000, 26_000]  # 2_000 and 3_000 arrive after [0, 10s) closed

    async def main() -> list[Any]:
        return await (  # type: ignore[no-any-return]
            Source.from_iterable(times)
            .with_timestamps(lambda t: t)
            .key_by(lambda t: "k")
            .window(TumblingWindows(10_000), late="emit", name="w")
            .count()
            .to_mat(Sink.collect(), Keep.right)
            .run(metrics=registry, max_chunk=1)  # one element per chunk: the watermark moves between them
        )

    out = run(main())
    late = [x for x in out if type(x).__name__ == "LateRecord"]
    assert len(late) == 2
    assert registry.value("late-records-total") == 2


def test_rate_and_windowed_stat_follow_their_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    rate = Rate(clock=lambda: now[0])
    now[0] = 110.0
    assert rate.read(50) == pytest.approx(5.0)
    now[0] = 120.0
    assert rate.read(150) == pytest.approx(7.5)  # since the oldest reading in the window (t=100)
    now[0] = 150.0
    assert rate.read(150) == pytest.approx(0.0)  # readings older than 30 s left the window
    stat = WindowedStat(clock=lambda: now[0])
    assert stat.avg() is None and stat.max() is None
    stat.record(10)
    stat.record(30)
    assert (stat.avg(), stat.max(), stat.min()) == (20, 30, 10)
    now[0] += registry_module.RATE_WINDOW + 1
    assert stat.avg() is None and stat.total_count == 2


def test_collectors_and_prometheus_names() -> None:
    registry = MetricsRegistry()
    registry.add_collector(lambda: [sample("records-lag", 3, app="a", topic="t", partition=0),
                                    sample("records-lag", 4, app="a", topic="t", partition=1),
                                    sample("commit-total", 9, "counter", app="a")])
    assert registry.value("records-lag") == 7
    assert registry.value("records-lag", partition=1) == 4
    assert registry.names() == ["commit-total", "records-lag"]
    from streamlib._metrics.prometheus import generate

    body, content_type = generate(registry)
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["streamlib_commit"].type == "counter"
    assert [s.value for s in families["streamlib_commit"].samples if s.name == "streamlib_commit_total"] == [9]
    assert sorted(s.value for s in families["streamlib_records_lag"].samples) == [3, 4]


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_server_routes_metrics_health_ready_and_state() -> None:
    registry = MetricsRegistry()
    ready = [False]
    calls: list[tuple[str, str, dict[str, str]]] = []

    def state(store: str, key: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        calls.append((store, key, query))
        return 307, {"owner": "other:1"}, {"Location": "http://other:1/state/x"}

    async def main() -> None:
        await Source.from_iterable(range(7)).map(str).to_mat(Sink.ignore(), Keep.right).run(metrics=registry)
        async with MetricsServer(registry, host="127.0.0.1", port=0,
                                 ready=lambda: (ready[0], {"reason": "restoring"} if not ready[0] else {}),
                                 state=state) as server:
            port = server.port
            get = lambda path, method="GET": asyncio.to_thread(_get, port, path, method)  # noqa: E731
            status, headers, body = await get("/metrics")
            assert status == 200
            samples = {(s.name, s.labels.get("operator")): s.value
                       for f in text_string_to_metric_families(body.decode()) for s in f.samples}
            assert samples[("streamlib_process_total", "map")] == 7
            assert (await get("/health"))[0] == 200
            status, _h, body = await get("/ready")
            assert status == 503 and json.loads(body) == {"ready": False, "reason": "restoring"}
            ready[0] = True
            assert (await get("/ready"))[0] == 200
            status, headers, body = await get("/state/counts/a%20b?type=str")
            assert status == 307 and headers["Location"] == "http://other:1/state/x"
            assert calls == [("counts", "a b", {"type": "str"})]
            assert (await get("/state/counts"))[0] == 400
            assert (await get("/nowhere"))[0] == 404
            assert (await get("/metrics", "POST"))[0] == 405

    run(main())


def test_server_without_state_and_a_bad_port() -> None:
    with pytest.raises(ValueError, match="metrics port"):
        MetricsServer(MetricsRegistry(), port=70_000)

    async def main() -> None:
        async with MetricsServer(MetricsRegistry(), host="127.0.0.1") as server:
            status, _h, body = await asyncio.to_thread(_get, server.port, "/state/counts/a")
            assert status == 404 and "no queryable state" in json.loads(body)["error"]

    run(main())


def count(e: str, state: Any) -> tuple[str, int]:
    n = state.get(0) + 1
    state.set(n)
    return e, n


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["ann", "bob", "cy", "dee", "eve"]), max_size=60), st.integers(1, 20))
def test_queryable_store_of_a_plain_run_equals_the_model(words: list[str], every: int) -> None:
    store = MemoryStore()

    async def main() -> None:
        await (Source.from_iterable(words).checkpointed(store, every=every).key_by(lambda w: w)
               .stateful_map(count, name="counts").run_with(Sink.ignore()))

    run(main())
    model = Counter(words)
    counts: QueryableStore[str, int] = QueryableStore(store, "counts")
    assert counts.items() == sorted(model.items())
    assert all(counts.get(w) == model.get(w) for w in ["ann", "bob", "cy", "dee", "eve", "zed"])
    assert counts.range("bob", "dee") == sorted((k, v) for k, v in model.items() if "bob" <= k < "dee")
    assert counts.count() == len(model)


def test_window_fetch_by_key_and_time_range() -> None:
    store = MemoryStore()
    events = [("a", 1_000), ("a", 12_000), ("b", 3_000), ("a", 13_000), ("a", 31_000), ("b", 45_000)]

    async def main() -> None:
        await (Source.from_iterable(events).checkpointed(store, every=2).with_timestamps(lambda e: e[1], 100_000)
               .key_by(lambda e: e[0]).window(TumblingWindows(10_000), store=store, emit="updates", name="per10s")
               .count().run_with(Sink.ignore()))

    run(main())
    windows: QueryableStore[str, int] = QueryableStore(store, "per10s")
    a = windows.fetch("a", 0, 30_000)
    starts = [s for s, _v in a]
    assert starts == sorted(starts) and all(0 <= s <= 30_000 for s in starts)
    model = Counter((k, ts // 10_000 * 10_000) for k, ts in events)
    # open windows are in the store; a closed one may have been forgotten: whatever is there is right
    assert all(v == model[("a", s)] for s, v in a)
    assert windows.fetch("zed", 0, 10**9) == []


def test_endpoint_assignor_keeps_the_inner_assignment_and_publishes_owners() -> None:
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.structs import TopicPartition

    from streamlib.kafka._assignor import EndpointAssignor

    class Cluster:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2, 3}

    seen: dict[str, Any] = {}
    a = EndpointAssignor(RoundRobinPartitionAssignor, "host-a:1", lambda o: seen.__setitem__("a", o))
    b = EndpointAssignor(RoundRobinPartitionAssignor, "host-b:2", lambda o: seen.__setitem__("b", o))
    plain = RoundRobinPartitionAssignor.metadata(["t"])  # a member without an endpoint
    members = {"m-a": a.metadata(["t"]), "m-b": b.metadata(["t"]), "m-c": plain}
    assert a.name == "roundrobin"
    wrapped = a.assign(Cluster(), members)
    inner = RoundRobinPartitionAssignor.assign(Cluster(), {k: plain for k in members})
    assert {m: x.partitions() for m, x in wrapped.items()} == {m: x.partitions() for m, x in inner.items()}
    a.on_assignment(wrapped["m-a"])
    b.on_assignment(wrapped["m-b"])
    expected = {tp: "host-a:1" for tp in wrapped["m-a"].partitions()}
    expected.update({tp: "host-b:2" for tp in wrapped["m-b"].partitions()})
    assert seen["a"] == seen["b"] == expected
    assert TopicPartition("t", wrapped["m-c"].partitions()[0].partition) not in expected
