"""A KafkaApp's operations port on a real broker: Prometheus metrics, /health, /ready, queryable state."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streamlib import Flow
from streamlib.kafka import (
    AppControl,
    ConsumerSettings,
    KafkaApp,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    RecordTimeWatermarks,
    StrSerde,
)
from streamlib.kafka.testing import end_offsets
from streamlib.testing.kafka import KafkaBroker

from ._util import unique

KEYS = [f"user-{i}" for i in range(12)]


def topology(output: str) -> Any:
    def count(record: Any, state: Any) -> ProducerRecord[str, str]:
        n = state.get(0) + 1
        state.set(n)
        return ProducerRecord(output, str(n), key=record.key)

    def build(p: PartitionContext) -> Flow[Any, Any, Any]:
        return Flow().key_by(lambda r: r.key).stateful_map(count, store=p.store, name="counts")

    return build


def make_app(bootstrap: str, app_id: str, src: str, dst: str) -> KafkaApp:
    return KafkaApp(
        app_id,
        consumer=ConsumerSettings(bootstrap, key_serde=StrSerde(), value_serde=StrSerde(),
                                  properties={"heartbeat_interval_ms": 300}),
        producer=ProducerSettings(bootstrap, key_serde=StrSerde(), value_serde=StrSerde()),
        topics=src, topology=topology(dst), checkpoint_interval=0.1,
        watermarks=RecordTimeWatermarks(500), metrics_port=0, advertised_host="127.0.0.1",
    )


async def produce(bootstrap: str, topic: str, keys: list[str]) -> None:
    """Keyed records through Kafka's default partitioner (the one /state routes by)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, b"x", key=k.encode()) for k in keys]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET with a real HTTP client, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


