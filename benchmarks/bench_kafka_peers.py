"""Kafka end to end: streamlib against Quix Streams, Faust and the raw clients, on one real broker.

Starts its own single-node broker (``streamlib.testing.kafka.KafkaBroker``),
fills one 4-partition topic with ``--n`` records (default 1,000,000) of about
100 bytes (10,000 keys, record times spread evenly over 10 minutes of event
time, each key always in the same partition), then runs each contestant over
all of it, each into a fresh output topic and consumer group:

* **K1** consume -> map (``value[:-1] + b"!"``) -> produce, at-least-once.
* **K2** the same, exactly-once (transactions, ``read_committed``).
* **K3** count per key in 1-minute tumbling windows of record time, state in
  RocksDB with a changelog topic, exactly-once; each window's final count is
  produced once the window closes (a last record per partition, 2 minutes
  after the others, closes the last windows).

Contestants, each in its own process (``--only`` picks some):

* ``confluent-kafka loop`` (K1, K2; the client ceiling): ``consume(10000)`` ->
  ``produce`` per record -> every 0.1 s ``flush`` + ``commit`` (K2: one
  transaction per 0.1 s with ``send_offsets_to_transaction``). librdkafka.
* ``aiokafka loop`` (K1, K2): the plain loop of ``bench_kafka.py`` (``send`` per record).
* ``aiokafka loop, send_batch`` (K1, K2): the same loop producing each fetched
  partition batch through aiokafka's ``create_batch``/``send_batch`` (what a
  sink that gets whole chunks could do): aiokafka's own ceiling.
* ``streamlib``: K1 the committable source -> ``map`` -> committable sink; K2
  ``KafkaApp`` with a ``map`` topology; K3 ``KafkaApp`` with
  ``key_by(...).window(TumblingWindows(60 s), store=p.store).count()`` and the
  state in RocksDB (``state_dir``). Checkpoints (and commits) every 0.1 s, the
  default; ``streamlib, 1 s checkpoints`` (K2, K3) is the same with 1 s.
* ``Quix Streams``: ``Application`` + ``StreamingDataFrame``: ``apply`` ->
  ``to_topic``; K3 ``tumbling_window(60 s).count().final(closing_strategy="partition")`` (RocksDB, changelog
  topics on). Its defaults otherwise (commit every 5 s).
* ``Faust``: an agent per record ``await out.send(...)``; K3 a windowed
  ``Table`` (``tumbling(60 s).relative_to_stream()``) in RocksDB (rocksdict)
  with ``table[key] += 1``. Faust closes windows by wall-clock time (its
  ``expires`` is compared with ``time.time()``), so it cannot produce a
  window's final count at event-time close: its K3 output is the table's
  changelog (one record per update, which Faust writes anyway), and the
  check reads that. Its defaults otherwise (commit every 2.8 s).

The peers are installed, with pinned versions, into a virtualenv only this
script uses (``--venv``, default ``build/bench-peers/venv``, created on first
run); the streamlib and aiokafka contestants run with the interpreter running
this script. Clients on aiokafka produce with ``linger_ms=5``, librdkafka's
default.

Each contestant's time runs from the moment its first record reaches user code
(so start-up and group join are left out; they are shown as ``startup s``)
until its group's committed offsets cover the whole input. Each one stops as
soon as it has seen every record (each framework's own stop or commit), so no
contestant waits for a commit interval at the end. Then its output is read
(``read_committed``) and checked: K1 every key's count at least what was
consumed, K2 exactly, K3 every (key, window) count equal to the expected one,
no window twice. A contestant whose check fails is marked in the table.

``--rounds N`` runs every contestant N times per workload, one round after the
other (so load from elsewhere hits them alike); the table shows each one's
median run and the rate of every round.

``--profile`` runs every contestant under cProfile and prints, per contestant,
its own time per package (µs per record) and its costliest functions; the
rates are then lower (Python code more so than C).

    python benchmarks/bench_kafka_peers.py [--n 1000000] [--workloads K1,K2,K3] [--only streamlib,quix]
                                           [--rounds 3] [--profile] [--json]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

PEERS = ("quixstreams==3.28.1", "confluent-kafka==2.12.2", "faust-streaming[rocksdict]==0.15.3")
DEFAULT_VENV = os.path.join(ROOT, "build", "bench-peers", "venv")
PARTITIONS = 4
KEYS = 10_000
SPAN_MS = 600_000
WINDOW_MS = 60_000
VALUE = b"v" * 90
SENTINEL_KEY = b"~end"
COMMIT_EVERY = 0.1
LINGER_MS = 5


# -- the data, and what each workload must produce ---------------------------------------------


def key_of(i: int) -> bytes:
    return b"k%05d" % (i % KEYS)


def ts_of(i: int, n: int, base: int) -> int:
    return base + i * SPAN_MS // n


def partition_of(i: int) -> int:
    return i % PARTITIONS  # KEYS is a multiple of PARTITIONS: a key stays in one partition


def transform(value: bytes) -> bytes:
    """The map step of K1 and K2."""
    return value[:-1] + b"!"


def expected_keys(n: int) -> Counter[bytes]:
    return Counter(key_of(i) for i in range(n))


def expected_windows(n: int, base: int) -> dict[tuple[bytes, int], int]:
    counts: Counter[tuple[bytes, int]] = Counter()
    for i in range(n):
        ts = ts_of(i, n, base)
        counts[(key_of(i), ts - ts % WINDOW_MS)] += 1
    return dict(counts)


def input_size(n: int) -> int:
    """Records a contestant consumes: ``n`` and a closing record per partition (for K3's last windows)."""
    return n + PARTITIONS


# -- workers: each runs in a subprocess, prints "FIRST <time>" when user code sees a record ----


class Tally:
    """Counts records in user code; announces the first and calls ``done`` at ``target``."""

    def __init__(self, target: int, done: Callable[[], Any]) -> None:
        self.seen = 0
        self.target = target
        self.done = done

    def __call__(self, k: int = 1) -> None:
        if self.seen == 0:
            print(f"FIRST {time.time()}", flush=True)
        self.seen += k
        if self.seen >= self.target and self.seen - k < self.target:
            self.done()


def worker_fill(a: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    n, base = a["n"], a["base"]
    p = Producer({"bootstrap.servers": a["bootstrap"], "linger.ms": 20, "acks": "all",
                  "queue.buffering.max.messages": 1_000_000})
    for i in range(n):
        while True:
            try:
                p.produce(a["src"], VALUE, key_of(i), partition=partition_of(i), timestamp=ts_of(i, n, base))
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    last = ts_of(n - 1, n, base) + 2 * WINDOW_MS
    for part in range(PARTITIONS):
        p.produce(a["src"], VALUE, SENTINEL_KEY, partition=part, timestamp=last)
    assert p.flush(60) == 0


def worker_verify(a: dict[str, Any]) -> None:
    """Read ``a["topic"]`` read_committed to its end; print one JSON line with the check."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": a["bootstrap"], "group.id": f"verify-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    meta = c.list_topics(a["topic"], timeout=30).topics[a["topic"]]
    parts = sorted(meta.partitions)
    c.assign([TopicPartition(a["topic"], p, 0) for p in parts])
    left = set(parts)
    keys: Counter[bytes] = Counter()
    windows: dict[tuple[bytes, int], int] = {}
    repeated = bad = total = 0
    mode = a["mode"]
    while left:
        for m in c.consume(10_000, 1.0):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    left.discard(m.partition())
                    continue
                raise RuntimeError(str(m.error()))
            total += 1
            key, value = m.key(), m.value()
            if mode == "map":
                keys[key] += key != SENTINEL_KEY
                bad += not value.endswith(b"!")
            elif mode == "windows":
                if key == SENTINEL_KEY:
                    continue
                start, count = value.split(b":")
                w = (key, int(start))
                repeated += w in windows
                windows[w] = int(count)
            else:  # a Faust windowed table's changelog: json [key, [start s, end s]] -> json count
                k, (start, _end) = json.loads(key)
                if k.encode() == SENTINEL_KEY:
                    continue
                windows[(k.encode(), round(start * 1000))] = json.loads(value)
    c.close()
    n = a["n"]
    problems = []
    if mode == "map":
        want = expected_keys(n)
        short = sum(1 for k, v in want.items() if keys[k] < v)
        extra = set(keys) - set(want) - {SENTINEL_KEY}
        if short or extra or bad:
            problems.append(f"{short} keys short, {len(extra)} unknown keys, {bad} values not mapped")
        if a["exact"] and total != input_size(n):
            problems.append(f"{total} records, expected exactly {input_size(n)}")
    else:
        want_w = expected_windows(n, a["base"])
        wrong = sum(1 for w, v in want_w.items() if windows.get(w) != v)
        extra_w = len(set(windows) - set(want_w))
        if wrong or extra_w:
            problems.append(f"{wrong} of {len(want_w)} windows wrong or missing, {extra_w} unexpected")
        if repeated:
            problems.append(f"{repeated} windows emitted twice")
    print(json.dumps({"records": total, "problems": problems}), flush=True)


def worker_confluent(a: dict[str, Any]) -> None:
    from confluent_kafka import Consumer, Producer

    eos = a["workload"] == "K2"
    target = input_size(a["n"])
    c = Consumer({"bootstrap.servers": a["bootstrap"], "group.id": a["group"], "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    conf = {"bootstrap.servers": a["bootstrap"], "acks": "all", "linger.ms": LINGER_MS}
    if eos:
        conf["transactional.id"] = f"{a['group']}-tx"
    p = Producer(conf)
    if eos:
        p.init_transactions()
    c.subscribe([a["src"]])
    stop = []
    tally = Tally(target, lambda: stop.append(True))
    dst = a["dst"]
    last = time.perf_counter()
    in_txn = dirty = False
    while True:
        msgs = c.consume(10_000, 0.1)
        if msgs and eos and not in_txn:
            p.begin_transaction()
            in_txn = True
        for m in msgs:
            if m.error():
                raise RuntimeError(str(m.error()))
            tally()
            while True:
                try:
                    p.produce(dst, transform(m.value()), m.key(), partition=m.partition())
                    break
                except BufferError:
                    p.poll(0.01)
        p.poll(0)
        dirty = dirty or bool(msgs)
        if dirty and (stop or time.perf_counter() - last >= COMMIT_EVERY):
            if eos:
                p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata())
                p.commit_transaction()
                in_txn = False
            else:
                p.flush()
                c.commit(asynchronous=False)
            dirty = False
            last = time.perf_counter()
        if stop and not dirty:
            break
    c.close()


def worker_aiokafka(a: dict[str, Any]) -> None:
    import bench_kafka

    target = input_size(a["n"])
    tally = Tally(target, lambda: None)

    def counted(value: bytes) -> bytes:
        tally()
        return transform(value)

    bench_kafka.transform = counted  # type: ignore[assignment]
    asyncio.run(bench_kafka.raw_loop(a["bootstrap"], a["src"], a["dst"], a["group"], target,
                                     transactional=a["workload"] == "K2"))


def worker_aiokafka_batch(a: dict[str, Any]) -> None:
    """The plain aiokafka loop, producing each fetched partition batch with ``create_batch``/``send_batch``."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    eos = a["workload"] == "K2"
    tally = Tally(input_size(a["n"]), lambda: None)
    dst = a["dst"]

    async def main() -> None:
        consumer = AIOKafkaConsumer(a["src"], bootstrap_servers=a["bootstrap"], group_id=a["group"],
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    isolation_level="read_committed")
        producer = AIOKafkaProducer(bootstrap_servers=a["bootstrap"], acks="all", linger_ms=LINGER_MS,
                                    transactional_id=f"{a['group']}-tx" if eos else None)
        await consumer.start()
        await producer.start()
        try:
            pending: list[Any] = []
            positions: dict[Any, int] = {}
            last = time.perf_counter()
            in_txn = False
            while tally.seen < tally.target or positions:
                batches = await consumer.getmany(timeout_ms=100)
                for tp, records in batches.items():
                    if eos and not in_txn:
                        await producer.begin_transaction()
                        in_txn = True
                    batch = producer.create_batch()
                    for r in records:
                        tally()
                        value = transform(r.value)
                        if batch.append(key=r.key, value=value, timestamp=None) is None:
                            pending.append(await producer.send_batch(batch, dst, partition=tp.partition))
                            batch = producer.create_batch()
                            batch.append(key=r.key, value=value, timestamp=None)
                    pending.append(await producer.send_batch(batch, dst, partition=tp.partition))
                    positions[tp] = records[-1].offset + 1
                if positions and (time.perf_counter() - last >= COMMIT_EVERY or tally.seen >= tally.target):
                    if eos:
                        await producer.send_offsets_to_transaction(dict(positions), a["group"])
                        await producer.commit_transaction()
                        in_txn = False
                    else:
                        await asyncio.gather(*pending)
                        await consumer.commit(dict(positions))
                    pending.clear()
                    positions.clear()
                    last = time.perf_counter()
        finally:
            await producer.stop()
            await consumer.stop()

    asyncio.run(main())


def worker_streamlib(a: dict[str, Any]) -> None:
    from streamlib import Flow, Keep, TumblingWindows
    from streamlib.kafka import (CommitterSettings, ConsumerSettings, KafkaApp, KafkaSink, KafkaSource,
                                 ProducerRecord, ProducerSettings, RecordTimeWatermarks)

    bootstrap, src, dst, group = a["bootstrap"], a["src"], a["dst"], a["group"]
    workload = a["workload"]
    interval = a.get("interval", COMMIT_EVERY)

    async def main() -> None:
        stop: list[Callable[[], None]] = []
        tally = Tally(input_size(a["n"]), lambda: stop[0]())

        def seen(r: Any) -> Any:
            tally()
            return r

        producer = ProducerSettings(bootstrap, linger_ms=LINGER_MS)
        if workload == "K1":
            graph = (
                KafkaSource.committable(ConsumerSettings(bootstrap, group_id=group), src)
                .map(lambda r: ProducerRecord(dst, transform(seen(r).value), key=r.key, partition=r.partition,
                                              passthrough=r.committable_offset))
                .to_mat(KafkaSink.committable(producer, CommitterSettings(max_interval=interval)), Keep.both)
            )
            control, done = graph.run()
            stop.append(control.stop)
            await done
            return

        def topology(p: Any) -> Flow[Any, Any, Any]:
            if workload == "K2":
                return Flow.map(lambda r: ProducerRecord(dst, transform(seen(r).value), key=r.key,
                                                         partition=r.partition))
            return (
                Flow.map(seen)
                .key_by(lambda r: r.key)
                .window(TumblingWindows(WINDOW_MS), store=p.store, timestamp=lambda r: r.timestamp)
                .count()
                .map(lambda w: ProducerRecord(dst, b"%d:%d" % (w.start, w.value), key=w.key))
            )

        app = KafkaApp(group, consumer=ConsumerSettings(bootstrap), producer=producer, topics=src,
                       topology=topology, processing_guarantee="exactly_once", checkpoint_interval=interval,
                       state_dir=a["state_dir"] if workload == "K3" else None,
                       watermarks=RecordTimeWatermarks(0) if workload == "K3" else None)
        app_control = app.run()
        stop.append(app_control.stop)
        await app_control.wait_stopped()

    asyncio.run(main())


def worker_quix(a: dict[str, Any]) -> None:
    import logging

    from quixstreams import Application

    workload = a["workload"]
    stop: list[Callable[[], None]] = []
    tally = Tally(input_size(a["n"]), lambda: stop[0]())
    app = Application(
        broker_address=a["bootstrap"],
        consumer_group=a["group"],
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once" if workload in ("K2", "K3") else "at-least-once",
        state_dir=a["state_dir"],
        loglevel=logging.WARNING,
        on_message_processed=lambda topic, partition, offset: tally(),  # counted once fully processed
    )
    stop.append(app.stop)
    src = app.topic(a["src"], key_deserializer="bytes", value_deserializer="bytes")
    dst = app.topic(a["dst"], key_serializer="bytes", value_serializer="bytes")
    sdf = app.dataframe(src)
    if workload == "K3":
        sdf = sdf.tumbling_window(duration_ms=WINDOW_MS).count().final(closing_strategy="partition")
        sdf = sdf.apply(lambda w: b"%d:%d" % (w["start"], w["value"]))
    else:
        sdf = sdf.apply(transform)
    sdf.to_topic(dst)
    app.run()


def worker_faust(a: dict[str, Any]) -> None:
    import logging
    from datetime import timedelta

    import faust

    workload = a["workload"]
    app = faust.App(
        a["group"],
        broker=f"kafka://{a['bootstrap']}",
        processing_guarantee="exactly_once" if workload in ("K2", "K3") else "at_least_once",
        store="rocksdb://" if workload == "K3" else "memory://",
        datadir=a["state_dir"],
        web_enabled=False,
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=LINGER_MS,
    )
    src = app.topic(a["src"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    dst = app.topic(a["dst"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def finish() -> None:
        await asyncio.sleep(0.05)  # the last event is acknowledged when the agent asks for the next one
        await app.consumer.commit()
        print("DONE", flush=True)

    tally = Tally(input_size(a["n"]), lambda: asyncio.ensure_future(finish()))

    if workload == "K3":
        table = app.Table("counts", default=int, partitions=PARTITIONS).tumbling(
            timedelta(milliseconds=WINDOW_MS), expires=timedelta(hours=2)).relative_to_stream()

        @app.agent(src)
        async def count(stream: Any) -> None:
            async for key, _value in stream.items():
                tally()
                table[key.decode()] += 1
    else:
        @app.agent(src)
        async def process(stream: Any) -> None:
            async for key, value in stream.items():
                tally()
                await dst.send(key=key, value=transform(value))

    worker = faust.Worker(app, loglevel=logging.WARNING, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


WORKERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "fill": worker_fill,
    "verify": worker_verify,
    "confluent": worker_confluent,
    "aiokafka": worker_aiokafka,
    "aiokafka-batch": worker_aiokafka_batch,
    "streamlib": worker_streamlib,
    "quix": worker_quix,
    "faust": worker_faust,
}


# -- the driver --------------------------------------------------------------------------------


def ensure_venv(path: str) -> str:
    """The peers' virtualenv at ``path`` (created, with the pinned versions, when missing)."""
    python = os.path.join(path, "bin", "python")
    stamp = os.path.join(path, ".bench-peers")
    wanted = "\n".join(PEERS)
    if os.path.exists(stamp) and open(stamp).read() == wanted:
        return python
    print(f"creating {path} with {', '.join(PEERS)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", path], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS], check=True)
    with open(stamp, "w") as f:
        f.write(wanted)
    return python


# name, interpreter ("peers" or "self"), worker, workloads, extra worker arguments
CONTESTANTS: list[tuple[str, str, str, tuple[str, ...], dict[str, Any]]] = [
    ("confluent-kafka loop", "peers", "confluent", ("K1", "K2"), {}),
    ("aiokafka loop", "self", "aiokafka", ("K1", "K2"), {}),
    ("aiokafka loop, send_batch", "self", "aiokafka-batch", ("K1", "K2"), {}),
    ("streamlib", "self", "streamlib", ("K1", "K2", "K3"), {}),
    ("streamlib, 1 s checkpoints", "self", "streamlib", ("K2", "K3"), {"interval": 1.0}),
    ("Quix Streams", "peers", "quix", ("K1", "K2", "K3"), {}),
    ("Faust", "peers", "faust", ("K1", "K2", "K3"), {}),
]
WORKLOADS = {
    "K1": "K1 consume -> map -> produce, at-least-once",
    "K2": "K2 consume -> map -> produce, exactly-once",
    "K3": "K3 count per key, 1-minute tumbling windows, RocksDB + changelog, exactly-once",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def run_worker(python: str, worker: str, args: dict[str, Any], log: str,
                     profile: str | None = None) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=HERE)
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    with open(log, "ab") as err:
        return await asyncio.create_subprocess_exec(
            python, *prof, os.path.abspath(__file__), "--worker", worker, json.dumps(args),
            stdout=asyncio.subprocess.PIPE, stderr=err, env=env, cwd=ROOT)


async def worker_output(python: str, worker: str, args: dict[str, Any], log: str) -> str:
    proc = await run_worker(python, worker, args, log)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{worker} worker failed ({proc.returncode}); see {log}")
    return out.decode()


async def committed_all(admin: Any, group: str, ends: dict[Any, int]) -> bool:
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=list(ends))
    except Exception:  # noqa: BLE001 - the group may not exist yet
        return False
    return all(tp in offsets and offsets[tp].offset >= end for tp, end in ends.items())


async def stop_process(proc: asyncio.subprocess.Process, grace: float) -> None:
    try:
        await asyncio.wait_for(proc.wait(), grace)
        return
    except asyncio.TimeoutError:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is None:
            proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                pass


async def contestant(broker: Any, admin: Any, python: str, name: str, worker: str, workload: str,
                     common: dict[str, Any], peers_python: str, workdir: str, timeout: float,
                     profile: bool = False) -> Any:
    from _common import Result
    from aiokafka.structs import TopicPartition

    dst, group = unique("peers-out"), unique("peers-group")
    await broker.acreate_topic(dst, PARTITIONS)
    state_dir = os.path.join(workdir, group)
    os.makedirs(state_dir, exist_ok=True)
    src = common["src"]
    n = common["n"]
    args = dict(common, src=src, dst=dst, group=group, workload=workload, state_dir=state_dir)
    per = input_size(n)
    ends = {TopicPartition(src, p): per // PARTITIONS + (1 if p < per % PARTITIONS else 0) for p in range(PARTITIONS)}
    log = os.path.join(workdir, f"{worker}-{workload}.log")
    launched = time.time()
    prof = os.path.join(workdir, f"{worker}-{workload}.prof") if profile else None
    proc = await run_worker(python, worker, args, log, prof)
    first: list[float] = []

    async def read_stdout() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            if b"FIRST " in line:  # Faust writes terminal escapes before it
                first.append(float(line.split(b"FIRST ")[1].split()[0]))

    reader = asyncio.ensure_future(read_stdout())
    deadline = time.monotonic() + timeout
    ended = None
    while time.monotonic() < deadline:
        if await committed_all(admin, group, ends):
            ended = time.time()
            break
        if proc.returncode is not None and not await committed_all(admin, group, ends):
            break
        await asyncio.sleep(0.02)
    await stop_process(proc, 5)
    await reader
    if ended is None or not first:
        why = "timed out" if ended is None and proc.returncode is None else f"exited with {proc.returncode}"
        print(f"{name} {workload}: {why} before committing everything; see {log}", file=sys.stderr)
        return Result(name, 0, None, {"skipped": f"did not finish ({why}); see {log}"})
    mode = "map" if workload != "K3" else ("faust-changelog" if worker == "faust" else "windows")
    topic = f"{group}-counts-changelog" if mode == "faust-changelog" else dst
    check = json.loads(await worker_output(peers_python, "verify", dict(common, topic=topic, mode=mode,
                                                                        exact=workload != "K1"), log))
    seconds = ended - first[0]
    verdict = "ok" if not check["problems"] else "FAIL: " + "; ".join(check["problems"])
    print(f"{name} {workload}: {n / seconds:,.0f} records/s, startup {first[0] - launched:.1f} s, "
          f"{check['records']:,} records out, {verdict}", file=sys.stderr)
    shutil.rmtree(state_dir, ignore_errors=True)
    if prof:
        print(profile_summary(name, workload, prof, n))
    return Result(name, n, seconds, {"startup s": first[0] - launched, "records out": f"{check['records']:,}",
                                     "check": verdict})


def median_row(results: list[Any]) -> Any:
    """One contestant's row over its rounds: the median time, every round's rate, any failed check."""
    from _common import Result

    done = sorted((r for r in results if r.seconds is not None), key=lambda r: r.seconds)
    if not done:
        return results[0]
    row = done[(len(done) - 1) // 2]
    if len(results) == 1:
        return row
    failed = [r.extra["check"] for r in done if r.extra["check"] != "ok"]
    extra = dict(row.extra, check=failed[0] if failed else "ok")
    extra["k/s per round"] = " / ".join(f"{r.rate / 1e3:.0f}" if r.rate else "-" for r in results)
    return Result(row.name, row.events, row.seconds, extra)


CATEGORIES = [  # (category, substrings of a profile entry's file or name), the first match wins
    ("aiokafka (client)", ("aiokafka",)),
    ("librdkafka client (confluent_kafka)", ("confluent_kafka", "cimpl")),
    ("streamlib", ("streamlib",)),
    ("quixstreams", ("quixstreams",)),
    ("faust / mode", ("faust", "mode/")),
    ("asyncio event loop", ("asyncio", "selectors", "select.epoll", "_contextvars", "socket")),
    ("benchmark code", ("bench_kafka",)),
]


def profile_summary(name: str, workload: str, path: str, n: int) -> str:
    """Own time (cProfile tottime) per package, in µs per record, and the 12 costliest functions."""
    import pstats

    stats = pstats.Stats(path)
    per: Counter[str] = Counter()
    rows = []
    for (filename, line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{func}"
        category = next((c for c, keys in CATEGORIES if any(k in where for k in keys)),
                        "other (builtins, msgspec, ...)")
        per[category] += tt
        rows.append((tt, f"{os.path.basename(filename)}:{line}({func})" if filename != "~" else func, category))
    total = sum(per.values())
    lines = [f"\nprofile of {name} on {workload} (cProfile, own time; {total:.1f} s in all, "
             f"{total / n * 1e6:.1f} µs per record)"]
    for category, tt in per.most_common():
        lines.append(f"  {category:40s} {tt:7.2f} s  {tt / total:6.1%}  {tt / n * 1e6:6.2f} µs/record")
    lines.append("  costliest functions:")
    for tt, where, category in sorted(rows, reverse=True)[:12]:
        lines.append(f"    {tt:7.2f} s  {where}  [{category}]")
    return "\n".join(lines)


async def main() -> None:
    from _common import parser, report
    from aiokafka.admin import AIOKafkaAdminClient

    from streamlib.testing.kafka import KafkaBroker

    p = parser("Kafka end to end: streamlib vs Quix Streams, Faust and the raw clients")
    p.add_argument("--n", type=int, default=1_000_000, help="input records")
    p.add_argument("--workloads", default="K1,K2,K3")
    p.add_argument("--only", default="",
                   help="comma-separated worker names: confluent,aiokafka,aiokafka-batch,streamlib,quix,faust")
    p.add_argument("--venv", default=DEFAULT_VENV, help="the peers' virtualenv (created when missing)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a contestant may take")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every contestant this many times per workload, interleaved; the table shows the median")
    p.add_argument("--profile", action="store_true",
                   help="run each contestant under cProfile and print where its time goes (rates are then lower)")
    args = p.parse_args()
    peers_python = ensure_venv(args.venv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    workdir = os.path.join(ROOT, "build", "bench-peers", "run")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    n = args.n
    now_ms = int(time.time() * 1000)
    base = now_ms - now_ms % WINDOW_MS - 20 * WINDOW_MS  # recent (within retention), minute-aligned
    with KafkaBroker(properties={"num.io.threads": 8, "num.network.threads": 3}) as broker:
        bootstrap = broker.bootstrap_servers
        src = unique("peers-in")
        await broker.acreate_topic(src, PARTITIONS)
        common = {"bootstrap": bootstrap, "n": n, "base": base, "src": src}
        start = time.perf_counter()
        fill_log = os.path.join(workdir, "fill.log")
        await worker_output(peers_python, "fill", common, fill_log)
        print(f"filled the input topics with {n:,} records in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            for workload in workloads:
                runs: dict[str, list[Any]] = {}
                for _round in range(args.rounds):  # interleaved: every contestant once per round
                    for name, interp, worker, supports, extra in CONTESTANTS:
                        if workload not in supports or (only and worker not in only):
                            continue
                        python = peers_python if interp == "peers" else sys.executable
                        runs.setdefault(name, []).append(
                            await contestant(broker, admin, python, name, worker, workload, dict(common, **extra),
                                             peers_python, workdir, args.timeout, args.profile))
                rows = [median_row(results) for results in runs.values()]
                rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
                report(f"{WORKLOADS[workload]}: {n:,} records of ~100 B, {PARTITIONS} partitions{rounds}", rows,
                       baseline_name="Quix Streams", as_json=args.json)
        finally:
            await admin.close()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        WORKERS[sys.argv[2]](json.loads(sys.argv[3]))
    else:
        asyncio.run(main())
