"""A KafkaApp with event-time timers, run as a subprocess by the timer crash test.

Input records: key ``k<j>``, value JSON ``{"n": <int>, ...}``; ``n`` is the
record's event time (ms). Per key, elements are summed into buckets of
``BUCKET`` ms of event time, each with a timer at the bucket's end; when the
watermark (``max n`` seen by the partition) reaches it, the timer emits JSON
``[key, bucket_end, count, sum]`` to the output topic and forgets the bucket.
Values and timers live in the partition store (changelogged). Prints a JSON
status line every 0.2 s; SIGTERM stops it gracefully.
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

from streamlib import Flow, KeyState, Timer
from streamlib.kafka import ConsumerSettings, JsonSerde, KafkaApp, ProducerRecord, ProducerSettings

BUCKET = 50
OUTPUT = ""


class Event(msgspec.Struct):
    n: int
    pad: str = ""


def add(rec: Any, state: KeyState[bytes, dict[str, list[int]]]) -> None:
    n = rec.value.n
    end = (n // BUCKET + 1) * BUCKET
    buckets = state.get({})
    count, total = buckets.get(str(end), [0, 0])
    buckets[str(end)] = [count + 1, total + n]
    state.set(buckets)
    state.timer_at(end, name=str(end))


def fired(key: bytes, state: KeyState[bytes, dict[str, list[int]]], timer: Timer) -> ProducerRecord[bytes, bytes]:
    buckets = state.get({})
    count, total = buckets.pop(str(timer.time))
    if buckets:
        state.set(buckets)
    else:
        state.delete()
    return ProducerRecord(OUTPUT, json.dumps([key.decode(), timer.time, count, total]).encode(), key=key)


def topology(p: Any) -> Flow[Any, Any, Any]:
    return (
        Flow()
        .with_timestamps(lambda r: r.value.n)
        .key_by(lambda r: r.key)
        .stateful_map(add, on_timer=fired, store=p.store, name="buckets")
    )


async def main(args: argparse.Namespace) -> int:
    global OUTPUT
    OUTPUT = args.output
    props: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    if args.instance:
        props["group_instance_id"] = args.instance
    consumer = ConsumerSettings(args.bootstrap, value_serde=JsonSerde(Event), properties=props)
    producer = ProducerSettings(args.bootstrap, linger_ms=2)
    app = KafkaApp(args.app_id, consumer=consumer, producer=producer, topics=args.input, topology=topology,
                   processing_guarantee="exactly_once", checkpoint_interval=args.interval,
                   state_dir=args.state_dir)
    control = app.run()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, control.stop)

    async def report() -> None:
        while True:
            m = control.metrics
            print(json.dumps({"records": m.records, "commits": m.commits, "full_restores": m.full_restores,
                              "restored_records": m.restored_records}), flush=True)
            await asyncio.sleep(0.2)

    reporter = asyncio.ensure_future(report())
    try:
        await control.wait_stopped()
    finally:
        reporter.cancel()
        await asyncio.wait([reporter])
    print(json.dumps({"stopped": True, "records": control.metrics.records}), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("app_id")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("state_dir")
    parser.add_argument("--instance", default="")
    parser.add_argument("--interval", type=float, default=0.1)
    sys.exit(asyncio.run(main(parser.parse_args())))
