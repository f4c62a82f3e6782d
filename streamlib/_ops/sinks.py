"""Sink stages. Synchronous sinks fuse into the island before them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import reduce
from typing import Any

from .._native import fold_function
from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.graph_run import RunningGraph
from .._runtime.materializer import ChannelSinkLogic
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, SinkLogic, Stage, fail_future
from .sources import QueueClosedError, on_run_end


class EmptyStreamError(ValueError):
    """The stream completed without the element a sink needed (``head``, ``reduce``)."""


class _SinkStage(Stage):
    inputs = 1
    outputs = 0


class _FutureSinkLogic(SinkLogic):
    """A sink whose materialized value is a future completed at the end."""

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.fut = fut

    def on_failure(self, error: BaseException) -> None:
        fail_future(self.fut, error)

    def on_cancel(self) -> None:
        self.on_failure(asyncio.CancelledError())

    def finish_with(self, value: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(value)


class _FoldLogic(_FutureSinkLogic):
    def __init__(self, fut: asyncio.Future[Any], zero: Any, f: Callable[[Any, Any], Any]) -> None:
        super().__init__(fut)
        self.acc = zero
        self.f = f
        self.fold = fold_function()  # reduce(f, chunk, acc), compiled when available

    def consume(self, chunk: list[Any]) -> None:
        self.acc = self.fold(self.f, chunk, self.acc)

    def on_finish(self) -> list[Any]:
        self.finish_with(self.acc)
        return []


class FoldSink(_SinkStage):
    name = "fold"

    def __init__(self, zero: Any, f: Callable[[Any, Any], Any]) -> None:
        self.zero = zero
        self.f = f

    def materialize(self, ctx: RunContext) -> tuple[SinkLogic, asyncio.Future[Any]]:
        fut = ctx.new_future()
        return _FoldLogic(fut, self.zero, self.f), fut


_NOTHING: Any = object()


class _ReduceLogic(_FutureSinkLogic):
    def __init__(self, fut: asyncio.Future[Any], f: Callable[[Any, Any], Any]) -> None:
        super().__init__(fut)
        self.acc = _NOTHING
        self.f = f

    def consume(self, chunk: list[Any]) -> None:
        if self.acc is _NOTHING:
            self.acc = reduce(self.f, chunk)
        else:
            self.acc = reduce(self.f, chunk, self.acc)

    def on_finish(self) -> list[Any]:
        if self.acc is _NOTHING:
            self.on_failure(EmptyStreamError(f"{self.stage_name}: the stream was empty"))
        else:
            self.finish_with(self.acc)
        return []


class ReduceSink(_SinkStage):
    name = "reduce"

    def __init__(self, f: Callable[[Any, Any], Any]) -> None:
        self.f = f

    def materialize(self, ctx: RunContext) -> tuple[SinkLogic, asyncio.Future[Any]]:
        fut = ctx.new_future()
        return _ReduceLogic(fut, self.f), fut


class _CollectLogic(_FutureSinkLogic):
    def __init__(self, fut: asyncio.Future[Any]) -> None:
        super().__init__(fut)
        self.items: list[Any] = []

    def consume(self, chunk: list[Any]) -> None:
        self.items.extend(chunk)

    def on_finish(self) -> list[Any]:
        self.finish_with(self.items)
        return []


class CollectSink(_SinkStage):
    name = "collect"

    def materialize(self, ctx: RunContext) -> tuple[SinkLogic, asyncio.Future[Any]]:
        fut = ctx.new_future()
        return _CollectLogic(fut), fut


class _HeadLogic(_FutureSinkLogic):
    def __init__(self, fut: asyncio.Future[Any], default: Any) -> None:
        super().__init__(fut)
        self.default = default

    def consume(self, chunk: list[Any]) -> None:
        self.finish_with(chunk[0])
        self.complete()

    def on_cancel(self) -> None:
        pass

    def on_finish(self) -> list[Any]:
        if self.default is _NOTHING:
            self.on_failure(EmptyStreamError(f"{self.stage_name}: the stream was empty"))
        else:
            self.finish_with(self.default)
        return []


class HeadSink(_SinkStage):
    name = "head"

    def __init__(self, default: Any = _NOTHING) -> None:
        self.default = default

    def materialize(self, ctx: RunContext) -> tuple[SinkLogic, asyncio.Future[Any]]:
        fut = ctx.new_future()
        return _HeadLogic(fut, self.default), fut


class _LastLogic(_FutureSinkLogic):
    def __init__(self, fut: asyncio.Future[Any], default: Any) -> None:
        super().__init__(fut)
        self.last = default

    def consume(self, chunk: list[Any]) -> None:
        self.last = chunk[-1]

    def on_finish(self) -> list[Any]:
        if self.last is _NOTHING:
            self.on_failure(EmptyStreamError(f"{self.stage_name}: the stream was empty"))
        else:
            self.finish_with(self.last)
        return []


class LastSink(_SinkStage):
    name = "last"

    def __init__(self, default: Any = _NOTHING) -> None:
        self.default = default

    def materialize(self, ctx: RunContext) -> tuple[SinkLogic, asyncio.Future[Any]]:
        fut = ctx.new_future()
        return _LastLogic(fut, self.default), fut


class _ForeachLogic(_FutureSinkLogic):
    def __init__(self, fut: asyncio.Future[Any], f: Callable[[Any], Any] | None) -> None:
        super().__init__(fut)
        self.f = f

    def consume(self, chunk: list[Any]) -> None:
        if self.f is not None:
            deque(map(self.f, chunk), maxlen=0)

    def on_finish(self) -> list[Any]:
        self.finish_with(None)
        return []


class ForeachSink(_SinkStage):
    """Calls ``f`` per element; ``f`` may be a coroutine function (awaited in order)."""

    name = "foreach"

    def __init__(self, f: Callable[[Any], Any] | None) -> None:
        self.f = f

    def materialize(self, ctx: RunContext) -> tuple[Any, asyncio.Future[Any]]:
        fut = ctx.new_future()
        if self.f is not None and asyncio.iscoroutinefunction(self.f):
            return _AsyncForeachLogic(fut, self.f), fut
        return _ForeachLogic(fut, self.f), fut


class _AsyncForeachLogic(AsyncLogic):
    def __init__(self, fut: asyncio.Future[Any], f: Callable[[Any], Awaitable[Any]]) -> None:
        self.fut = fut
        self.f = f

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        f = self.f
        while True:
            item = await inlet.get()
            if type(item) is list:
                for x in item:
                    await f(x)
            elif item is END:
                if not self.fut.done():
                    self.fut.set_result(None)
                return
            elif isinstance(item, Failure):
                self.on_failure(item.error)
                return

    def on_failure(self, error: BaseException) -> None:
        fail_future(self.fut, error)


class SinkQueue:
    """Materialized by ``Sink.queue``: pull elements out of a running stream.

    ``await pull()`` returns the next element, or None once the stream is
    complete; it raises the stream's error if it failed. Also an async iterator.
    """

    def __init__(self, channel: Channel, graph: RunningGraph | None = None) -> None:
        self._channel = channel
        self._buffer: deque[Any] = deque()
        self._ended = False
        self._graph = graph
        self._watching = False
        self._waiter: asyncio.Future[None] | None = None

    def _on_run_end(self) -> None:
        # After END or a failure this is never read; otherwise the run was cancelled.
        self._channel.put_final(Failure(QueueClosedError("the stream was cancelled before it completed")))

    async def pull(self) -> Any:
        """The next element; None at the end of the stream.

        Raises the stream's error if it failed, :class:`QueueClosedError` if it was cancelled.
        """
        if not self._watching:
            self._watching = on_run_end(self._graph, self._on_run_end)
        while not self._buffer:
            if self._ended:
                return None
            item = self._channel.get_nowait()
            if item is None:
                # This handle is the channel's only consumer; cancel() wakes it too.
                self._waiter = fut = asyncio.get_running_loop().create_future()
                self._channel._getter = fut
                try:
                    await fut
                finally:
                    if self._channel._getter is fut:
                        self._channel._getter = None
                    self._waiter = None
                continue
            if type(item) is list:
                self._buffer.extend(item)
            elif item is END:
                self._ended = True
            elif isinstance(item, Failure):
                self._ended = True
                raise item.error
        return self._buffer.popleft()

    def cancel(self) -> None:
        """Stop the stream: upstream is cancelled; a pending ``pull()`` returns None."""
        self._ended = True
        self._buffer.clear()
        self._channel.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> SinkQueue:
        return self

    async def __anext__(self) -> Any:
        if self._buffer:
            return self._buffer.popleft()
        x = await self.pull()
        if x is None and self._ended and not self._buffer:
            raise StopAsyncIteration
        return x


class QueueSink(_SinkStage):
    name = "queue"

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity

    def materialize(self, ctx: RunContext) -> tuple[ChannelSinkLogic, SinkQueue]:
        channel = Channel(self.capacity, "sink queue")
        return ChannelSinkLogic(channel), SinkQueue(channel, ctx.graph)
