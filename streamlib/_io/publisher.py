"""Adapters between streams and plain async code: publishers in, subscribers out.

A *publisher* is any async iterable (or a factory of one, called per run), or a
push-style coroutine function ``async def publish(emit)`` that calls
``await emit(x)`` for each element and returns when done: ``emit`` waits while
downstream is full (backpressure) and raises when downstream has cancelled, so
the publisher stops (it may catch it to clean up).

A *subscriber* is an async (or plain) callable ``on_next(x)``, or an object with
``on_next`` and, optionally, ``on_complete()`` and ``on_error(error)``, each
sync or async. Elements are handed over one at a time, in order, each awaited
before the next.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage, fail_future


def is_push_publisher(publisher: Any) -> bool:
    """True for ``async def publish(emit)``: a coroutine function taking one argument."""
    if not inspect.iscoroutinefunction(publisher):
        return False
    try:
        params = [
            p
            for p in inspect.signature(publisher).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 1


class PushPublisherSource(Stage):
    inputs = 0
    outputs = 1
    name = "from_publisher"

    def __init__(self, publish: Callable[[Callable[[Any], Any]], Any]) -> None:
        self.publish = publish

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _PushLogic(self.publish), None


class _PushLogic(AsyncLogic):
    def __init__(self, publish: Callable[[Callable[[Any], Any]], Any]) -> None:
        self.publish = publish

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (out,) = outlets

        async def emit(x: Any) -> None:
            await out.put([x])

        await self.publish(emit)


class SubscriberSink(Stage):
    inputs = 1
    outputs = 0
    name = "to_subscriber"

    def __init__(self, subscriber: Any) -> None:
        on_next = getattr(subscriber, "on_next", None)
        if on_next is None:
            if not callable(subscriber):
                raise TypeError(f"to_subscriber needs a callable or an object with on_next, got {subscriber!r}")
            on_next = subscriber
        self.on_next = on_next
        self.on_complete = getattr(subscriber, "on_complete", None)
        self.on_error = getattr(subscriber, "on_error", None)

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, asyncio.Future[None]]:
        fut = ctx.new_future()
        return _SubscriberLogic(self, fut), fut


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class _SubscriberLogic(AsyncLogic):
    def __init__(self, stage: SubscriberSink, fut: asyncio.Future[None]) -> None:
        self.stage = stage
        self.fut = fut

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        st = self.stage
        on_next = st.on_next
        is_async = inspect.iscoroutinefunction(on_next)
        while True:
            item = await inlet.get()
            if type(item) is list:
                if is_async:
                    for x in item:
                        await on_next(x)
                else:
                    for x in item:
                        result = on_next(x)
                        if inspect.isawaitable(result):
                            await result
            elif item is END:
                if st.on_complete is not None:
                    await _call(st.on_complete)
                if not self.fut.done():
                    self.fut.set_result(None)
                return
            elif isinstance(item, Failure):
                if st.on_error is not None:
                    await _call(st.on_error, item.error)
                self._fail(item.error)
                return

    def _fail(self, error: BaseException) -> None:
        fail_future(self.fut, error)

    def on_failure(self, error: BaseException) -> None:
        self._fail(error)
