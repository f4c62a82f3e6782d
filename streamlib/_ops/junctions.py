"""Fan-out and fan-in junctions. Each runs as its own task over channels.

Fan-out: ``Broadcast`` (every output gets every element; as slow as the slowest
output), ``Balance`` (each chunk to an output with room), ``Partition`` (each
element to the output a function picks). Fan-in: ``Merge`` (whatever arrives
first), ``Zip``/``ZipWith`` (one from each input), ``Concat`` (inputs in turn).
Chunks are shared between outputs, never copied: logics never mutate the chunk
they are given.

A junction waiting for input also wakes when its consumers cancel (it parks one
future as its inlets' getter and its outlets' putter: every channel has one
producer and one consumer), so a cancellation reaches an idle upstream at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .._runtime.channel import Channel, DownstreamCancelled, wait_any_room
from .._runtime.context import RunContext
from .._runtime.signals import END, Barrier, Failure, Signal, Watermark
from ..stage import AsyncLogic, Stage


async def _wait(inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
    """Wait until an inlet has an item, or an outlet's consumer took an item or cancelled."""
    if any(ch._items for ch in inlets) or any(o.cancelled for o in outlets):
        return
    fut = asyncio.get_running_loop().create_future()
    for ch in inlets:
        ch._getter = fut
    for o in outlets:
        o._putter = fut
    try:
        await fut
    finally:
        for ch in inlets:
            if ch._getter is fut:
                ch._getter = None
        for o in outlets:
            if o._putter is fut:
                o._putter = None


async def _next_item(inlet: Channel, outlets: Sequence[Channel]) -> list[Any] | Signal:
    """The next item of ``inlet``; :class:`DownstreamCancelled` once every outlet has cancelled."""
    while True:
        item = inlet.get_nowait()
        if item is not None:
            return item
        live = [o for o in outlets if not o.cancelled]
        if not live:
            raise DownstreamCancelled(", ".join(o.name for o in outlets))
        await _wait((inlet,), live)


class _Junction(Stage):
    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"{type(self).__name__} needs at least one port, got {n}")
        self.n = n

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n})"


class _FanOut(_Junction):
    inputs = 1

    @property
    def outputs(self) -> int:  # type: ignore[override]
        return self.n


class _FanIn(_Junction):
    outputs = 1

    @property
    def inputs(self) -> int:  # type: ignore[override]
        return self.n


class Broadcast(_FanOut):
    """Emit every element to each of ``n`` outputs.

    Emits when every live output has room (backpressures on the slowest);
    completes when upstream does; cancels when all outputs cancelled.
    """

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _BroadcastLogic(), None


class _BroadcastLogic(AsyncLogic):
    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        live = list(outlets)
        while live:
            item = await _next_item(inlet, live)
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            live = [o for o in live if not o.cancelled]
            for out in list(live):
                try:
                    await out.put(item)
                except DownstreamCancelled:
                    live.remove(out)


class Balance(_FanOut):
    """Emit each chunk to one of ``n`` outputs that has room (work distribution).

    Emits when any live output has room; completes when upstream does;
    cancels when all outputs cancelled.
    """

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _BalanceLogic(), None


class _BalanceLogic(AsyncLogic):
    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        live = list(outlets)
        turn = 0
        while live:
            item = await _next_item(inlet, live)
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            if not isinstance(item, list):
                for out in live:
                    await _put_signal(out, item)
                continue
            while live:
                await wait_any_room(live)
                live = [o for o in live if not o.cancelled]
                k = len(live)
                placed = False
                for i in range(k):
                    out = live[(turn + i) % k]
                    if out.has_room():
                        await out.put(item)
                        turn = (turn + i + 1) % k
                        placed = True
                        break
                if placed:
                    break


async def _put_signal(out: Channel, sig: Signal) -> None:
    try:
        await out.put(sig)
    except DownstreamCancelled:
        pass


class Partition(_FanOut):
    """Emit each element to output ``partitioner(element)`` (0 to ``n - 1``).

    Emits when the chosen outputs have room; an index out of range fails the
    stream naming the element's index; completes when upstream does.
    """

    def __init__(self, n: int, partitioner: Callable[[Any], int]) -> None:
        super().__init__(n)
        self.partitioner = partitioner

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _PartitionLogic(self.n, self.partitioner), None


