"""Failover of a task with a large state, with and without a standby replica, on a real broker.

Starts its own single-node broker. For each mode (``num_standby_replicas`` 0, then 1):

1. instance A (a subprocess) runs a ``KafkaApp`` counting per key (exactly-once,
   RocksDB state, changelogged) over a one-partition topic of ``--rows`` records
   with distinct keys: one task holding ``--rows`` rows of state;
2. instance B (a subprocess, same app) joins the group: it gets no task (A's
   member id sorts first), and with a standby it tails the task's changelog
   until it has caught up;
3. with a trickle of input arriving (existing keys, 200 records/s), A is
   killed with SIGKILL. B is assigned the task once the group notices (the
   session timeout, 6 s), restores its store and processes again.

Printed per mode: the rows of state (B's store after the takeover, RocksDB's
estimate), the changelog records B replayed, seconds from the kill to B's
assignment, from the assignment to processing again (the restore), and from
the kill to processing again. The survivor's restore log lines go to stderr.

    .venv/bin/python benchmarks/bench_restore.py               # 1,000,000 rows
    .venv/bin/python benchmarks/bench_restore.py --rows 100000

The input is produced once; the second mode reads it again under a new
application id (so again from an empty state).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import parser  # noqa: E402

SESSION_TIMEOUT_MS = 6000  # the broker's minimum: how long the group takes to notice the kill
TRICKLE_PER_S = 200


# -- the instance (run as a subprocess: bench_restore.py --worker ...) ------------------------


async def worker(bootstrap: str, app_id: str, topic: str, state_dir: str, standbys: int, name: str) -> int:
    from streamlib import Flow
    from streamlib.kafka import ConsumerSettings, KafkaApp, ProducerSettings

    def topology(p: Any) -> Any:
        def count(rec: Any, state: Any) -> None:
            state.set(state.get(0) + 1)

        return (Flow().key_by(lambda r: r.key).stateful_map(count, store=p.store, name="counts")
                .filter(lambda _: False))

    consumer = ConsumerSettings(bootstrap, client_id=f"{app_id}-{name}",
                                properties={"session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": 500,
                                            "max_poll_records": 10_000})
    app = KafkaApp(app_id, consumer=consumer, producer=ProducerSettings(bootstrap, linger_ms=5), topics=topic,
                   topology=topology, state_dir=state_dir, num_standby_replicas=standbys)
    control = app.run()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, control.stop)

    async def report() -> None:
        rows = None
        last_rows = 0.0
        while True:
            m = control.metrics
            now = time.time()
            if now - last_rows >= 1.0:
                rows, last_rows = control.registry.value("state-store-rows", app=app_id), now
            print(json.dumps({"t": now, "records": m.records, "assigned": sorted(tp.partition for tp in m.assigned),
                              "ready": control.is_ready, "restored": m.restored_records, "full": m.full_restores,
                              "rows": rows,
                              "standby_tasks": control.registry.value("standby-tasks", app=app_id),
                              "standby_records": control.registry.value("standby-records-total", app=app_id),
                              "standby_lag": control.registry.value("standby-records-lag", app=app_id)}),
                  flush=True)
            await asyncio.sleep(0.05)

    reporter = asyncio.ensure_future(report())
    try:
        await control.wait_stopped()
    finally:
        reporter.cancel()
    return 0


# -- the driver -----------------------------------------------------------------------------


class Instance:
    """One worker subprocess; ``status`` is its last JSON line, ``lines`` all of them."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.status: dict[str, Any] = {}
        self.lines: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with open(self.log_path, "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, os.path.abspath(__file__), "--worker", *self.argv,
                stdout=asyncio.subprocess.PIPE, stderr=err,
            )
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                self.status = json.loads(line)
            except ValueError:
                continue
            self.lines.append(self.status)

    async def wait_for(self, what: str, predicate: Any, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (self.status and predicate(self.status)):
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"instance {self.name} exited ({self.proc.returncode}) waiting for {what}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"instance {self.name}: no {what} within {timeout}s; last status {self.status}")
            await asyncio.sleep(0.05)
        return self.status

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                await self.kill()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)


