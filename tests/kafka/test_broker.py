"""Tests against a real single-node Kafka broker (see streamlib.testing.kafka)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from streamlib.testing.kafka import KafkaBroker, KafkaBrokerError, broker_or_local, ensure_jars, find_java

REPO_ROOT = Path(__file__).resolve().parents[2]


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _produce(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=str(i).encode(), partition=i % partitions)
        await producer.flush()
    finally:
        await producer.stop()


async def _read_all(
    bootstrap: str,
    topic: str,
    *,
    until: bytes | int,
    partitions: int = 1,
    isolation_level: str = "read_uncommitted",
    timeout: float = 20.0,
) -> list[tuple[int, bytes]]:
    """Read all partitions from the start until value ``until`` is seen (or that many records)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                seen.extend((r.partition, r.value) for r in records)
            if (until in [v for _, v in seen]) if isinstance(until, bytes) else len(seen) >= until:
                return seen
        raise AssertionError(f"timed out waiting for {until!r}; read {seen}")
    finally:
        await consumer.stop()


# -- one broker for the whole session -------------------------------------------------


def test_three_partitions_produce_and_consume_in_a_group(kafka_broker: KafkaBroker) -> None:
    topic = _topic("events")
    kafka_broker.create_topic(topic, partitions=3)
    values = [f"v{i}".encode() for i in range(30)]

    async def scenario() -> list[tuple[int, bytes]]:
        await _produce(kafka_broker.bootstrap_servers, topic, values, partitions=3)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap_servers,
                                    group_id=_topic("group"), auto_offset_reset="earliest")
        await consumer.start()
        try:
            assert consumer.partitions_for_topic(topic) == {0, 1, 2}
            got: list[tuple[int, bytes]] = []
            deadline = time.monotonic() + 30
            while len(got) < len(values) and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend((r.partition, r.value) for r in records)
            await consumer.commit()
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(scenario())
    assert sorted(v for _, v in got) == sorted(values)
    for partition in range(3):
        in_partition = [v for p, v in got if p == partition]
        assert in_partition == values[partition::3]


def test_create_topic_with_config_and_existing_topic(kafka_broker: KafkaBroker) -> None:
    topic = _topic("compacted")
    kafka_broker.create_topic(topic, config={"cleanup.policy": "compact", "retention.ms": 123456})

    async def describe() -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
        await admin.start()
        try:
            (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        (resource,) = response.resources
        return {entry[0]: entry[1] for entry in resource[4]}

    configs = asyncio.run(describe())
    assert configs["cleanup.policy"] == "compact"
    assert configs["retention.ms"] == "123456"
    with pytest.raises(KafkaBrokerError, match="TopicAlreadyExists"):
        kafka_broker.create_topic(topic)
    kafka_broker.create_topic(topic, exist_ok=True)


def test_create_topic_inside_a_running_event_loop(kafka_broker: KafkaBroker) -> None:
    """Both the blocking and the async call work from a coroutine, and the topics take records."""
    sync_topic, async_topic = _topic("sync-in-loop"), _topic("async")

    async def scenario() -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        kafka_broker.create_topic(sync_topic)
        await kafka_broker.acreate_topic(async_topic, partitions=2)
        bootstrap = kafka_broker.bootstrap_servers
        await _produce(bootstrap, sync_topic, [b"one"])
        await _produce(bootstrap, async_topic, [b"a", b"b"], partitions=2)
        return (await _read_all(bootstrap, sync_topic, until=1),
                await _read_all(bootstrap, async_topic, until=2, partitions=2))

    in_sync, in_async = asyncio.run(scenario())
    assert in_sync == [(0, b"one")]
    assert sorted(in_async) == [(0, b"a"), (1, b"b")]


def test_transactions_commit_and_abort(kafka_broker: KafkaBroker) -> None:
    topic = _topic("tx")
    kafka_broker.create_topic(topic)
    bootstrap = kafka_broker.bootstrap_servers

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=_topic("txid"))
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-1")
                await producer.send_and_wait(topic, b"committed-2")
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted-1")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-3")
        finally:
            await producer.stop()
        committed = await _read_all(bootstrap, topic, until=b"committed-3", isolation_level="read_committed")
        uncommitted = await _read_all(bootstrap, topic, until=b"committed-3")
        return [v for _, v in committed], [v for _, v in uncommitted]

    committed, uncommitted = asyncio.run(scenario())
    assert committed == [b"committed-1", b"committed-2", b"committed-3"]
    assert uncommitted == [b"committed-1", b"committed-2", b"aborted-1", b"committed-3"]


def test_broker_refuses_a_busy_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(KafkaBrokerError, match="already in use"):
            KafkaBroker(port=sock.getsockname()[1]).start()


def test_invalid_setting_fails_loudly_with_the_log() -> None:
    broker = KafkaBroker(properties={"num.io.threads": "not-a-number"})
    try:
        with pytest.raises(KafkaBrokerError, match="num.io.threads"):
            broker.start()
        assert not broker.running
    finally:
        broker.close()