class _PartitionLogic(AsyncLogic):
    def __init__(self, n: int, partitioner: Callable[[Any], int]) -> None:
        self.n = n
        self.partitioner = partitioner

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        n, f = self.n, self.partitioner
        dead = [False] * n
        while not all(dead):
            item = await _next_item(inlet, [o for o, d in zip(outlets, dead) if not d])
            dead = [d or o.cancelled for o, d in zip(outlets, dead)]
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            if not isinstance(item, list):
                for out in outlets:
                    await _put_signal(out, item)
                continue
            parts: list[list[Any]] = [[] for _ in range(n)]
            error: Exception | None = None
            try:
                for x in item:
                    i = f(x)
                    if not 0 <= i < n:
                        raise IndexError(f"partitioner returned {i!r} for {x!r}; outputs are 0..{n - 1}")
                    parts[i].append(x)
            except Exception as exc:
                error = exc  # the elements before the failing one are still delivered
            for i, part in enumerate(parts):
                if part and not dead[i]:
                    try:
                        await outlets[i].put(part)
                    except DownstreamCancelled:
                        dead[i] = True
            if error is not None:
                raise error


class Merge(_FanIn):
    """Emit elements from ``n`` inputs as they arrive.

    Emits when any input has elements; completes when all inputs completed;
    fails when any input fails. Watermarks: the minimum over live inputs.
    Checkpoint barriers are aligned: an input that delivered ``Barrier(id)`` is
    not read until every live input with a barrier source upstream delivered it
    too, then ``Barrier(id)`` is emitted once (so state downstream is staged at
    one consistent cut of all inputs).
    """

    def check_blueprint(self, stages: Sequence[Stage], edges: Sequence[Any], index: int) -> None:
        """Note which inputs have a barrier source upstream (their barriers are aligned)."""
        self._plans = getattr(self, "_plans", [])
        self._plans.append(_barrier_inputs(stages, edges, index))

    def _carriers(self) -> set[int] | None:
        plans = getattr(self, "_plans", None)
        return plans.pop(0) if plans else None

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _MergeLogic(None, self._carriers()), None


class MergePreferred(Merge):
    """Like ``Merge`` but input 0 is taken first whenever it has elements."""

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _MergeLogic(0, self._carriers()), None


def _barrier_inputs(stages: Sequence[Stage], edges: Sequence[Any], index: int) -> set[int]:
    """The input ports of stage ``index`` with a stage emitting barriers upstream."""
    preds: dict[int, list[int]] = {}
    for e in edges:
        preds.setdefault(e.dst, []).append(e.src)
    found = set()
    for e in edges:
        if e.dst != index:
            continue
        seen = {e.src}
        todo = [e.src]
        while todo:
            i = todo.pop()
            if getattr(stages[i], "emits_barriers", False):
                found.add(e.dst_port)
                break
            for j in preds.get(i, ()):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
    return found


class _MergeLogic(AsyncLogic):
    def __init__(self, preferred: int | None, carriers: set[int] | None = None) -> None:
        self.preferred = preferred
        # Inputs whose barriers are aligned; unknown (None): those that delivered one so far.
        self.carriers = set() if carriers is None else set(carriers)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        live = list(range(len(inlets)))
        marks: dict[int, int] = {}
        emitted_mark: int | None = None
        carriers = self.carriers
        arrived: dict[int, set[int]] = {}  # barrier id -> inputs that delivered it (blocked until aligned)
        blocked: set[int] = set()
        start = 0
        while live:
            if out.cancelled:
                raise DownstreamCancelled(out.name)
            readable = [i for i in live if i not in blocked]
            if not any(inlets[i]._items for i in readable):
                await _wait([inlets[i] for i in readable], (out,))
                continue
            k = len(readable)
            order = readable
            if self.preferred is None:
                order = [readable[(start + j) % k] for j in range(k)]
                start = (start + 1) % k
            for i in order:
                ch = inlets[i]
                item = ch.get_nowait()
                if item is None:
                    continue
                if type(item) is list:
                    await out.put(item)
                elif item is END:
                    marks.pop(i, None)
                    live.remove(i)
                    carriers.discard(i)
                    for cid in sorted(arrived):
                        await self._release_if_aligned(cid, arrived, blocked, carriers, out)
                    break
                elif isinstance(item, Failure):
                    raise item.error
                elif isinstance(item, Watermark):
                    marks[i] = item.time_ms
                    if len(marks) == len(live):
                        low = min(marks.values())
                        if emitted_mark is None or low > emitted_mark:
                            emitted_mark = low
                            await out.put(Watermark(low))
                elif isinstance(item, Barrier):
                    carriers.add(i)
                    arrived.setdefault(item.checkpoint_id, set()).add(i)
                    blocked.add(i)
                    await self._release_if_aligned(item.checkpoint_id, arrived, blocked, carriers, out)
                    break  # the readable inputs changed
                else:
                    await out.put(item)
                if self.preferred is not None:
                    break

    @staticmethod
    async def _release_if_aligned(
        cid: int, arrived: dict[int, set[int]], blocked: set[int], carriers: set[int], out: Channel
    ) -> None:
        got = arrived.get(cid)
        if got is None or not carriers <= got:
            return
        del arrived[cid]
        blocked.difference_update(got)
        await out.put(Barrier(cid))