async def produce(bootstrap: str, topic: str, keys: range, *, rate: float | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        start = time.monotonic()
        pending = []
        for j, i in enumerate(keys):
            pending.append(await producer.send(topic, b"1", key=b"%09d" % i, partition=0))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
            if rate is not None and j % 20 == 19:
                ahead = start + (j + 1) / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def failover(bootstrap: str, topic: str, rows: int, standbys: int, workdir: Path) -> dict[str, Any]:
    """One mode: build the state on A, let B join, kill A under a trickle, time B's takeover."""
    app_id = f"restore-{standbys}-{uuid.uuid4().hex[:6]}"
    a = Instance("a", [bootstrap, app_id, topic, str(workdir / f"{app_id}-a"), str(standbys), "a"],
                 workdir / f"{app_id}-a.log")
    b = Instance("b", [bootstrap, app_id, topic, str(workdir / f"{app_id}-b"), str(standbys), "b"],
                 workdir / f"{app_id}-b.log")
    trickle: asyncio.Task[None] | None = None
    try:
        built = time.monotonic()
        await a.start()
        await a.wait_for("the state built", lambda s: s["records"] >= rows)
        print(f"[{standbys} standby] A processed {rows:,} records in {time.monotonic() - built:.0f}s", file=sys.stderr)
        await b.start()
        await b.wait_for("B in the group", lambda s: s["ready"] and not s["assigned"])
        await a.wait_for("A owning the task again", lambda s: s["ready"] and s["assigned"] == [0])
        if standbys:
            caught = time.monotonic()
            await b.wait_for("the standby caught up", lambda s: (s["standby_records"] or 0) >= rows
                             and s["standby_lag"] == 0)
            print(f"[{standbys} standby] B's standby applied {b.status['standby_records']:,} changelog records "
                  f"({time.monotonic() - caught:.0f}s after A was ready again)", file=sys.stderr)
        trickle = asyncio.ensure_future(produce(bootstrap, topic, range(10**8), rate=TRICKLE_PER_S))
        await asyncio.sleep(1.0)
        before = dict(b.status)
        killed = time.time()
        await a.kill()
        assigned = await b.wait_for("the task after the kill", lambda s: 0 in s["assigned"])
        resumed = await b.wait_for("processing again", lambda s: s["records"] > before["records"] and s["ready"])
        await b.wait_for("the rows estimate", lambda s: s["rows"] is not None and s["t"] > resumed["t"] + 1.0)
        result = {
            "rows": b.status["rows"],
            "replayed": resumed["restored"] - before["restored"],
            "full": resumed["full"] - before["full"],
            "to_assigned": assigned["t"] - killed,
            "restoring": resumed["t"] - assigned["t"],
            "to_processing": resumed["t"] - killed,
        }
        for line in b.log_path.read_text(errors="replace").splitlines():
            if "streamlib.kafka: restor" in line or "standby replica" in line:
                print(f"[{standbys} standby] B: {line}", file=sys.stderr)
        return result
    finally:
        if trickle is not None:
            trickle.cancel()
            await asyncio.wait([trickle])
        await a.kill()
        await b.stop()


def table(rows: int, results: dict[int, dict[str, Any]], as_json: bool) -> None:
    names = {0: "without standby", 1: "num_standby_replicas=1"}
    if as_json:
        print(json.dumps({"title": f"failover of one task with {rows:,} rows of state",
                          "rows": [{"name": names[k], **v} for k, v in results.items()]}), flush=True)
        return
    header = ["mode", "rows of state", "records replayed", "full restore", "s kill->assigned",
              "s restoring", "s kill->processing"]
    lines = [[names[k], f"{v['rows']:,.0f}", f"{v['replayed']:,}", "yes" if v["full"] else "no",
              f"{v['to_assigned']:.1f}", f"{v['restoring']:.1f}", f"{v['to_processing']:.1f}"]
             for k, v in results.items()]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print(f"\nfailover of one task with {rows:,} rows of state (SIGKILL, session timeout "
          f"{SESSION_TIMEOUT_MS / 1000:.0f} s)")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    without, with_ = results[0]["replayed"], results[1]["replayed"]
    fewer = f"{without / with_:,.0f}x fewer" if with_ else f"none (against {without:,})"
    print(f"records replayed with a standby: {fewer}; seconds restoring: "
          f"{results[0]['restoring']:.1f} against {results[1]['restoring']:.1f}")


async def main() -> None:
    p = parser("Failover of a task with a large state: restore with and without a standby replica")
    p.add_argument("--rows", type=int, default=1_000_000, help="distinct keys, so rows of state (default 1,000,000)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from streamlib.testing.kafka import KafkaBroker

    with KafkaBroker() as broker, tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        bootstrap = broker.bootstrap_servers
        topic = f"restore-in-{uuid.uuid4().hex[:6]}"
        await broker.acreate_topic(topic, 1)
        started = time.monotonic()
        await produce(bootstrap, topic, range(args.rows))
        print(f"produced {args.rows:,} records in {time.monotonic() - started:.0f}s", file=sys.stderr)
        results = {}
        for standbys in (0, 1):
            results[standbys] = await failover(bootstrap, topic, args.rows, standbys, Path(tmp))
        table(args.rows, results, args.json)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("streamlib.kafka").setLevel(logging.INFO)
        bootstrap, app_id, topic, state_dir, standbys, name = sys.argv[2:]
        sys.exit(asyncio.run(worker(bootstrap, app_id, topic, state_dir, int(standbys), name)))
    asyncio.run(main())
