"""QueryableStore[K, V]: keys and values typed by the annotation."""

from __future__ import annotations

from typing import reveal_type

from streamlib import MemoryStore, QueryableStore


def main() -> None:
    counts: QueryableStore[str, int] = QueryableStore(MemoryStore(), "counts")
    reveal_type(counts.get("ann"))  # R: int | None
    reveal_type(counts.range("a", "b"))  # R: list[tuple[str, int]]
    reveal_type(counts.fetch("ann", 0, 60_000))  # R: list[tuple[int, int]]
    counts.get(3)  # E: arg-type
