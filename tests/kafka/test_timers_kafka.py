"""Event-time timers in an exactly-once KafkaApp: each timer's output exactly once across SIGKILLs.

``_jobs/timer_app.py`` sums each key's records into buckets of event time and
emits one record per bucket from a timer when the watermark passes the bucket's
end. Timers are rows of the operator's store table, so they are changelogged
and committed with the offsets and the output. The job is killed with SIGKILL
while input arrives, restarted each time, stopped cleanly at the end; a
read_committed reader must then find every bucket the watermark passed exactly
once, with the model's count and sum, and no other.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from streamlib.kafka.testing import open_transactions, read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import key_of, partition_of, produce_numbered
from ._procs import Job
from ._util import TransactionWatch, aborted_writes, kill_and_restart, unique, wait_drained

N = 20_000
KEYS = 20
PARTITIONS = 2
BUCKET = 50  # as in _jobs/timer_app.py


def _model() -> dict[tuple[str, int], tuple[int, int]]:
    """(key, bucket end) -> (count, sum) for every bucket whose end its partition's watermark reached."""
    buckets: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    watermark: dict[int, int] = {}
    for n in range(N):
        k = key_of(n, KEYS).decode()
        b = buckets[(k, (n // BUCKET + 1) * BUCKET)]
        b[0] += 1
        b[1] += n
        p = partition_of(n, KEYS, PARTITIONS)
        watermark[p] = max(watermark.get(p, n), n)
    return {
        (k, end): (c, s)
        for (k, end), (c, s) in buckets.items()
        if end <= watermark[partition_of(int(k[1:]), KEYS, PARTITIONS)]
    }


async def test_timer_outputs_exactly_once_across_sigkill(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst = unique("timers"), unique("timers-in"), unique("timers-out")
    await kafka_broker.acreate_topic(src, PARTITIONS)
    await kafka_broker.acreate_topic(dst, PARTITIONS)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    job = Job("timer_app.py", bootstrap, app_id, src, dst, str(tmp_path / "state"), "--instance", "timers-1",
              log_dir=tmp_path)
    producing = asyncio.ensure_future(produce_numbered(bootstrap, src, N, keys=KEYS, partitions=PARTITIONS, rate=5_000))
    try:
        async with TransactionWatch(bootstrap, [dst, f"{app_id}-buckets-changelog"]) as watch:
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

    rows = [json.loads(r.value) for r in await read_topic(bootstrap, dst, isolation_level="read_committed")]
    seen = Counter((k, end) for k, end, _c, _s in rows)
    duplicates = {b: c for b, c in seen.items() if c > 1}
    assert not duplicates, f"seed {seed}: timers fired more than once: {sorted(duplicates)[:5]}"
    got = {(k, end): (c, s) for k, end, c, s in rows}
    expected = _model()
    assert set(got) == set(expected), (
        f"seed {seed}: missing {sorted(set(expected) - set(got))[:5]}, extra {sorted(set(got) - set(expected))[:5]}"
    )
    wrong = {b: (got[b], expected[b]) for b in got if got[b] != expected[b]}
    assert not wrong, f"seed {seed}: outputs disagree with the model: {list(wrong.items())[:3]}"
    assert await aborted_writes(bootstrap, [dst, f"{app_id}-buckets-changelog"]) > 0, f"seed {seed}: no aborted writes after {kills} kills"
    assert await open_transactions(bootstrap, [dst, f"{app_id}-buckets-changelog"]) == {}