async def aget(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(get, port, path)


async def until(predicate: Any, what: str, timeout: float = 60, state: Any = None) -> None:
    """Poll ``predicate`` until true; on timeout, the failure shows ``state()`` (what was seen last)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out waiting for {what}" + ("" if state is None else f"; last seen: {state()}"))
        await asyncio.sleep(0.05)


async def drained(control: AppControl, ends: dict[Any, int]) -> None:
    async def done() -> bool:
        if control.is_stopped:
            await control.wait_stopped()
        return all(control.metrics.committed.get(tp, -1) >= end for tp, end in ends.items())

    await until(done, "the input to be committed")


async def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """/metrics parsed by prometheus_client's own parser: sample name -> [(labels, value)]."""
    status, headers, body = await aget(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def state_over_http(port: int, keys: list[str]) -> dict[str, int]:
    found = {}
    for k in keys:
        status, _h, body = await aget(port, f"/state/counts/{k}")
        if status == 200:
            found[k] = json.loads(body)["value"]
        else:
            assert status == 404, (status, body)
    return found


async def test_metrics_health_ready_and_state_during_a_run(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    src, dst, app_id = unique("msrc"), unique("mdst"), unique("metrics-app")
    await kafka_broker.acreate_topic(src, 3)
    await kafka_broker.acreate_topic(dst, 3)
    first = [KEYS[i % len(KEYS)] for i in range(600)]
    second = [KEYS[(i * 7) % 5] for i in range(400)]
    produced_at = time.time() * 1000
    await produce(bootstrap, src, first)
    app = make_app(bootstrap, app_id, src, dst)
    control = app.run()
    try:
        await until(lambda: asyncio.sleep(0, control.metrics_port is not None), "the port")
        port = control.metrics_port
        assert port is not None
        status, _h, body = await aget(port, "/health")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        status, _h, body = await aget(port, "/ready")
        assert status in (200, 503)
        if status == 503:
            assert json.loads(body)["ready"] is False

        async def ready() -> bool:
            return (await aget(port, "/ready"))[0] == 200

        await until(ready, "/ready")
        await drained(control, await end_offsets(bootstrap, src))
        model = Counter(first)
        assert dict(app.store("counts").items()) == model  # during the run, between the batches
        assert await state_over_http(port, KEYS) == model

        await produce(bootstrap, src, second)
        await drained(control, await end_offsets(bootstrap, src))
        model.update(second)
        counts = app.store("counts")
        assert {k: counts.get(k) for k in KEYS} == model
        assert counts.range("user-1", "user-2") == sorted((k, v) for k, v in model.items() if "user-1" <= k < "user-2")
        assert await state_over_http(port, KEYS) == model
        status, _h, body = await aget(port, "/state/nosuch/user-1")
        assert status == 404 and "counts" in json.loads(body)["error"]

        m = await scrape(port)
        now = time.time() * 1000
        total = len(first) + len(second)

        def one(name: str, **labels: str) -> float:
            values = [v for lb, v in m[name] if all(lb.get(k) == v2 for k, v2 in labels.items())]
            assert values, (name, labels, m.get(name))
            return sum(values)

        assert one("streamlib_process_total", operator="counts") == total  # the stateful_map's name=
        assert all(v >= 0 for _lb, v in m["streamlib_process_rate"])
        assert one("streamlib_records_processed_total") == total
        assert one("streamlib_records_consumed_total") >= total
        assert one("streamlib_commit_total") >= 2
        assert one("streamlib_commit_rate") > 0
        assert 0 < one("streamlib_commit_latency_avg") <= one("streamlib_commit_latency_max") < 60_000
        lags = m["streamlib_records_lag"]
        assert len(lags) == 3 and all(v == 0 for _lb, v in lags)  # caught up
        e2e_min, e2e_max = one("streamlib_record_e2e_latency_min"), one("streamlib_record_e2e_latency_max")
        assert 0 <= e2e_min <= one("streamlib_record_e2e_latency_avg") <= e2e_max <= now - produced_at
        wm_lags = m["streamlib_watermark_lag"]
        assert len(wm_lags) == 3 and all(500 <= v <= now - produced_at + 500 for _lb, v in wm_lags)
        for name in ("dropped_records_total", "dead_lettered_records_total", "recoveries_total"):
            assert one(f"streamlib_{name}") == 0
        assert one("streamlib_assigned_partitions") == 3
        assert all(v == 0 for _lb, v in m["streamlib_restore_remaining_records"])
        assert len(m["streamlib_restore_remaining_records"]) == 3
        assert one("streamlib_state_store_rows", store="counts") == len(model)
        assert one("streamlib_state_store_bytes", store="counts") > 0
        assert one("streamlib_changelog_records_total") >= len(model)
        assert one("streamlib_restored_records_total") == 0
        assert control.registry.value("records-processed-total") == total
    finally:
        control.stop()
        await control.wait_stopped()
    assert math.isfinite(control.metrics.commit_latency.max() or 0.0)


async def test_a_key_owned_by_another_instance_is_answered_with_its_address(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    src, dst, app_id = unique("qsrc"), unique("qdst"), unique("query-app")
    await kafka_broker.acreate_topic(src, 4)
    await kafka_broker.acreate_topic(dst, 4)
    a = make_app(bootstrap, app_id, src, dst)
    b = make_app(bootstrap, app_id, src, dst)
    ca = a.run()
    cb = b.run()
    try:
        async def split() -> bool:
            for c in (ca, cb):
                if c.is_stopped:
                    await c.wait_stopped()
            sa, sb = ca.metrics.assigned, cb.metrics.assigned
            return bool(sa) and bool(sb) and not (sa & sb) and len(sa | sb) == 4 and ca.is_ready and cb.is_ready

        def seen() -> str:
            return "; ".join(
                f"{name}: assigned {sorted(f'{tp.topic}-{tp.partition}' for tp in c.metrics.assigned)}, "
                f"ready {c.operations.ready_details() if c.operations else None}"
                for name, c in (("a", ca), ("b", cb))
            )

        await until(split, "the two instances to share the partitions", state=seen)
        keys = [KEYS[i % len(KEYS)] for i in range(500)]
        await produce(bootstrap, src, keys)
        ends = await end_offsets(bootstrap, src)
        await drained(ca, {tp: e for tp, e in ends.items() if tp in ca.metrics.assigned})
        await drained(cb, {tp: e for tp, e in ends.items() if tp in cb.metrics.assigned})
        model = Counter(keys)
        assert ca.metrics_port is not None and cb.metrics_port is not None
        ports = {f"127.0.0.1:{ca.metrics_port}": ca.metrics_port, f"127.0.0.1:{cb.metrics_port}": cb.metrics_port}
        # Each instance's API reads its own partitions; together they hold the whole model.
        local_a, local_b = dict(ca.store("counts").items()), dict(cb.store("counts").items())
        assert not set(local_a) & set(local_b) and {**local_a, **local_b} == model
        redirected = 0
        for asked, port in ports.items():
            for k in KEYS:
                status, headers, body = await aget(port, f"/state/counts/{k}")
                answer = json.loads(body)
                local = local_a if port == ca.metrics_port else local_b
                if k in local:
                    assert status == 200 and answer["value"] == model[k] and answer["owner"] == asked
                    continue
                assert status == 307, (status, answer)
                owner = answer["owner"]
                assert owner in ports and owner != asked
                assert headers["Location"] == f"http://{owner}/state/counts/{k}"
                redirected += 1
                # Following the address gets the value from the owner (urllib follows the redirect).
                with await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/state/counts/{k}") as r:
                    assert json.loads(r.read())["value"] == model[k]
        assert redirected == len(KEYS)  # every key is answered by one instance and redirected by the other
    finally:
        ca.stop()
        cb.stop()
        await asyncio.gather(ca.wait_stopped(), cb.wait_stopped())
