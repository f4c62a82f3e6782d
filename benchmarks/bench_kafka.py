"""Kafka consume -> map -> produce: streamlib against a plain aiokafka loop, on a real broker.

Starts its own single-node broker (``streamlib.testing.kafka.KafkaBroker``),
fills a 4-partition topic with ``--n`` records (default 1,000,000) of about 100
bytes, then runs each contestant over all of it into a fresh output topic and
consumer group:

* ``raw aiokafka loop`` (the baseline, ratio 1.00): ``getmany`` -> one
  ``producer.send`` per record -> every 0.1 s, once the sends are acknowledged,
  ``consumer.commit()``. At-least-once.
* ``streamlib at-least-once``: ``KafkaSource.committable`` -> ``map`` ->
  ``KafkaSink.committable`` (produce, then commit offsets in batches).
* ``raw aiokafka transactions``: the plain loop with one transactional producer,
  committing a transaction (records + ``send_offsets_to_transaction``) every 0.1 s.
* ``streamlib exactly-once``: ``KafkaApp`` with a stateless ``map`` topology,
  one transaction per partition every ``checkpoint_interval`` (0.1 s).

Each contestant's time runs from its start until every input offset is
committed (its own group's committed offsets reach the end of the input).

Before that (on the fresh broker), end-to-end latency at ``--rate`` records/s
(1,000) for ``--seconds`` (5, the first second left out): a producer stamps each record with its send time,
a consumer of the output (``read_committed`` for exactly-once) records the
time it receives it. p50/p99/max in milliseconds, for the two streamlib
pipelines and the plain loop. Clients fetch with ``fetch_max_wait_ms=5`` here
(the default 500 ms only matters when a fetch waits for data that is invisible
to ``read_committed``).

    python benchmarks/bench_kafka.py [--n 1000000] [--rate 1000] [--seconds 5] [--json]

``--workers 1,2`` measures scaling instead (nothing else runs): a CPU-bound exactly-once app
(``_bench_workers.py``) under ``streamlib run --workers N`` for each N, its records/s in steady
state, the ratio to the first N, and the broker's share of the machine's CPU meanwhile::

    python benchmarks/bench_kafka.py --workers 1,2 [--workers-n 200000] [--spins 400] [--rounds 1]
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import statistics
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Result, parser, report  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402

from streamlib import Flow, Keep  # noqa: E402
from streamlib.kafka import (  # noqa: E402
    CommitterSettings,
    ConsumerSettings,
    KafkaApp,
    KafkaSink,
    KafkaSource,
    ProducerRecord,
    ProducerSettings,
)
from streamlib.testing.kafka import KafkaBroker  # noqa: E402

PARTITIONS = 4
VALUE = b"v" * 90
COMMIT_EVERY = 0.1
LINGER_MS = 5
now_ns = time.perf_counter_ns


def transform(value: bytes) -> bytes:
    """The map step of every contestant."""
    return value[:-1] + b"!"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def fill(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            futures.append(await producer.send(topic, VALUE, key=b"k%06d" % (i % 100_000), partition=i % PARTITIONS))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_committed(admin: AIOKafkaAdminClient, group: str, ends: dict[TopicPartition, int]) -> None:
    """Poll (every 20 ms) until ``group`` has committed every partition up to ``ends``."""
    while True:
        try:
            offsets = await admin.list_consumer_group_offsets(group, partitions=list(ends))
        except Exception:  # noqa: BLE001 - the group may not exist yet
            offsets = {}
        if all(tp in offsets and offsets[tp].offset >= end for tp, end in ends.items()):
            return
        await asyncio.sleep(0.02)


# -- contestants -----------------------------------------------------------------------------


async def raw_loop(bootstrap: str, src: str, dst: str, group: str, n: int, stop: asyncio.Event | None = None,
                   transactional: bool = False, fetch_wait: int = 500, linger_ms: int = LINGER_MS) -> None:
    """The plain aiokafka consume -> map -> produce loop (transactional or not)."""
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed",
                                fetch_max_wait_ms=fetch_wait)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms,
                                transactional_id=f"{group}-tx" if transactional else None)
    await consumer.start()
    await producer.start()
    try:
        seen = 0
        pending: list[Any] = []
        positions: dict[TopicPartition, int] = {}
        last_commit = time.perf_counter()
        in_txn = False
        while (stop is None and seen < n) or (stop is not None and not stop.is_set()):
            batches = await consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                if transactional and not in_txn:
                    await producer.begin_transaction()
                    in_txn = True
                for r in records:
                    pending.append(await producer.send(dst, transform(r.value), key=r.key, partition=r.partition))
                positions[tp] = records[-1].offset + 1
                seen += len(records)
            if positions and (time.perf_counter() - last_commit >= COMMIT_EVERY or (stop is None and seen >= n)):
                if transactional:
                    await producer.send_offsets_to_transaction(dict(positions), group)
                    await producer.commit_transaction()
                    in_txn = False
                    pending.clear()
                else:
                    await asyncio.gather(*pending)
                    pending.clear()
                    await consumer.commit(dict(positions))
                positions.clear()
                last_commit = time.perf_counter()
    finally:
        await producer.stop()
        await consumer.stop()


def at_least_once_graph(bootstrap: str, src: str, dst: str, group: str, fetch_wait: int = 500,
                        linger_ms: int = LINGER_MS) -> Any:
    consumer = ConsumerSettings(bootstrap, group_id=group, properties={"fetch_max_wait_ms": fetch_wait})
    producer = ProducerSettings(bootstrap, linger_ms=linger_ms)
    return (
        KafkaSource.committable(consumer, src)
        .map(lambda r: ProducerRecord(dst, transform(r.value), key=r.key, partition=r.partition,
                                      passthrough=r.committable_offset))
        .to_mat(KafkaSink.committable(producer, CommitterSettings(max_interval=COMMIT_EVERY)), Keep.both)
    )


def exactly_once_app(bootstrap: str, src: str, dst: str, group: str, fetch_wait: int = 500,
                     guarantee: Any = "exactly_once", linger_ms: int = LINGER_MS) -> KafkaApp:
    consumer = ConsumerSettings(bootstrap, properties={"fetch_max_wait_ms": fetch_wait})
    producer = ProducerSettings(bootstrap, linger_ms=linger_ms)

    def topology(p: Any) -> Flow[Any, Any, Any]:
        return Flow.map(lambda r: ProducerRecord(dst, transform(r.value), key=r.key, partition=r.partition))

    return KafkaApp(group, consumer=consumer, producer=producer, topics=src, topology=topology,
                    processing_guarantee=guarantee, checkpoint_interval=COMMIT_EVERY)


async def timed(run: Callable[[], Awaitable[None]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def throughput(broker: KafkaBroker, n: int) -> list[Result]:
    bootstrap = broker.bootstrap_servers
    src = unique("bench-in")
    await broker.acreate_topic(src, PARTITIONS)
    start = time.perf_counter()
    await fill(bootstrap, src, n)
    print(f"filled {src} with {n:,} records in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    ends = {TopicPartition(src, p): n // PARTITIONS + (1 if p < n % PARTITIONS else 0) for p in range(PARTITIONS)}
    rows = []
    try:
        async def contestant(name: str, make: Callable[[str, str], Awaitable[None]]) -> None:
            dst, group = unique("bench-out"), unique("bench-group")
            await broker.acreate_topic(dst, PARTITIONS)
            seconds = await timed(lambda: make(dst, group))
            rows.append(Result(name, n, seconds))
            print(f"{name}: {n / seconds:,.0f} records/s", file=sys.stderr)

        async def raw(dst: str, group: str) -> None:
            await raw_loop(bootstrap, src, dst, group, n)
            await wait_committed(admin, group, ends)

        async def raw_tx(dst: str, group: str) -> None:
            await raw_loop(bootstrap, src, dst, group, n, transactional=True)
            await wait_committed(admin, group, ends)

        async def alo(dst: str, group: str) -> None:
            control, done = at_least_once_graph(bootstrap, src, dst, group).run()
            await wait_committed(admin, group, ends)
            control.stop()
            await done

        async def eos(dst: str, group: str) -> None:
            control = exactly_once_app(bootstrap, src, dst, group).run()
            await wait_committed(admin, group, ends)
            control.stop()
            await control.wait_stopped()

        await contestant("raw aiokafka loop", raw)
        await contestant("streamlib at-least-once", alo)
        await contestant("raw aiokafka transactions", raw_tx)
        await contestant("streamlib exactly-once", eos)
    finally:
        await admin.close()
    return rows


# -- latency ----------------------------------------------------------------------------------


async def measure_latency(bootstrap: str, src: str, dst: str, rate: float, seconds: float,
                          isolation: str) -> list[float]:
    """Offer ``rate`` stamped records/s to ``src`` and time their arrival on ``dst`` (ms)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, fetch_max_wait_ms=5,
                                enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    latencies: list[float] = []
    total = int(rate * seconds)
    warmup = int(rate)
    try:
        parts = [TopicPartition(dst, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)

        async def read() -> None:
            got = 0
            while got < total:
                batches = await consumer.getmany(timeout_ms=50)
                now = now_ns()
                for records in batches.values():
                    for r in records:
                        (sent, index) = struct.unpack(">qq", r.value[:16])
                        got += 1
                        if index >= warmup:
                            latencies.append((now - sent) / 1e6)

        reader = asyncio.ensure_future(read())
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(src, struct.pack(">qq", now_ns(), i) + VALUE[16:], key=b"k%03d" % (i % 100),
                                partition=i % PARTITIONS)
        await asyncio.wait_for(reader, 30)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def latency(broker: KafkaBroker, rate: float, seconds: float) -> list[Result]:
    bootstrap = broker.bootstrap_servers
    rows = []

    async def case(name: str, isolation: str, start: Callable[[str, str, str], Awaitable[Callable[[], Awaitable[None]]]],
                   direct: bool = False) -> None:
        src, dst, group = unique("lat-in"), unique("lat-out"), unique("lat-group")
        await broker.acreate_topic(src, PARTITIONS)
        await broker.acreate_topic(dst, PARTITIONS)
        stop = await start(src, dst, group)
        await asyncio.sleep(1.0)  # group joined, partitions assigned
        try:
            xs = await measure_latency(bootstrap, src, src if direct else dst, rate, seconds, isolation)
        finally:
            await stop()
        rows.append(Result(name, len(xs), len(xs) / rate,
                           {"p50 ms": statistics.median(xs), "p99 ms": pct(xs, 0.99), "max ms": max(xs)}))
        print(f"{name}: p50 {statistics.median(xs):.2f} ms, p99 {pct(xs, 0.99):.2f} ms", file=sys.stderr)

    async def raw(src: str, dst: str, group: str) -> Callable[[], Awaitable[None]]:
        stop = asyncio.Event()
        task = asyncio.ensure_future(raw_loop(bootstrap, src, dst, group, 0, stop=stop, fetch_wait=5,
                                                    linger_ms=0))

        async def halt() -> None:
            stop.set()
            await task
        return halt

    async def alo(src: str, dst: str, group: str) -> Callable[[], Awaitable[None]]:
        control, done = at_least_once_graph(bootstrap, src, dst, group, fetch_wait=5, linger_ms=0).run()

        async def halt() -> None:
            control.stop()
            await done
        return halt

    async def eos(src: str, dst: str, group: str) -> Callable[[], Awaitable[None]]:
        control = exactly_once_app(bootstrap, src, dst, group, fetch_wait=5, linger_ms=0).run()

        async def halt() -> None:
            control.stop()
            await control.wait_stopped()
        return halt

    async def nothing(src: str, dst: str, group: str) -> Callable[[], Awaitable[None]]:
        async def halt() -> None:
            return None
        return halt

    await case("no pipeline: producer -> consumer (floor)", "read_uncommitted", nothing, direct=True)
    await case("raw aiokafka loop", "read_uncommitted", raw)
    await case("streamlib at-least-once", "read_uncommitted", alo)
    await case(f"streamlib exactly-once ({COMMIT_EVERY * 1000:.0f} ms checkpoints)", "read_committed", eos)
    return rows


async def scaling(broker: KafkaBroker, n: int, counts: list[int], spins: int, rounds: int) -> list[Result]:
    """The same CPU-bound app under ``streamlib run --workers N`` for each N (``_bench_workers.py``)."""
    from _bench_workers import run_workers

    bootstrap = broker.bootstrap_servers
    src = unique("bench-workers-in")
    await broker.acreate_topic(src, PARTITIONS)
    await fill(bootstrap, src, n)
    ends = {TopicPartition(src, p): n // PARTITIONS + (1 if p < n % PARTITIONS else 0) for p in range(PARTITIONS)}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    runs: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
    try:
        for _ in range(rounds):
            for w in counts:
                m = await run_workers(bootstrap, broker.pid, src, ends, w, spins, admin, broker.acreate_topic)
                runs[w].append(m)
                print(f"--workers {w}: {m['rate']:,.0f} records/s, app {m['app_share']:.0%} and broker "
                      f"{m['broker_share']:.0%} of the CPU, machine busy {m['machine_busy']:.0%}", file=sys.stderr)
    finally:
        await admin.close()
    rows = []
    for w in counts:
        best = sorted(runs[w], key=lambda m: m["rate"])[len(runs[w]) // 2]  # the median run
        rows.append(Result(f"--workers {w}", n, n / best["rate"],
                           {"wall s (start to all committed)": round(best["wall"], 2),
                            "app CPU share": f"{best['app_share']:.0%}",
                            "records per app CPU s": round(best["rate"] / max(best["app_share"] * (os.cpu_count() or 1),
                                                                              1e-9)),
                            "broker CPU share": f"{best['broker_share']:.0%}",
                            "machine busy": f"{best['machine_busy']:.0%}"}))
    return rows


async def main() -> None:
    p = parser("Kafka consume -> map -> produce throughput and latency, streamlib vs a plain aiokafka loop")
    p.add_argument("--n", type=int, default=1_000_000, help="records for the throughput runs")
    p.add_argument("--rate", type=float, default=1000.0, help="records/s offered in the latency runs")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each latency run")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--workers", default=None,
                   help="comma-separated worker counts (e.g. 1,2): run only the scaling table of streamlib run --workers")
    p.add_argument("--workers-n", type=int, default=200_000, help="records for the scaling runs")
    p.add_argument("--spins", type=int, default=400, help="interpreter loop iterations per record (CPU per record)")
    p.add_argument("--rounds", type=int, default=1, help="scaling runs per worker count, alternating (median)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # Kafka's own defaults for request threads (the test harness runs a smaller broker).
    with KafkaBroker(properties={"num.io.threads": 8, "num.network.threads": 3}) as broker:
        if args.workers:
            counts = [int(w) for w in args.workers.split(",")]
            rows = await scaling(broker, args.workers_n, counts, args.spins, args.rounds)
            report(f"CPU-bound exactly-once app ({args.spins} spins/record), streamlib run --workers N, "
                   f"{args.workers_n:,} records, {PARTITIONS} partitions, {os.cpu_count()} cores", rows,
                   baseline_name=rows[0].name, as_json=args.json)
            return
        # Latency first: after the throughput runs the broker holds gigabytes more and its
        # garbage collector shows up in every contestant's tail.
        if not args.skip_latency:
            rows = await latency(broker, args.rate, args.seconds)
            report(f"end-to-end latency at {args.rate:,.0f} records/s (first second left out)", rows,
                   as_json=args.json)
        if not args.skip_throughput:
            rows = await throughput(broker, args.n)
            report(f"consume -> map -> produce, {args.n:,} records of ~100 B, {PARTITIONS} partitions",
                   rows, baseline_name="raw aiokafka loop", as_json=args.json)


if __name__ == "__main__":
    asyncio.run(main())
