"""A stateful KafkaApp run as a subprocess by the crash tests: per-key running count and sum.

Input records: key ``k<j>``, value JSON ``{"n": <int>, "pad": "..."}``. For each
record the app emits JSON ``[key, n, count, sum]`` to the output topic, where
``count`` and ``sum`` are the key's running count and sum of ``n`` (state in the
partition store, changelogged). Prints a JSON status line every 0.2 s; SIGTERM
stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

import msgspec

from streamlib import Flow
from streamlib.kafka import (
    ConsumerSettings,
    DeadLetter,
    JsonSerde,
    KafkaApp,
    ProducerRecord,
    ProducerSettings,
)


class Event(msgspec.Struct):
    n: int
    pad: str = ""


def topology(p: Any) -> Flow[Any, Any, Any]:
    def step(rec: Any, state: Any) -> ProducerRecord[bytes, bytes]:
        count, total = state.get((0, 0))
        count, total = count + 1, total + rec.value.n
        state.set((count, total))
        return ProducerRecord(OUTPUT, json.dumps([rec.key.decode(), rec.value.n, count, total]).encode(), key=rec.key)

    return Flow().key_by(lambda r: r.key).stateful_map(step, store=p.store, name="counts")


OUTPUT = ""


async def main(args: argparse.Namespace) -> int:
    global OUTPUT
    OUTPUT = args.output
    props: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    if args.instance:
        props["group_instance_id"] = args.instance
    policy: Any = DeadLetter(args.dlq) if args.dlq else "fail"
    consumer = ConsumerSettings(args.bootstrap, value_serde=JsonSerde(Event), on_deserialization_error=policy,
                                properties=props)
    producer = ProducerSettings(args.bootstrap, linger_ms=2)
    app = KafkaApp(args.app_id, consumer=consumer, producer=producer, topics=args.input, topology=topology,
                   processing_guarantee=args.guarantee, checkpoint_interval=args.interval,
                   state_dir=args.state_dir, num_standby_replicas=args.standbys)
    control = app.run()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, control.stop)

    async def report() -> None:
        while True:
            m = control.metrics
            print(json.dumps({"records": m.records, "commits": m.commits, "full_restores": m.full_restores,
                              "partial_restores": m.partial_restores, "restored_records": m.restored_records,
                              "recoveries": m.recoveries, "dead_lettered": m.dead_lettered,
                              "assigned": sorted(tp.partition for tp in m.assigned),
                              "standby_tasks": control.registry.value("standby-tasks", app=args.app_id),
                              "standby_records": control.registry.value("standby-records-total", app=args.app_id),
                              "standby_lag": control.registry.value("standby-records-lag", app=args.app_id),
                              }), flush=True)
            await asyncio.sleep(0.2)

    reporter = asyncio.ensure_future(report())
    try:
        await control.wait_stopped()
    finally:
        reporter.cancel()
        await asyncio.wait([reporter])
    m = control.metrics
    print(json.dumps({"stopped": True, "records": m.records, "commits": m.commits,
                      "full_restores": m.full_restores, "restored_records": m.restored_records}), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("app_id")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("state_dir")
    parser.add_argument("--guarantee", default="exactly_once")
    parser.add_argument("--instance", default="")
    parser.add_argument("--dlq", default="")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--standbys", type=int, default=0)
    sys.exit(asyncio.run(main(parser.parse_args())))
