"""At-least-once pipeline run as a subprocess by the crash tests.

Committable source -> copy each record to the output topic -> committable sink
(produce, then commit the offset once the record is acknowledged). Prints a JSON
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

from streamlib import Keep
from streamlib.kafka import (
    CommitterSettings,
    ConsumerSettings,
    KafkaSink,
    KafkaSource,
    ProducerRecord,
    ProducerSettings,
)


async def main(args: argparse.Namespace) -> int:
    props: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    if args.instance:
        props["group_instance_id"] = args.instance
    consumer = ConsumerSettings(args.bootstrap, group_id=args.group, properties=props)
    producer = ProducerSettings(args.bootstrap, linger_ms=2)
    output = args.output

    def copy(rec: Any) -> ProducerRecord[bytes, bytes]:
        return ProducerRecord(output, rec.value, key=rec.key, partition=rec.partition,
                              passthrough=rec.committable_offset)

    control, done = (
        KafkaSource.committable(consumer, args.input)
        .map(copy)
        .to_mat(KafkaSink.committable(producer, CommitterSettings(max_batch=2000, max_interval=0.1)), Keep.both)
        .run()
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, control.stop)

    async def report() -> None:
        while True:
            print(json.dumps({"records": control.metrics.records,
                              "assigned": sorted(tp.partition for tp in control.assignment)}), flush=True)
            await asyncio.sleep(0.2)

    reporter = asyncio.ensure_future(report())
    try:
        await done
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
    parser.add_argument("group")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--instance", default="")
    sys.exit(asyncio.run(main(parser.parse_args())))
