"""A real single-node Apache Kafka broker for tests and local development.

The broker is the genuine Kafka server (KRaft mode, no ZooKeeper) run as a child JVM;
its jars are downloaded once from Maven Central into ``~/.cache/streamlib`` (or
``$STREAMLIB_CACHE``). Needs Java 11+ (17 recommended) and, for the first download,
Maven. See :mod:`streamlib.testing._kafka_broker` for the mechanism.

In code::

    from streamlib.testing.kafka import KafkaBroker

    with KafkaBroker() as broker:
        broker.create_topic("events", partitions=3)
        ...  # connect clients to broker.bootstrap_servers

In pytest, expose the session-scoped fixture from a ``conftest.py``::

    from streamlib.testing.kafka import kafka_broker  # noqa: F401

From a shell, a broker for local development (runs until Ctrl-C)::

    python -m streamlib.testing.kafka --port 9092
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from streamlib.testing._kafka_broker import (
    DEFAULT_VERSION,
    KafkaBroker,
    KafkaBrokerError,
    cache_dir,
    ensure_jars,
    find_java,
)

__all__ = [
    "DEFAULT_VERSION",
    "KafkaBroker",
    "KafkaBrokerError",
    "broker_or_local",
    "cache_dir",
    "ensure_jars",
    "find_java",
    "kafka_broker",
    "main",
]


@contextmanager
def broker_or_local(bootstrap_servers: str | None) -> Iterator[str]:
    """``bootstrap_servers`` when given, else a local broker started for the block (and stopped after).

    What a demo's ``--bootstrap`` option needs::

        with broker_or_local(args.bootstrap) as servers:
            asyncio.run(main(servers))
    """
    if bootstrap_servers:
        yield bootstrap_servers
        return
    print("Starting a local Kafka broker ...", flush=True)
    with KafkaBroker() as broker:
        yield broker.bootstrap_servers


def _kafka_broker() -> Iterator[KafkaBroker]:
    """One broker for the whole test session; a broker that cannot start fails the run."""
    with KafkaBroker() as broker:
        yield broker


_fixtures: dict[str, Callable[..., Any]] = {}


def __getattr__(name: str) -> Any:
    # The pytest fixture is built on first access so that importing this module does
    # not need (or import) pytest.
    if name == "kafka_broker":
        if name not in _fixtures:
            try:
                import pytest
            except ImportError as exc:
                raise ImportError("the kafka_broker fixture needs pytest installed") from exc
            _fixtures[name] = pytest.fixture(scope="session", name="kafka_broker")(_kafka_broker)
        return _fixtures[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """Run a local broker until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m streamlib.testing.kafka",
        description="Run a local single-node Apache Kafka broker (KRaft) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=None, help="client port (default: a free port)")
    parser.add_argument("--version", default=DEFAULT_VERSION,
                        help=f"Kafka version (default: {DEFAULT_VERSION})")
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    broker = KafkaBroker(port=args.port, version=args.version)
    try:
        print(f"Starting Kafka {args.version} ...", flush=True)
        started = time.monotonic()
        broker.start()
        print(
            f"Kafka {args.version} ready in {time.monotonic() - started:.1f}s\n"
            f"bootstrap servers: {broker.bootstrap_servers}\n"
            f"broker log: {broker.log_path}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while broker.running:
            time.sleep(0.5)
        print(f"Kafka broker exited unexpectedly; last lines of its log:\n{broker.log_tail()}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping Kafka ...", flush=True)
        return 0
    except KafkaBrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
        broker.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
