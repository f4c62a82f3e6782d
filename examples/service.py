"""A Kafka service run by the ``streamlib`` command: account balances from payments, exactly once.

The service is ``make_app`` below; in production it is started by one command,
from this directory (settings as options or ``STREAMLIB_*`` variables, see
docs/operations.md)::

    streamlib run service:make_app --bootstrap-servers kafka:9092 --state-dir /var/lib/balances --workers 2

``payments`` (JSON ``{"account": ..., "cents": ...}``, keyed by account) ->
``balances``: each account's balance after each payment, kept in RocksDB,
changelogged, committed with the outputs in one transaction per partition.

Run as a script, this file demonstrates it end to end::

    python examples/service.py [--bootstrap HOST:PORT] [--payments 20000]

It starts a local broker unless ``--bootstrap`` is given (Java 17+), produces
the payments, starts ``streamlib run service:make_app --workers 2`` (two worker
processes sharing the partitions), waits until the service has committed every
payment, stops it with SIGTERM (it commits and exits 0), and checks every
balance a ``read_committed`` reader sees against plain Python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import msgspec
from aiokafka.errors import KafkaError

from streamlib import Flow, KeyState, RunSettings
from streamlib.kafka import (
    ConsumerSettings,
    JsonSerde,
    KafkaApp,
    KafkaRecord,
    PartitionContext,
    ProducerRecord,
    ProducerSettings,
    StrSerde,
)


class Payment(msgspec.Struct):
    account: str
    cents: int


class Balance(msgspec.Struct):
    account: str
    payments: int
    cents: int


#: Topic names: ``<prefix>-payments`` and ``<prefix>-balances``; the application id is ``<prefix>-balances-service``.
PREFIX = os.environ.get("BALANCES_SERVICE_PREFIX", "bank")


def topology(p: PartitionContext) -> Flow[KafkaRecord[str, Payment], ProducerRecord[str, Balance], None]:
    output = f"{PREFIX}-balances"

    def apply(record: KafkaRecord[str, Payment], state: KeyState[str, tuple[int, int]]) -> ProducerRecord[str, Balance]:
        payment = record.value
        assert payment is not None
        count, cents = state.get((0, 0)) or (0, 0)
        count, cents = count + 1, cents + payment.cents
        state.set((count, cents))
        return ProducerRecord(output, Balance(payment.account, count, cents), key=payment.account)

    records: Flow[KafkaRecord[str, Payment], KafkaRecord[str, Payment], None] = Flow()
    return records.key_by(lambda r: r.key or "").stateful_map(apply, store=p.store, name="balances",
                                                               state_type=tuple[int, int])


def make_app(settings: RunSettings) -> KafkaApp:
    """The service: ``streamlib run`` calls this with its settings, then applies them to the app."""
    servers = settings.bootstrap_servers or "localhost:9092"
    return KafkaApp(
        f"{PREFIX}-balances-service",
        consumer=ConsumerSettings(servers, key_serde=StrSerde(), value_serde=JsonSerde(Payment)),
        producer=ProducerSettings(servers, key_serde=StrSerde(), value_serde=JsonSerde(Balance)),
        topics=f"{PREFIX}-payments",
        topology=topology,
        processing_guarantee="exactly_once",
        state_dir=settings.state_dir or "balances-state",
    )


# -- the demonstration ------------------------------------------------------------------------


def make_payments(n: int, seed: int = 11) -> list[Payment]:
    rng = random.Random(seed)
    return [Payment(f"account-{rng.randrange(300)}", rng.randrange(-20_000, 50_000)) for _ in range(n)]


async def demo(bootstrap: str, n: int, prefix: str, state_dir: str) -> bool:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streamlib.kafka.testing import end_offsets, read_topic

    payments_topic, balances_topic, group = f"{prefix}-payments", f"{prefix}-balances", f"{prefix}-balances-service"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(payments_topic, 4, 1), NewTopic(balances_topic, 4, 1)])
        payments = make_payments(n)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(payments_topic, msgspec.json.encode(p), key=p.account.encode())
                       for p in payments]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        print(f"Produced {n:,} payments to {payments_topic}")

        command = [sys.executable, "-m", "streamlib", "run", "service:make_app", "--workers", "2",
                   "--bootstrap-servers", bootstrap, "--state-dir", state_dir, "--log-level", "WARNING"]
        print("Starting: streamlib run service:make_app --workers 2 ...")
        service = await asyncio.create_subprocess_exec(
            *command, cwd=Path(__file__).resolve().parent,
            env={**os.environ, "BALANCES_SERVICE_PREFIX": prefix}, stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            ends = await end_offsets(bootstrap, payments_topic)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while True:  # until the service committed every payment (committed offsets at the end)
                try:
                    offsets = await admin.list_consumer_group_offsets(group)
                except KafkaError as err:  # e.g. the group's coordinator is still being elected
                    if not err.retriable:
                        raise
                    offsets = {}
                if all(offsets.get(tp) is not None and offsets[tp].offset >= end for tp, end in ends.items()):
                    break
                if service.returncode is not None or loop.time() > deadline:
                    print(f"The service did not process the payments (exit code {service.returncode})")
                    return False
                await asyncio.sleep(0.2)
            service.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(service.wait(), 60)
        finally:
            if service.returncode is None:
                service.kill()
                await service.wait()
        print(f"Sent SIGTERM: the service committed, closed and exited with code {code}")
    finally:
        await admin.close()

    balances: dict[str, list[Balance]] = {}
    for rec in await read_topic(bootstrap, balances_topic, isolation_level="read_committed"):
        b = msgspec.json.decode(rec.value, type=Balance)
        balances.setdefault(b.account, []).append(b)
    expected: dict[str, list[Balance]] = {}
    for p in payments:
        seq = expected.setdefault(p.account, [])
        last = seq[-1] if seq else Balance(p.account, 0, 0)
        seq.append(Balance(p.account, last.payments + 1, last.cents + p.cents))
    ok = code == 0 and balances == expected
    for b in sorted((seq[-1] for seq in expected.values()), key=lambda b: -b.cents)[:3]:
        print(f"  {b.account}: {b.payments} payments, balance {b.cents / 100:,.2f}")
    print("Check against plain Python: " + ("same results" if ok else "MISMATCH"))
    return ok


if __name__ == "__main__":
    from streamlib.testing.kafka import broker_or_local

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: start a local broker)")
    parser.add_argument("--payments", type=int, default=20_000)
    args = parser.parse_args()
    with broker_or_local(args.bootstrap) as servers, tempfile.TemporaryDirectory() as state:
        good = asyncio.run(demo(servers, args.payments, f"example-{uuid.uuid4().hex[:8]}", state))
    raise SystemExit(0 if good else 1)
