"""Sources with chosen chunk boundaries, for checking that chunking never changes results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from .._dsl.module import Module
from .._dsl.source import Source
from .._runtime.context import RunContext
from ..stage import PullSourceLogic, Stage

T = TypeVar("T")


class _ChunksLogic(PullSourceLogic):
    def __init__(self, chunks: Sequence[Sequence[Any]]) -> None:
        self.chunks = [list(c) for c in chunks]
        self.i = 0
        if not self.chunks:
            self.done = True

    def pull(self, n: int) -> list[Any]:
        if self.i >= len(self.chunks):
            self.done = True
            return []
        chunk = self.chunks[self.i]
        self.i += 1
        if self.i >= len(self.chunks):
            self.done = True
        return chunk


class _ChunksSource(Stage):
    inputs = 0
    outputs = 1
    name = "from_chunks"
    replayable = True

    def __init__(self, chunks: Sequence[Sequence[Any]]) -> None:
        self.chunks = chunks

    def materialize(self, ctx: RunContext) -> tuple[PullSourceLogic, None]:
        return _ChunksLogic(self.chunks), None


def source_from_chunks(chunks: Sequence[Sequence[T]]) -> Source[T, None]:
    """A Source emitting exactly these chunks, in order (empty chunks included).

    >>> await source_from_chunks([[1, 2], [], [3]]).run_with(Sink.collect())
    [1, 2, 3]
    """
    return Source(Module.of(_ChunksSource(chunks)))


def split_at(elements: Sequence[T], cuts: Sequence[int]) -> list[list[T]]:
    """Cut ``elements`` into chunks at the given positions (sorted, clipped, duplicates give empty chunks)."""
    out: list[list[T]] = []
    prev = 0
    for c in sorted(min(max(c, 0), len(elements)) for c in cuts):
        out.append(list(elements[prev:c]))
        prev = c
    out.append(list(elements[prev:]))
    return out
