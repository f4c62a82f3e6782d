"""Keyed timers and process: on_timer's key, state and Timer types; process flattens iterables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import reveal_type

from streamlib import KeyState, Sink, Source, Timer


def arm(e: tuple[str, int], state: KeyState[str, int]) -> None:
    state.timer_at(e[1] + 60_000)
    state.timer_after(timedelta(seconds=5), name="idle")
    reveal_type(state.cancel_timer("idle"))  # R: bool
    pending = state.timer()
    pending.time  # E: union-attr
    if pending is not None:
        reveal_type(pending.name)  # R: str
    state.timer_at(1.5)  # E: arg-type
    state.timer_after("soon")  # E: arg-type


def fired(key: str, state: KeyState[str, int], timer: Timer) -> tuple[str, int]:
    reveal_type(timer.time)  # R: int
    return (key, timer.time)


def lines(e: tuple[str, int], state: KeyState[str, int]) -> Iterator[str]:
    yield e[0]


def flush(key: str, state: KeyState[str, int], timer: Timer) -> list[str]:
    return [key]


async def main() -> None:
    keyed = Source.from_iterable([("a", 1)]).with_timestamps(lambda e: e[1]).key_by(lambda e: e[0])
    alerts = keyed.stateful_map(arm, on_timer=fired, ttl=timedelta(minutes=5))
    reveal_type(alerts)  # R: Source[tuple[str, int], None]
    reveal_type(keyed.process(lines, on_timer=flush))  # R: Source[str, None]
    keyed.stateful_map(arm, on_timer=lambda k, s, t: k + 1)  # E: operator
    keyed.stateful_map(arm, ttl=1.5)  # E: arg-type
    await alerts.run_with(Sink.collect())
