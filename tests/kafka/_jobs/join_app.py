"""A KafkaApp over two co-partitioned topics and a global table, run as a subprocess by the crash test.

Orders (key: order id, value ``{"id", "customer", "amount", "ts"}``) and payments
(key: order id, value ``{"order", "paid", "ts"}``), both with record time ``ts``,
are joined per task in a stream-stream join (inner, a payment 0 to 10 minutes
after its order; both buffers in the task's store, changelogged), then with the
customer names of a ``GlobalTable`` (left), and emitted as JSON
``[order id, customer name, amount, paid]``. Prints a JSON status line every
0.2 s; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from datetime import timedelta
from typing import Any

import msgspec

from streamlib import JoinWindows, Source
from streamlib.kafka import (
    ConsumerSettings,
    GlobalTable,
    KafkaApp,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
)


class Order(msgspec.Struct):
    id: str
    customer: str
    amount: int
    ts: int


class Payment(msgspec.Struct):
    order: str
    paid: int
    ts: int


async def main(args: argparse.Namespace) -> int:
    props: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    consumer = ConsumerSettings(args.bootstrap, key_serde=StrSerde(), value_serde=StrSerde(), properties=props)
    producer = ProducerSettings(args.bootstrap, key_serde=StrSerde(), value_serde=StrSerde(), linger_ms=2)
    customers: GlobalTable[str, str] = GlobalTable(args.customers, consumer)

    def topology(p: PartitionContext) -> Source[Any, None]:
        orders = p.source(args.orders).map(lambda r: msgspec.json.decode(r.value, type=Order))
        payments = p.source(args.payments).map(lambda r: msgspec.json.decode(r.value, type=Payment))
        pairs = orders.with_timestamps("ts").join(
            payments.with_timestamps("ts"), key_a="id", key_b="order",
            within=JoinWindows(before=0, after=timedelta(minutes=10)), combine=lambda o, pay: (o, pay),
            store=p.store, left_type=Order, right_type=Payment, name="pairs",
        )
        return pairs.join(customers, key=lambda pair: pair[0].customer, how="left", combine=lambda pair, name: (
            ProducerRecord(args.output, json.dumps([pair[0].id, name, pair[0].amount, pair[1].paid]), key=pair[0].id)
        ))

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
