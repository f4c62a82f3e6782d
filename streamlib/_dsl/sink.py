"""Sink: a blueprint with one input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._ops import sinks as _sinks
from .module import Module

In = TypeVar("In")
Mat = TypeVar("Mat")
T = TypeVar("T")
M2 = TypeVar("M2")


class Sink(Generic[In, Mat]):
    """A reusable description of where elements end up; materializes a value (mostly a future).

    >>> await Source.from_iterable([1, 2, 3]).run_with(Sink.collect())
    [1, 2, 3]
    """

    __slots__ = ("_module",)

    def __init__(self, module: Module) -> None:
        self._module = module

    @staticmethod
    def fold(zero: T, f: Callable[[T, Any], T]) -> Sink[Any, asyncio.Future[T]]:
        """Fold every element into ``zero`` with ``f``; the future holds the result at the end.

        >>> await Source.from_iterable([1, 2, 3]).run_with(Sink.fold(0, operator.add))
        6
        """
        return Sink(Module.of(_sinks.FoldSink(zero, f)))

    @staticmethod
    def reduce(f: Callable[[T, T], T]) -> Sink[T, asyncio.Future[T]]:
        """Like ``fold`` seeded with the first element; an empty stream fails with ``EmptyStreamError``."""
        return Sink(Module.of(_sinks.ReduceSink(f)))

    @staticmethod
    def foreach(f: Callable[[T], Any]) -> Sink[T, asyncio.Future[None]]:
        """Call ``f`` on each element (a coroutine function is awaited, one at a time).

        The future completes when the stream has ended.
        """
        return Sink(Module.of(_sinks.ForeachSink(f)))

    @staticmethod
    def collect() -> Sink[T, asyncio.Future[list[T]]]:
        """Gather every element into a list (for finite streams)."""
        return Sink(Module.of(_sinks.CollectSink()))

    @staticmethod
    def head() -> Sink[T, asyncio.Future[T]]:
        """The first element, then cancel upstream; ``EmptyStreamError`` on an empty stream."""
        return Sink(Module.of(_sinks.HeadSink()))

    @staticmethod
    def head_option() -> Sink[T, asyncio.Future[T | None]]:
        """The first element, or None for an empty stream."""
        return Sink(Module.of(_sinks.HeadSink(None)))

    @staticmethod
    def last() -> Sink[T, asyncio.Future[T]]:
        """The last element; ``EmptyStreamError`` on an empty stream."""
        return Sink(Module.of(_sinks.LastSink()))

    @staticmethod
    def last_option() -> Sink[T, asyncio.Future[T | None]]:
        """The last element, or None for an empty stream."""
        return Sink(Module.of(_sinks.LastSink(None)))

    @staticmethod
    def ignore() -> Sink[Any, asyncio.Future[None]]:
        """Consume and discard everything; the future completes at the end."""
        return Sink(Module.of(_sinks.ForeachSink(None)))

    @staticmethod
    def queue(capacity: int = 1024) -> Sink[T, _sinks.SinkQueue]:
        """Materialize a :class:`SinkQueue` to pull elements with ``await q.pull()``.

        Up to ``capacity`` elements are buffered ahead of the puller.
        """
        return Sink(Module.of(_sinks.QueueSink(capacity)))

    @staticmethod
    def to_subscriber(subscriber: Any) -> Sink[Any, asyncio.Future[None]]:
        """Hand each element to ``subscriber``: an (async) callable, or an object with ``on_next``.

        ``on_next(x)`` is awaited for each element in order (backpressure: the next
        waits); ``on_complete()`` and ``on_error(error)``, when the object has them,
        are called (and awaited) at the end. The future completes after
        ``on_complete`` and fails with the stream's error.

        >>> done = events.run_with(Sink.to_subscriber(websocket.send))
        """
        from .._io.publisher import SubscriberSink

        return Sink(Module.of(SubscriberSink(subscriber)))

    def map_materialized_value(self, f: Callable[[Mat], M2]) -> Sink[In, M2]:
        """Transform the materialized value with ``f`` at each run."""
        return Sink(self._module.map_mat(f))

    def describe(self, format: str = "mermaid") -> str:
        """This blueprint as Mermaid (or ``"dot"``) text."""
        from .describe import describe

        return describe(self._module, format)

    def __repr__(self) -> str:
        return f"Sink({' -> '.join(s.stage_name() for s in self._module.stages)})"
