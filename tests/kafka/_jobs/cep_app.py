"""A KafkaApp matching an absence pattern in event time, run as a subprocess by the CEP crash test.

Input records as for ``timer_app.py`` (key ``k<j>``, value JSON ``{"n": <int>}``,
``n`` the event time in ms). Per key: a *reset* (``is_reset(n)``) not followed by
a *login* (``is_login(n)``) within ``WITHIN`` ms alerts when the watermark closes
the reset's window, with JSON ``[key, reset_n]`` on the output topic. Partial
matches live in the partition store (changelogged). The process scaffolding
(status lines, SIGTERM) is ``timer_app.py``'s, with this topology.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

import timer_app

from streamlib import Flow
from streamlib.cep import Pattern
from streamlib.kafka import ProducerRecord

WITHIN = 400


def is_reset(n: int) -> bool:
    return n % 11 == 0


def is_login(n: int) -> bool:
    return n % 29 == 0


PATTERN = (
    Pattern.begin("reset").where(lambda e: is_reset(e[1]))
    .not_followed_by("login").where(lambda e: is_login(e[1]))
    .within(WITHIN)
)


def alert(m: Any) -> ProducerRecord[bytes, bytes]:
    key, n = m.events["reset"][0]
    return ProducerRecord(timer_app.OUTPUT, json.dumps([key, n]).encode(), key=key.encode())


def topology(p: Any) -> Flow[Any, Any, Any]:
    return (
        Flow()
        .map(lambda r: (r.key.decode(), r.value.n))
        .with_timestamps(lambda e: e[1])
        .key_by(lambda e: e[0])
        .match(PATTERN, store=p.store, event_type=tuple[str, int], name="absence")
        .map(alert)
    )


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
    timer_app.topology = topology  # type: ignore[assignment]
    sys.exit(asyncio.run(timer_app.main(parser.parse_args())))
