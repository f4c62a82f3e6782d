"""A KafkaApp over two co-partitioned topics and a global table, run as a subprocess by the crash test.

Orders (key: order id, value ``{"customer", "amount"}``) and payments (key:
order id, value ``{"paid"}``) are merged per task and joined by order id in a
``stateful_map`` (whichever comes first waits in the task's store); a complete
pair is enriched with the customer's name from a ``GlobalTable`` and emitted as
JSON ``[order id, customer name, amount, paid]``. Prints a JSON status line
every 0.2 s; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from streamlib import Flow, GraphBuilder, Merge, Source
from streamlib.kafka import (
    ConsumerSettings,
    GlobalTable,
    KafkaApp,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
)


def merged(*sources: Source[Any, Any]) -> Source[Any, None]:
    b = GraphBuilder()
    merge = b.add(Merge(len(sources)))
    for i, src in enumerate(sources):
        b.add(src) >> merge.inp(i)
    return b.to_source(merge.out(0))


async def main(args: argparse.Namespace) -> int:
    props: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    consumer = ConsumerSettings(args.bootstrap, key_serde=StrSerde(), value_serde=StrSerde(), properties=props)
    producer = ProducerSettings(args.bootstrap, key_serde=StrSerde(), value_serde=StrSerde(), linger_ms=2)
    customers: GlobalTable[str, str] = GlobalTable(args.customers, consumer)

    def join(rec: Any, state: Any) -> ProducerRecord[str, str] | None:
        pending = state.get({})
        pending[rec.topic] = json.loads(rec.value)
        if len(pending) < 2:
            state.set(pending)
            return None
        state.delete()
        order, payment = pending[args.orders], pending[args.payments]
        row = [rec.key, customers.get(order["customer"]), order["amount"], payment["paid"]]
        return ProducerRecord(args.output, json.dumps(row), key=rec.key)

    def topology(p: PartitionContext) -> Source[Any, None]:
        return (merged(p.source(args.orders), p.source(args.payments))
                .key_by(lambda r: r.key).stateful_map(join, store=p.store, name="pairs")
                .filter(lambda r: r is not None))

    app = KafkaApp(args.app_id, consumer=consumer, producer=producer, topics=[args.orders, args.payments],
                   topology=topology, checkpoint_interval=0.1, state_dir=args.state_dir, global_tables=[customers])
    control = app.run()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, control.stop)

    async def report() -> None:
        while True:
            m = control.metrics
            print(json.dumps({"records": m.records, "commits": m.commits, "recoveries": m.recoveries,
                              "assigned": sorted(f"{tp.topic}-{tp.partition}" for tp in m.assigned)}), flush=True)
            await asyncio.sleep(0.2)

    reporter = asyncio.ensure_future(report())
    try:
        await control.wait_stopped()
    finally:
        reporter.cancel()
        await asyncio.wait([reporter])
    print(json.dumps({"stopped": True, "commits": control.metrics.commits}), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    for name in ("bootstrap", "app_id", "orders", "payments", "customers", "output", "state_dir"):
        parser.add_argument(name)
    sys.exit(asyncio.run(main(parser.parse_args())))
