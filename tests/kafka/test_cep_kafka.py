"""An absence pattern in an exactly-once KafkaApp: each alert exactly once across SIGKILLs.

``_jobs/cep_app.py`` matches, per key, a reset not followed by a login within
``WITHIN`` ms of event time; the alert fires on the watermark (no later event
for the key is needed). Partial matches are rows of the match operator's store
table, changelogged and committed with the offsets and the output. The job is
killed with SIGKILL several times while input arrives, restarted each time and
stopped cleanly at the end; a read_committed reader must then find every alert
of the model (a reset whose window the partition's watermark closed with no
login of its key inside) exactly once, and no other.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from pathlib import Path

from streamlib.kafka.testing import open_transactions, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import key_of, partition_of, produce_numbered
from ._procs import JOBS, Job
from ._util import TransactionWatch, aborted_writes, kill_and_restart, unique, wait_drained

sys.path.insert(0, str(JOBS))
from cep_app import WITHIN, is_login, is_reset  # noqa: E402

N = 20_000
KEYS = 20
PARTITIONS = 2


def _model() -> set[tuple[str, int]]:
    """(key, reset n) of every alert: no login of the key in (n, n + WITHIN), and n + WITHIN reached by the watermark."""
    by_key: dict[str, list[int]] = {}
    watermark: dict[int, int] = {}
    for n in range(N):
        by_key.setdefault(key_of(n, KEYS).decode(), []).append(n)
        p = partition_of(n, KEYS, PARTITIONS)
        watermark[p] = max(watermark.get(p, n), n)
    alerts = set()
    for k, ns in by_key.items():
        wm = watermark[partition_of(int(k[1:]), KEYS, PARTITIONS)]
        for n in ns:
            if is_reset(n) and n + WITHIN <= wm and not any(n < m < n + WITHIN and is_login(m) for m in ns):
                alerts.add((k, n))
    return alerts


async def test_absence_alerts_exactly_once_across_sigkill(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("cep"), unique("cep-in"), unique("cep-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    job = Job("cep_app.py", bootstrap, app_id, src, dst, str(tmp_path / "state"), "--instance", "cep-1",
              log_dir=tmp_path)
    producing = asyncio.ensure_future(produce_numbered(bootstrap, src, N, keys=KEYS, partitions=PARTITIONS, rate=5_000))
    try:
        async with TransactionWatch(bootstrap, [dst, f"{app_id}-absence-changelog"]) as watch:
            kills = await kill_and_restart(job, watch, producing, rng, min_kills=3, pause=(0.05, 0.6))
        await producing
        await job.start()
        await job.wait_for(lambda s: "records" in s)
        await wait_drained(bootstrap, app_id, src, PARTITIONS, timeout=120)
        assert await job.stop() == 0, job.stderr_tail()
    finally:
        if job.proc is not None and job.proc.returncode is None:
            await job.kill()
        producing.cancel()
        await asyncio.wait([producing])

    rows = [tuple(json.loads(r.value)) for r in await read_topic(bootstrap, dst, isolation_level="read_committed")]
    seen = Counter(rows)
    duplicates = {a: c for a, c in seen.items() if c > 1}
    assert not duplicates, f"seed {seed}: alerts emitted more than once: {sorted(duplicates)[:5]}"
    got = set(seen)
    expected = _model()
    assert expected, "the model expects no alert: the test would prove nothing"
    assert got == expected, (
        f"seed {seed}: missing {sorted(expected - got)[:5]}, extra {sorted(got - expected)[:5]}"
    )
    assert await aborted_writes(bootstrap, [dst, f"{app_id}-absence-changelog"]) > 0, f"seed {seed}: no aborted writes after {kills} kills"
    assert await open_transactions(bootstrap, [dst, f"{app_id}-absence-changelog"]) == {}
