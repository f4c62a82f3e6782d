"""Malformed records mixed into good ones: every good one processed, every bad one dead-lettered."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streamlib import Keep
from streamlib.kafka import (
    ConsumerSettings,
    DeadLetter,
    JsonSerde,
    KafkaSink,
    KafkaSource,
    ProducerRecord,
    ProducerSettings,
)
from streamlib.kafka.testing import read_topic
from streamlib.testing.kafka import KafkaBroker

from ._model import expected_outputs, parse_outputs, produce_numbered
from ._procs import Job
from ._util import unique, wait_drained

N = 100_000
BAD_EVERY = 100  # 1,000 malformed records
KEYS = 100
PARTITIONS = 4


class Event(msgspec.Struct):
    n: int
    pad: str = ""


def _check_dead_letters(dead: list[Any], topic: str) -> None:
    assert len(dead) == N // BAD_EVERY, f"{len(dead)} dead letters, expected {N // BAD_EVERY}"
    sources = set()
    for rec in dead:
        headers = dict(rec.headers)
        assert rec.value.startswith(b'{"n": "not a number"')
        assert headers["streamlib.source.topic"] == topic.encode()
        assert headers["streamlib.error.field"] == b"value"
        assert b"cannot deserialize the value of record" in headers["streamlib.error"]
        sources.add((int(headers["streamlib.source.partition"]), int(headers["streamlib.source.offset"])))
    assert len(sources) == len(dead)  # each bad record exactly once


@pytest.mark.time_limit(120)
async def test_at_least_once_pipeline_dead_letters_every_bad_record(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    group, src, dst, dlq = unique("bad"), unique("bad-in"), unique("bad-out"), unique("bad-dlq")
    for topic in (src, dst):
        await kafka_broker.acreate_topic(topic, PARTITIONS)
    await kafka_broker.acreate_topic(dlq, 1)
    bad = await produce_numbered(bootstrap, src, N, keys=KEYS, partitions=PARTITIONS, bad_every=BAD_EVERY)
    assert bad == N // BAD_EVERY
    settings = ConsumerSettings(bootstrap, group_id=group, value_serde=JsonSerde(Event),
                                on_deserialization_error=DeadLetter(dlq))

    def copy(rec: Any) -> ProducerRecord[Any, Any]:
        return ProducerRecord(dst, str(rec.value.n).encode(), partition=rec.partition,
                              passthrough=rec.committable_offset)

    control, done = (
        KafkaSource.committable(settings, src).map(copy)
        .to_mat(KafkaSink.committable(ProducerSettings(bootstrap)), Keep.both).run()
    )
    await wait_drained(bootstrap, group, src, PARTITIONS)
    control.stop()
    await done
    await control.wait_stopped()
    out = await read_topic(bootstrap, dst)
    assert sorted(int(r.value) for r in out) == list(range(N))
    assert control.metrics.dead_lettered == N // BAD_EVERY
    _check_dead_letters(await read_topic(bootstrap, dlq), src)


@pytest.mark.time_limit(150)
async def test_exactly_once_app_dead_letters_every_bad_record_once_despite_crashes(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    app_id, src, dst, dlq = unique("eosbad"), unique("eosbad-in"), unique("eosbad-out"), unique("eosbad-dlq")
    for topic in (src, dst):
        await kafka_broker.acreate_topic(topic, PARTITIONS)
    await kafka_broker.acreate_topic(dlq, 1)
    job = Job("counter_app.py", bootstrap, app_id, src, dst, str(tmp_path / "state"), "--instance", "bad-1",
              "--dlq", dlq, log_dir=tmp_path)
    rng = random.Random()
    producing = asyncio.ensure_future(
        produce_numbered(bootstrap, src, N, keys=KEYS, partitions=PARTITIONS, rate=25_000, bad_every=BAD_EVERY)
    )
    try:
        for _ in range(2):
            await job.start()
            await job.wait_for(lambda s: s.get("commits", 0) >= 1, timeout=60)
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            await job.kill()
        await producing
        await job.start()
        await job.wait_for(lambda s: "records" in s)
        await wait_drained(bootstrap, app_id, src, PARTITIONS)
        assert await job.stop() == 0, job.stderr_tail()
    finally:
        if job.proc is not None and job.proc.returncode is None:
            await job.kill()
        producing.cancel()
        await asyncio.wait([producing])
    rows = parse_outputs(await read_topic(bootstrap, dst))
    model = expected_outputs(N, KEYS)
    assert Counter(r[1] for r in rows) == Counter(range(N))
    assert all(model[n] == (k, c, s) for k, n, c, s in rows)
    _check_dead_letters(await read_topic(bootstrap, dlq), src)
    assert json.loads(json.dumps(job.status))["stopped"]
