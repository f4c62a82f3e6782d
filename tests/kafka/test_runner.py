"""``streamlib run`` against a real broker: graceful stops, supervised workers, static membership."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamlib.kafka.testing import end_offsets, open_transactions, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import expected_outputs, key_of, parse_outputs, partition_of, produce_numbered, value_of
from ._runner_procs import Runner, assignments
from ._util import committed_offsets, unique, wait_drained

KEYS = 40
PARTITIONS = 4


async def produce_range(bootstrap: str, topic: str, start: int, stop: int, rate: float | None = None) -> None:
    """Records ``start..stop-1`` of the counter model (``rate`` records/s when given)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        futures = []
        for i in range(start, stop):
            futures.append(await producer.send(topic, value_of(i), key=key_of(i, KEYS),
                                               partition=partition_of(i, KEYS, PARTITIONS)))
            if rate is not None and i % 200 == 199:
                ahead = began + (i - start + 1) / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def check_exactly_once(bootstrap: str, output: str, n: int) -> None:
    """A read_committed reader finds the model's output for each of the ``n`` inputs, exactly once."""
    outputs = parse_outputs(await read_topic(bootstrap, output))
    seen = Counter(o[1] for o in outputs)
    assert not [i for i, c in seen.items() if c > 1], "duplicated outputs"
    assert sorted(seen) == list(range(n)), f"missing outputs: {sorted(set(range(n)) - set(seen))[:10]}"
    model = expected_outputs(n, KEYS)
    assert all((k, c, s) == model[i] for k, i, c, s in outputs)
    assert await open_transactions(bootstrap, [output]) == {}


async def progress(bootstrap: str, group: str, topic: str) -> int:
    return sum(o or 0 for o in (await committed_offsets(bootstrap, group, topic, PARTITIONS)).values())


def env_for(app_id: str, src: str, dst: str, guarantee: str) -> dict[str, str]:
    return {"RUNNER_JOB_APP_ID": app_id, "RUNNER_JOB_INPUT": src, "RUNNER_JOB_OUTPUT": dst,
            "RUNNER_JOB_GUARANTEE": guarantee}


