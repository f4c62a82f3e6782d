"""KeyState.get: with a default the value's own type, without one possibly None."""

from __future__ import annotations

from typing import reveal_type

from streamlib import KeyState, Sink, Source


def count(e: str, state: KeyState[str, int]) -> tuple[str, int]:
    n = state.get(0) + 1
    state.set(n)
    return (state.key, n)


def peek(state: KeyState[str, int]) -> None:
    reveal_type(state.get(0))  # R: int
    reveal_type(state.get())  # R: int | None
    state.get() + 1  # E: operator
    state.get("zero")  # E: call-overload
    state.set("one")  # E: arg-type


async def main() -> None:
    counts = Source.from_iterable("abca").key_by(str).stateful_map(count)
    reveal_type(counts)  # R: Source[tuple[str, int], None]
    reveal_type(await counts.run_with(Sink.collect()))  # R: list[tuple[str, int]]