class ZipWith(_FanIn):
    """Combine one element from each of ``n`` inputs with ``f``.

    Emits when every input has an element; completes when any input completed
    and has nothing buffered.
    """

    def __init__(self, n: int, f: Callable[..., Any]) -> None:
        super().__init__(n)
        self.f = f

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _ZipLogic(self.f), None


class Zip(ZipWith):
    """Emit tuples of one element from each of ``n`` inputs (default 2)."""

    def __init__(self, n: int = 2) -> None:
        super().__init__(n, _tuple)

    def __repr__(self) -> str:
        return f"Zip({self.n})"


def _tuple(*xs: Any) -> tuple[Any, ...]:
    return xs


class _ZipLogic(AsyncLogic):
    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        bufs: list[deque[Any]] = [deque() for _ in inlets]
        ended = [False] * len(inlets)
        while True:
            for i, ch in enumerate(inlets):
                while not bufs[i] and not ended[i]:
                    item = await _next_item(ch, outlets)
                    if type(item) is list:
                        bufs[i].extend(item)
                    elif item is END:
                        ended[i] = True
                    elif isinstance(item, Failure):
                        raise item.error
                if not bufs[i]:
                    return
            k = min(len(b) for b in bufs)
            f = self.f
            chunk = [f(*(b.popleft() for b in bufs)) for _ in range(k)]
            await out.put(chunk)


class Concat(_FanIn):
    """Emit all of input 0, then all of input 1, and so on.

    Emits from the current input; completes when the last input completed.
    """

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _ConcatLogic(), None


class _ConcatLogic(AsyncLogic):
    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets
        for ch in inlets:
            while True:
                item = await _next_item(ch, outlets)
                if item is END:
                    break
                if isinstance(item, Failure):
                    raise item.error
                await out.put(item)


# -- composite flows built from junctions -------------------------------------


def also_to(sink: Any) -> Any:
    """A module: Broadcast(2) whose second output goes to ``sink``."""
    from .._dsl.module import Module

    return _fan_out_to(Broadcast(2), sink, Module)


def divert_to(sink: Any, when: Callable[[Any], object]) -> Any:
    """A module: elements for which ``when`` holds go to ``sink``, the rest pass on."""
    from .._dsl.module import Module

    return _fan_out_to(Partition(2, lambda x: 1 if when(x) else 0), sink, Module)


def _fan_out_to(junction: Stage, sink: Any, module_cls: Any) -> Any:
    from .._runtime.materializer import Edge

    assert sink.inlet is not None
    stages = (junction,) + sink.stages
    edges = tuple(Edge(e.src + 1, e.src_port, e.dst + 1, e.dst_port) for e in sink.edges)
    edges += (Edge(0, 1, sink.inlet[0] + 1, sink.inlet[1]),)
    sink_mat = sink.mat
    return module_cls(stages, edges, (0, 0), (0, 0), lambda mats: sink_mat(mats[1:]))


def flow_from_sink_and_source(sink: Any, source: Any) -> Any:
    """A module whose inlet is ``sink``'s and whose outlet is ``source``'s."""
    from .._dsl.module import Module
    from .._runtime.materializer import Edge

    n = len(sink.stages)
    stages = sink.stages + source.stages
    edges = sink.edges + tuple(Edge(e.src + n, e.src_port, e.dst + n, e.dst_port) for e in source.edges)
    outlet = (source.outlet[0] + n, source.outlet[1])
    sm, om = sink.mat, source.mat
    return Module(stages, edges, sink.inlet, outlet, lambda mats: (sm(mats[:n]), om(mats[n:])))