@pytest.mark.time_limit(240)
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
async def test_sigterm_during_processing_commits_what_was_read_and_exits_0(
    kafka_broker: KafkaBroker, tmp_path: Path, guarantee: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("run-term"), unique("run-term-in"), unique("run-term-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    n = 30_000
    options = ("--workers", "1", "--bootstrap-servers", bootstrap, "--state-dir", str(tmp_path / "state"),
               "--shutdown-timeout", "70")
    env = env_for(app_id, src, dst, guarantee)
    first = Runner("runner_app:make_app", *options, env=env, log_path=tmp_path / "first.log")
    second = Runner("runner_app:make_app", *options, env=env, log_path=tmp_path / "second.log")
    producing = asyncio.ensure_future(produce_range(bootstrap, src, 0, n, rate=6000))
    try:
        await first.start()
        # Stop it while input keeps arriving: some of it committed, more of it in flight.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while await progress(bootstrap, app_id, src) < 3000:
            assert loop.time() < deadline and first.proc is not None and first.proc.returncode is None, first.tail()
            await asyncio.sleep(0.1)
        assert not producing.done()
        first.signal(signal.SIGTERM)
        assert await first.wait_exit(timeout=45) == 0, first.tail()
        assert any("stopped cleanly" in e["message"] for e in first.events())
        # The outputs of everything it committed are there, and nothing more. (The broker writes the
        # commit markers of the last transactions to the output and to the group's offsets after
        # the commit returned, each at its own pace: the two counts agree once both are written.)
        deadline = loop.time() + 30
        while True:
            stopped_at = await progress(bootstrap, app_id, src)
            partial = parse_outputs(await read_topic(bootstrap, dst))
            if len(partial) == stopped_at or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert len(partial) == stopped_at, f"{len(partial)} outputs committed for {stopped_at} inputs"
        assert 3000 <= stopped_at < n
        await producing
        await second.start()
        await wait_drained(bootstrap, app_id, src, PARTITIONS, timeout=120)
        second.signal(signal.SIGINT)
        assert await second.wait_exit(timeout=45) == 0, second.tail()
        await check_exactly_once(bootstrap, dst, n)
    finally:
        producing.cancel()
        await first.close()
        await second.close()


@pytest.mark.time_limit(180)
async def test_streamlib_run_in_a_script_takes_settings_from_the_environment_and_returns_on_sigterm(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    import sys

    from ._runner_procs import JOBS, REPO

    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("run-lib"), unique("run-lib-in"), unique("run-lib-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    n = 5000
    await produce_range(bootstrap, src, 0, n)
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_for(app_id, src, dst, "at_least_once"),
           "STREAMLIB_BOOTSTRAP_SERVERS": bootstrap, "STREAMLIB_STATE_DIR": str(tmp_path / "state"),
           "STREAMLIB_LOG_FORMAT": "json"}
    with open(tmp_path / "script.log", "wb") as err:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(JOBS / "run_in_process.py"), cwd=JOBS, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        await wait_drained(bootstrap, app_id, src, PARTITIONS)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        log = (tmp_path / "script.log").read_text()
        assert proc.returncode == 0, log[-3000:]
        assert b"streamlib.run returned" in out
        assert '"message":"stopped cleanly' in log and f"state in {tmp_path / 'state'}" in log
        await check_exactly_once(bootstrap, dst, n)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.time_limit(300)
async def test_workers_split_partitions_and_a_killed_worker_comes_back_without_a_rebalance(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("run-workers"), unique("run-workers-in"), unique("run-workers-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    first_part, n = 20_000, 40_000
    await produce_numbered(bootstrap, src, first_part, keys=KEYS, partitions=PARTITIONS)
    runner = Runner("runner_app:make_app", "--workers", "2", "--bootstrap-servers", bootstrap,
                    "--state-dir", str(tmp_path / "state"), "--session-timeout-ms", "30000",
                    "--restart-backoff", "0.2", "--instance-id", "test-host",
                    env=env_for(app_id, src, dst, "exactly_once"), log_path=tmp_path / "runner.log")
    producing: asyncio.Future[Any] | None = None
    try:
        await runner.start()

        def split(events: list[dict[str, Any]]) -> dict[int, set[str]] | None:
            pids = {e["worker_index"]: e["worker_pid"] for e in events if e.get("event") == "worker_started"}
            held = assignments(events)
            by_worker = {i: held.get(pid, set()) for i, pid in pids.items()}
            ok = (len(by_worker) == 2 and all(len(p) == PARTITIONS // 2 for p in by_worker.values())
                  and len(set.union(*by_worker.values())) == PARTITIONS)
            return by_worker if ok else None

        # Two processes in one group, half of the partitions each.
        before = await runner.wait_for(split, timeout=90)
        await wait_drained(bootstrap, app_id, src, PARTITIONS)

        # More input arrives while worker 1 is SIGKILLed; the supervisor starts it again.
        producing = asyncio.ensure_future(produce_range(bootstrap, src, first_part, n, rate=5000))
        while await progress(bootstrap, app_id, src) < first_part + 2000:
            await asyncio.sleep(0.1)
        events = runner.events()
        pids = {e["worker_index"]: e["worker_pid"] for e in events if e.get("event") == "worker_started"}
        survivor_events = [e for e in events if e["pid"] == pids[0] and e.get("event", "").startswith("partitions_")]
        generation = [e for e in events if e.get("event") == "partitions_assigned"][-1]["generation"]
        assert all(e["generation"] <= generation for e in events if e.get("event") == "partitions_assigned")
        os.kill(pids[1], signal.SIGKILL)

        def restarted(events: list[dict[str, Any]]) -> dict[str, Any] | None:
            starts = [e for e in events if e.get("event") == "worker_started" and e["worker_index"] == 1]
            if len(starts) < 2:
                return None
            new_pid = starts[-1]["worker_pid"]
            got = [e for e in events if e["pid"] == new_pid and e.get("event") == "partitions_assigned"
                   and e["partitions"]]
            return got[-1] if got else None

        back = await runner.wait_for(restarted, timeout=60)
        assert any(e.get("event") == "worker_crashed" and e["code"] == -signal.SIGKILL for e in runner.events())
        # Static membership: the restarted worker got its own partitions back in the same generation,
        # and the other worker saw no rebalance at all.
        assert set(back["partitions"]) == before[1]
        assert back["generation"] == generation
        await producing
        await wait_drained(bootstrap, app_id, src, PARTITIONS, timeout=120)
        events = runner.events()
        assert [e for e in events if e["pid"] == pids[0] and e.get("event", "").startswith("partitions_")] \
            == survivor_events

        runner.signal(signal.SIGTERM)
        assert await runner.wait_exit(timeout=60) == 0, runner.tail()
        exits = [e for e in runner.events() if e.get("event") == "worker_exited"]
        assert sorted((e["worker_index"], e["code"]) for e in exits) == [(0, 0), (1, 0)]
        await check_exactly_once(bootstrap, dst, n)
        assert sum((await end_offsets(bootstrap, src)).values()) == n
    finally:
        if producing is not None:
            producing.cancel()
        await runner.close()


@pytest.mark.time_limit(180)
def test_service_example_runs_and_checks_itself(kafka_broker: KafkaBroker) -> None:
    import subprocess
    import sys

    from ._runner_procs import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "service.py"), "--bootstrap", kafka_broker.bootstrap_servers,
         "--payments", "6000"],
        capture_output=True, text=True, timeout=150, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exited with code 0" in proc.stdout
    assert "Check against plain Python: same results" in proc.stdout


def hanging(count: int) -> Any:
    return lambda events: len([e for e in events if e.get("event") == "hanging"]) >= count


@pytest.mark.time_limit(240)
async def test_a_second_signal_or_the_deadline_aborts_and_the_next_run_is_still_exactly_once(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("run-abort"), unique("run-abort-in"), unique("run-abort-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    n = 4000
    await produce_range(bootstrap, src, 0, n)
    options = ("--bootstrap-servers", bootstrap, "--state-dir", str(tmp_path / "state"), "--instance-id", "abort-host")
    env = env_for(app_id, src, dst, "exactly_once")
    # In the first two runs processing never finishes, so neither can a stop.
    hung = {**env, "RUNNER_JOB_HANG": "1"}
    workers = Runner("runner_app:make_app", "--workers", "2", *options, env=hung, log_path=tmp_path / "workers.log")
    single = Runner("runner_app:make_app", "--workers", "1", "--shutdown-timeout", "2", *options, env=hung,
                    log_path=tmp_path / "single.log")
    last = Runner("runner_app:make_app", "--workers", "2", *options, env=env, log_path=tmp_path / "last.log")
    try:
        await workers.start()
        await workers.wait_for(hanging(PARTITIONS))
        workers.signal(signal.SIGTERM)
        # Both workers are stopping (the supervisor forwarded the signal) when the second one arrives.
        await workers.wait_for(lambda events: len([e for e in events if "a second signal aborts" in e["message"]]) == 2)
        workers.signal(signal.SIGTERM)
        assert await workers.wait_exit(timeout=45) == 128 + signal.SIGTERM, workers.tail()
        exits = sorted((e["worker_index"], e["code"]) for e in workers.events() if e.get("event") == "worker_exited")
        assert exits == [(0, 128 + signal.SIGTERM), (1, 128 + signal.SIGTERM)], workers.tail()
        assert len([e for e in workers.events() if "again: aborting without committing" in e["message"]]) == 2

        await single.start()
        await single.wait_for(hanging(PARTITIONS))
        single.signal(signal.SIGTERM)
        assert await single.wait_exit(timeout=45) == 124, single.tail()
        (aborted,) = [e["message"] for e in single.events() if "did not finish within 2.0s" in e["message"]]
        assert "still waiting:" in aborted and "runner_app.py" in aborted and " never" in aborted, aborted
        assert await progress(bootstrap, app_id, src) == 0

        await last.start()
        await wait_drained(bootstrap, app_id, src, PARTITIONS, timeout=120)
        last.signal(signal.SIGTERM)
        assert await last.wait_exit(timeout=60) == 0, last.tail()
        await check_exactly_once(bootstrap, dst, n)
    finally:
        await workers.close()
        await single.close()
        await last.close()


@pytest.mark.time_limit(120)
async def test_workers_stop_cleanly_when_their_supervisor_is_killed(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("run-orphan"), unique("run-orphan-in"), unique("run-orphan-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    runner = Runner("runner_app:make_app", "--workers", "2", "--bootstrap-servers", bootstrap,
                    "--state-dir", str(tmp_path / "state"), env=env_for(app_id, src, dst, "exactly_once"),
                    log_path=tmp_path / "runner.log")
    try:
        await runner.start()
        await runner.wait_for(lambda events: len({e["pid"] for e in events if e.get("event") == "partitions_assigned"
                                                  and e["partitions"]}) == 2, timeout=90)
        pids = [e["worker_pid"] for e in runner.events() if e.get("event") == "worker_started"]
        runner.signal(signal.SIGKILL)
        assert await runner.wait_exit() == -signal.SIGKILL
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while any(_state(pid) not in ("Z", "gone") for pid in pids):
            assert loop.time() < deadline, runner.tail()
            await asyncio.sleep(0.1)
        messages = [(e["pid"], e["message"]) for e in runner.events() if e["pid"] in pids]
        for pid in pids:
            assert any(m.startswith("the supervising process is gone: stopping") for p, m in messages if p == pid)
            assert any(m.startswith("stopped cleanly") for p, m in messages if p == pid)
    finally:
        await runner.close()


def _state(pid: int) -> str:
    """The process state letter from /proc (Z: exited, not reaped yet), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