# -- brokers of their own: restart, kill ----------------------------------------------


@pytest.fixture(scope="module")
def own_broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


def test_restart_keeps_ports_and_data(own_broker: KafkaBroker) -> None:
    topic = _topic("durable")
    own_broker.create_topic(topic, partitions=3)
    bootstrap = own_broker.bootstrap_servers
    asyncio.run(_produce(bootstrap, topic, [b"a", b"b", b"c"], partitions=3))

    own_broker.restart()

    assert own_broker.bootstrap_servers == bootstrap
    got = asyncio.run(_read_all(bootstrap, topic, until=3, partitions=3))
    assert sorted(got) == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_kill_then_start_and_restart(own_broker: KafkaBroker) -> None:
    topic = _topic("crash")
    own_broker.create_topic(topic)
    bootstrap = own_broker.bootstrap_servers
    asyncio.run(_produce(bootstrap, topic, [b"before-kill"]))
    pid = own_broker.pid
    assert pid is not None

    own_broker.kill()
    assert not own_broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    # Started from a thread that then exits: the JVM must outlive that thread.
    starter = threading.Thread(target=own_broker.start)
    starter.start()
    starter.join()
    assert own_broker.running
    asyncio.run(_produce(bootstrap, topic, [b"after-kill"]))
    own_broker.kill()
    own_broker.restart()
    got = asyncio.run(_read_all(bootstrap, topic, until=b"after-kill"))
    assert [v for _, v in got] == [b"before-kill", b"after-kill"]


# -- command line and process hygiene --------------------------------------------------


def _run_cli(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start the dev broker command; return it and the ``name: value`` lines it printed."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "streamlib.testing.kafka", *args],
                            env={**os.environ, "PYTHONPATH": path},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return proc, dict(ln.strip().split(": ", 1) for ln in lines if ": " in ln)
    proc.wait(10)
    raise AssertionError("".join(lines))


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def _wait_closed(address: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _listening(address):
        assert time.monotonic() < deadline, f"{address} still listening"
        time.sleep(0.1)


def test_cli_runs_until_ctrl_c_and_stops_cleanly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc, printed = _run_cli("--port", str(port))
    address = printed["bootstrap servers"]
    try:
        assert address == f"127.0.0.1:{port}"
        assert _listening(address)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "Stopping Kafka" in out
        assert not _listening(address)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_broker_or_local_uses_the_given_servers_or_runs_a_broker_for_the_block(kafka_broker: KafkaBroker) -> None:
    with broker_or_local(kafka_broker.bootstrap_servers) as given:
        assert given == kafka_broker.bootstrap_servers
    with broker_or_local(None) as local:
        assert local != kafka_broker.bootstrap_servers and _listening(local)
        topic = _topic("local")

        async def round_trip() -> list[tuple[int, bytes]]:
            admin = AIOKafkaAdminClient(bootstrap_servers=local)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            finally:
                await admin.close()
            await _produce(local, topic, [b"a", b"b"])
            return await _read_all(local, topic, until=2)

        assert [v for _, v in asyncio.run(round_trip())] == [b"a", b"b"]
    _wait_closed(local)


def test_broker_dies_with_its_python_process() -> None:
    proc, printed = _run_cli()
    address, broker_dir = printed["bootstrap servers"], Path(printed["broker log"]).parent
    try:
        proc.kill()  # no atexit, no cleanup: only the parent-death signal can stop the JVM
        proc.wait(10)
        _wait_closed(address)
    finally:
        shutil.rmtree(broker_dir, ignore_errors=True)


# -- requirements and the jar cache ----------------------------------------------------


def test_missing_java_and_maven_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaBrokerError, match="apt-get install openjdk-17-jdk-headless"):
        find_java()
    with pytest.raises(KafkaBrokerError, match="apt-get install maven"):
        ensure_jars("3.9.2", tmp_path / "cache")


FAKE_MVN = """#!/bin/sh
echo run >> "$FAKE_MVN_CALLS"
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
done
mkdir -p "$out" && touch "$out/kafka-clients-3.9.2.jar"
[ -n "$FAKE_MVN_FAIL" ] && exit 1
touch "$out/kafka_2.13-3.9.2.jar"
"""


def test_jars_are_downloaded_once_and_an_interrupted_download_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, cache, calls = tmp_path / "bin", tmp_path / "cache", tmp_path / "calls"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN)
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MVN_CALLS", str(calls))

    monkeypatch.setenv("FAKE_MVN_FAIL", "1")
    with pytest.raises(KafkaBrokerError, match="failed"):
        ensure_jars("3.9.2", cache)
    assert not (cache / "kafka-3.9.2" / "download-complete").exists()

    monkeypatch.delenv("FAKE_MVN_FAIL")
    lib = ensure_jars("3.9.2", cache)
    assert lib == cache / "kafka-3.9.2" / "lib"
    assert (lib / "kafka_2.13-3.9.2.jar").is_file()
    assert ensure_jars("3.9.2", cache) == lib
    assert calls.read_text().splitlines() == ["run", "run"]  # the third call did not run mvn
