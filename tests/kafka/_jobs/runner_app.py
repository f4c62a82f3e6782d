"""The counter job (per-key running count and sum, as ``counter_app.py``) as an app for ``streamlib run``.

``streamlib run runner_app:make_app`` (from this directory) with the topics and
guarantee in ``RUNNER_JOB_APP_ID``, ``RUNNER_JOB_INPUT``, ``RUNNER_JOB_OUTPUT``
and ``RUNNER_JOB_GUARANTEE`` (``RUNNER_JOB_HANG=1``: processing a record never finishes, so
a stop cannot finish either; each partition logs ``event: hanging`` when its first record hangs); servers and state directory come from the runner
settings (``--bootstrap-servers``, ``--state-dir``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import msgspec

from streamlib import Flow, RunSettings
from streamlib.kafka import ConsumerSettings, JsonSerde, KafkaApp, PartitionContext, ProducerRecord, ProducerSettings


class Event(msgspec.Struct):
    n: int
    pad: str = ""


def make_app(settings: RunSettings) -> KafkaApp:
    output = os.environ["RUNNER_JOB_OUTPUT"]
    hang = os.environ.get("RUNNER_JOB_HANG") == "1"

    def topology(p: PartitionContext) -> Flow[Any, Any, Any]:
        def step(rec: Any, state: Any) -> ProducerRecord[bytes, bytes]:
            count, total = state.get((0, 0))
            count, total = count + 1, total + rec.value.n
            state.set((count, total))
            return ProducerRecord(output, json.dumps([rec.key.decode(), rec.value.n, count, total]).encode(),
                                  key=rec.key)

        async def never(rec: Any) -> Any:
            logging.getLogger("runner_job").info("%s-%d hangs", p.topic, p.partition, extra={"event": "hanging"})
            await asyncio.Event().wait()
            return rec

        records: Flow[Any, Any, Any] = Flow().map_async(1, never) if hang else Flow()
        return records.key_by(lambda r: r.key).stateful_map(step, store=p.store, name="counts")

    servers = settings.bootstrap_servers or "localhost:9092"
    return KafkaApp(
        os.environ["RUNNER_JOB_APP_ID"],
        consumer=ConsumerSettings(servers, value_serde=JsonSerde(Event), properties={"heartbeat_interval_ms": 500}),
        producer=ProducerSettings(servers, linger_ms=2),
        topics=os.environ["RUNNER_JOB_INPUT"],
        topology=topology,
        processing_guarantee=os.environ.get("RUNNER_JOB_GUARANTEE", "exactly_once"),  # type: ignore[arg-type]
        checkpoint_interval=0.1,
        state_dir=settings.state_dir,
    )
