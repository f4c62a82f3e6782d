"""``bench_kafka.py --workers 1,2``: a CPU-bound KafkaApp under ``streamlib run --workers N``.

The app (``make_app``, run by ``python -m streamlib run _bench_workers:make_app``
from this directory) is exactly-once with a stateless ``map`` that costs about
``BENCH_WORKERS_SPINS`` iterations of pure-Python arithmetic per record
(a CPU-bound topology: the GIL, not Kafka, limits one process). For each worker
count the input topic (``--n`` records, 4 partitions, filled once) is consumed
into a fresh output topic by a fresh group; the rate is measured from the
moment the group is stable with all N workers and at least 10 % of the input
is committed, until 90 % is (steady state: process start, the group's joins
and rebalances, and the last commits are left out; the wall time from start
to everything committed is reported as well). During the same
window the CPU time of the broker's JVM and of the whole machine is read from
``/proc``: the broker's share is its CPU seconds over the window's wall
seconds times the number of cores; the app's share likewise from its worker processes. Where
the app's share stays below N cores' worth, something else (other processes) took the CPU.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from streamlib import Flow, RunSettings
from streamlib.kafka import ConsumerSettings, KafkaApp, PartitionContext, ProducerRecord, ProducerSettings

HERE = Path(__file__).resolve().parent
DEFAULT_SPINS = 400


def burn(value: bytes, spins: int) -> bytes:
    """About ``spins`` iterations of integer arithmetic in the interpreter, folded into the value."""
    h = len(value)
    for i in range(spins):
        h = (h * 31 + i) & 0xFFFFFFFF
    return value[:-4] + h.to_bytes(4, "little")


def make_app(settings: RunSettings) -> KafkaApp:
    output = os.environ["BENCH_WORKERS_OUTPUT"]
    spins = int(os.environ.get("BENCH_WORKERS_SPINS", DEFAULT_SPINS))

    def topology(p: PartitionContext) -> Flow[Any, Any, Any]:
        return Flow().map(lambda r: ProducerRecord(output, burn(r.value, spins), key=r.key))

    servers = settings.bootstrap_servers or "localhost:9092"
    return KafkaApp(os.environ["BENCH_WORKERS_GROUP"], consumer=ConsumerSettings(servers),
                    producer=ProducerSettings(servers, linger_ms=5), topics=os.environ["BENCH_WORKERS_INPUT"],
                    topology=topology, processing_guarantee="exactly_once", checkpoint_interval=0.1)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``'s children (the workers of ``streamlib run``) and of ``pid`` itself."""
    total = 0.0
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            total += _cpu_seconds(p)
        except OSError:
            pass
    return total


def _machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def _group_stable(admin: Any, group: str, members: int) -> bool:
    """Whether ``group`` is in state Stable with ``members`` members (no rebalance going on)."""
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except (KafkaError, ValueError):
        return False
    # (error_code, group_id, state, protocol_type, protocol, members, ...)
    _error, _gid, state, _ptype, _protocol, described = response.groups[0][:6]
    return bool(state == "Stable" and len(described) == members)


async def run_workers(bootstrap: str, broker_pid: int | None, src: str, ends: dict[Any, int], workers: int,
                      spins: int, admin: Any, create_topic: Any) -> dict[str, float]:
    """One run of ``streamlib run --workers N`` over the whole input; returns its measurements."""
    run = uuid.uuid4().hex[:8]
    dst, group = f"bench-workers-out-{run}", f"bench-workers-{run}"
    await create_topic(dst, len(ends))
    total = sum(ends.values())
    env = {**os.environ, "BENCH_WORKERS_INPUT": src, "BENCH_WORKERS_OUTPUT": dst, "BENCH_WORKERS_GROUP": group,
           "BENCH_WORKERS_SPINS": str(spins), "PYTHONPATH": str(HERE.parent)}
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamlib", "run", "_bench_workers:make_app", "--workers", str(workers),
        "--bootstrap-servers", bootstrap, "--log-level", "WARNING",
        cwd=HERE, env=env, stdin=asyncio.subprocess.DEVNULL,
    )
    marks: dict[str, tuple[float, float, float, float, int]] = {}
    stable = False
    try:
        while True:
            if not stable:
                stable = await _group_stable(admin, group, workers)
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            except KafkaError:  # the group's coordinator is not known yet
                offsets = {}
            done = sum(min(offsets[tp].offset, end) for tp, end in ends.items() if tp in offsets)
            now = time.perf_counter()
            for name, fraction in (("lo", 0.1), ("hi", 0.9)):
                if name not in marks and done >= fraction * total and stable:
                    broker_cpu = _cpu_seconds(broker_pid) if broker_pid else 0.0
                    marks[name] = (now, broker_cpu, _machine_busy_seconds(), _tree_cpu_seconds(proc.pid), done)
            if done >= total:
                break
            if proc.returncode is not None:
                raise RuntimeError(f"streamlib run --workers {workers} exited with {proc.returncode}")
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - start
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    if "lo" not in marks or "hi" not in marks:
        raise RuntimeError(f"--workers {workers}: the group was not stable with {workers} members before 90 % of "
                           "the input was committed; use more records (--workers-n)")
    (t0, b0, m0, a0, d0), (t1, b1, m1, a1, d1) = marks["lo"], marks["hi"]
    window = t1 - t0
    cores = os.cpu_count() or 1
    return {"rate": (d1 - d0) / window, "wall": wall, "broker_share": (b1 - b0) / (window * cores),
            "machine_busy": (m1 - m0) / (window * cores), "app_share": (a1 - a0) / (window * cores)}
