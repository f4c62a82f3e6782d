"""More junctions: ``MergeSorted`` and ``Interleave`` (fan-in), ``Unzip`` and ``UnzipWith`` (fan-out).

Like the junctions in ``junctions.py`` each runs as its own task over channels
and never mutates a chunk it was given.

* ``MergeSorted`` keeps one buffer per input. Once every input that may still
  send has something buffered, everything up to the smallest of their *last*
  buffered keys can be emitted: no input can later send anything smaller. That
  prefix of every buffer is merged in one go (``heapq.merge``), so sorted runs
  move a chunk at a time, not an element at a time. An input whose elements go
  down fails the stream, naming the input and the two elements.
* ``Interleave`` takes ``segment_size`` elements from input 0, then from input
  1, and so on, splitting chunks where a segment ends.
* ``UnzipWith`` applies ``f`` to each element of a chunk and sends the i-th
  values, as one chunk, to output i; it is as fast as the slowest output and
  goes on while any output is live.

These fan-in junctions do not forward watermarks or checkpoint barriers (an
order-changing merge cannot place them); use ``Merge`` for event-time streams.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage
from .junctions import _FanIn, _FanOut, _put_signal


class MergeSorted(_FanIn):
    """Merge ``n`` inputs sorted by ``key`` into one sorted stream.

    Emits when every input that has not completed has an element (the smallest
    goes first); backpressures when downstream does; completes when all inputs
    completed; fails when an input is not sorted.
    """

    def __init__(self, n: int = 2, key: Callable[[Any], Any] | None = None) -> None:
        super().__init__(n)
        self.key = key

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _MergeSortedLogic(self.key, ctx.max_chunk), None


def _ident(x: Any) -> Any:
    return x


class _MergeSortedLogic(AsyncLogic):
    def __init__(self, key: Callable[[Any], Any] | None, max_chunk: int) -> None:
        self.key = key or _ident
        self.max_chunk = max_chunk
        #: Per input: the key and element last read (to check the input is sorted).
        self.last: dict[int, tuple[Any, Any]] = {}

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        key = self.key
        n = len(inlets)
        bufs: list[list[Any]] = [[] for _ in range(n)]
        keys: list[list[Any]] = [[] for _ in range(n)]
        ended = [False] * n
        while True:
            for i, ch in enumerate(inlets):
                while not bufs[i] and not ended[i]:
                    item = await ch.get()
                    if type(item) is list:
                        self._append(i, item, bufs[i], keys[i])
                    elif item is END:
                        ended[i] = True
                    elif isinstance(item, Failure):
                        raise item.error
            if not any(bufs):
                return
            open_inputs = [i for i in range(n) if not ended[i]]
            if open_inputs:
                threshold = min(keys[i][-1] for i in open_inputs)
                cuts = [_count_le(keys[i], threshold) for i in range(n)]
            else:
                cuts = [len(b) for b in bufs]
            runs = []
            for i, cut in enumerate(cuts):
                if cut:
                    runs.append(list(zip(keys[i][:cut], bufs[i][:cut])))
                    del bufs[i][:cut], keys[i][:cut]
            merged = [x for _k, x in heapq.merge(*runs, key=_first)] if len(runs) > 1 else [x for _k, x in runs[0]]
            for k in range(0, len(merged), self.max_chunk):
                await out.put(merged[k : k + self.max_chunk])

    def _append(self, i: int, chunk: list[Any], buf: list[Any], ks: list[Any]) -> None:
        key = self.key
        prev_k, prev_x = self.last.get(i, (_NO_KEY, None))
        for x in chunk:
            k = key(x)
            if prev_k is not _NO_KEY and k < prev_k:
                raise ValueError(f"{self.stage_name}: input {i} is not sorted: {x!r} came after {prev_x!r}")
            buf.append(x)
            ks.append(k)
            prev_k, prev_x = k, x
        self.last[i] = (prev_k, prev_x)


_NO_KEY: Any = object()


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def _count_le(ks: list[Any], threshold: Any) -> int:
    """How many leading keys (sorted) are <= ``threshold``."""
    lo, hi = 0, len(ks)
    while lo < hi:
        mid = (lo + hi) // 2
        if threshold < ks[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


class Interleave(_FanIn):
    """Take ``segment_size`` elements from each of ``n`` inputs in turn.

    Emits when the input whose turn it is has an element; backpressures when
    downstream does; completes when every input completed (with
    ``eager_close``: as soon as the input whose turn it is has completed). An
    input that completes mid-segment ends its turn; the next starts a fresh one.
    """

    def __init__(self, n: int, segment_size: int, eager_close: bool = False) -> None:
        super().__init__(n)
        if not isinstance(segment_size, int) or segment_size < 1:
            raise ValueError(f"Interleave needs segment_size >= 1, got {segment_size!r}")
        self.segment_size = segment_size
        self.eager_close = eager_close

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _InterleaveLogic(self.segment_size, self.eager_close), None

    def __repr__(self) -> str:
        return f"Interleave({self.n}, {self.segment_size})"


class _InterleaveLogic(AsyncLogic):
    def __init__(self, segment_size: int, eager_close: bool) -> None:
        self.segment_size = segment_size
        self.eager_close = eager_close

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        size = self.segment_size
        live = list(range(len(inlets)))
        bufs: list[list[Any]] = [[] for _ in inlets]
        pos = 0  # index into ``live`` of the current input
        taken = 0  # elements of the current segment already emitted
        while live:
            i = live[pos]
            buf = bufs[i]
            if not buf:
                item = await inlets[i].get()
                if type(item) is list:
                    buf.extend(item)
                    continue
                if isinstance(item, Failure):
                    raise item.error
                if item is END:
                    if self.eager_close:
                        return
                    live.pop(pos)
                    taken = 0
                    if live:
                        pos %= len(live)
                continue
            k = min(size - taken, len(buf))
            chunk = buf[:k]
            del buf[:k]
            await out.put(chunk)
            taken += k
            if taken == size:
                taken = 0
                pos = (pos + 1) % len(live)


class UnzipWith(_FanOut):
    """Split each element into ``n`` values with ``f``; value i goes to output i.

    Emits when every live output has room; backpressures when any live output
    does; completes when upstream completes; goes on while any output is live.
    ``f`` returning the wrong number of values fails the stream, naming the element.
    """

    def __init__(self, n: int, f: Callable[[Any], Sequence[Any]]) -> None:
        super().__init__(n)
        if not callable(f):
            raise TypeError(f"UnzipWith needs a callable f, got {f!r}")
        self.f = f

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _UnzipLogic(self.n, self.f), None


class Unzip(UnzipWith):
    """Split pairs (or n-tuples): element ``(a, b)`` sends ``a`` to output 0 and ``b`` to output 1."""

    def __init__(self, n: int = 2) -> None:
        super().__init__(n, _ident)

    def __repr__(self) -> str:
        return f"Unzip({self.n})"


class _UnzipLogic(AsyncLogic):
    def __init__(self, n: int, f: Callable[[Any], Sequence[Any]]) -> None:
        self.n = n
        self.f = f

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        n, f = self.n, self.f
        dead = [False] * n
        while not all(dead):
            item = await inlet.get()
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            if not isinstance(item, list):
                for i, o in enumerate(outlets):
                    if not dead[i]:
                        await _put_signal(o, item)
                continue
            rows: list[Sequence[Any]] = []
            error: Exception | None = None
            try:
                for x in item:
                    row = f(x)
                    if len(row) != n:
                        raise ValueError(
                            f"{self.stage_name}: {len(row)} values for element {x!r}, expected {n}"
                        )
                    rows.append(row)
            except Exception as exc:
                error = exc  # the rows before the failing element are still delivered
            for i in range(n):
                if rows and not dead[i]:
                    try:
                        await outlets[i].put([r[i] for r in rows])
                    except DownstreamCancelled:
                        dead[i] = True
            if error is not None:
                raise error


def fan_in_with(junction: Stage, other: Any) -> Any:
    """A module: ``junction`` with input 0 open (the inlet) and input 1 fed by the Source module ``other``."""
    from .._dsl.module import Module
    from .._runtime.materializer import Edge

    if other.outlet is None or other.inlet is not None:
        raise TypeError(f"{junction!r}: the other side must be a Source")
    n = len(other.stages)
    stages = other.stages + (junction,)
    edges = other.edges + (Edge(other.outlet[0], other.outlet[1], n, 1),)
    return Module(stages, edges, (n, 0), (n, 0), lambda mats: other.mat(mats[:n]))
