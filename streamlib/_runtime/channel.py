"""The one bounded channel that joins islands.

A channel holds chunks (lists) and signals in order. Its capacity is counted in
elements: ``put`` waits while the channel already holds ``capacity`` elements or
more, which is how backpressure travels upstream. A put is accepted whole once
there is room, so a chunk is never split or reordered here; producers keep chunks
at or below the maximum chunk size, so a channel holds at most
``capacity + max_chunk`` elements.

``cancel`` is the consumer saying it wants nothing more: buffered items are
dropped and every later ``put`` raises :class:`DownstreamCancelled`, which the
producer turns into cancelling its own inputs.

``abort`` is the producer failing *out of band* (``KillSwitch.abort``): buffered
items are dropped, the failure is the next item, later puts are refused, and
the consumer's interrupt hooks run so a consumer blocked elsewhere (on its own
full output) stops at once and aborts its outputs in turn.

``inline`` is the queue fast path: the consuming island's ``offer_inline``, set
by the materializer on a ``Source.queue`` channel. A producer outside the graph
calls it first; it runs the chunk through the island on the caller's stack and
returns True, or returns False (nothing done) and the producer puts as usual.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from .signals import Failure, Signal


class DownstreamCancelled(Exception):
    """Raised by ``Channel.put`` when the consumer has cancelled."""


class Channel:
    """A bounded single-producer single-consumer queue of chunks and signals."""

    __slots__ = (
        "capacity", "_items", "_size", "_getter", "_putter", "cancelled", "name", "aborted", "_interrupts", "inline",
    )

    def __init__(self, capacity: int, name: str = "") -> None:
        if capacity < 1:
            raise ValueError(f"channel capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.name = name
        self._items: deque[Any] = deque()
        self._size = 0
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None
        self.cancelled = False
        #: The error of an ``abort``: the failure at the head overtook what was buffered.
        self.aborted: BaseException | None = None
        self._interrupts: list[Callable[[BaseException], None]] | None = None
        #: The consumer's fast path (``Island.offer_inline``), or None: see the module docstring.
        self.inline: Callable[[list[Any]], bool] | None = None

    def __len__(self) -> int:
        """Elements buffered now (signals count as one)."""
        return self._size

    def has_room(self) -> bool:
        return self._size < self.capacity or self.cancelled

    def _append(self, item: list[Any] | Signal) -> None:
        self._items.append(item)
        self._size += len(item) if type(item) is list else 1
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def _pop(self) -> list[Any] | Signal:
        item = self._items.popleft()
        self._size -= len(item) if type(item) is list else 1
        putter = self._putter
        if putter is not None and not putter.done() and self._size < self.capacity:
            putter.set_result(None)
        return item

    async def put(self, item: list[Any] | Signal) -> None:
        """Append a chunk or signal, waiting while the channel is full."""
        if self._size >= self.capacity:
            await self.wait_room()
        if self.cancelled:
            raise DownstreamCancelled(self.name)
        self._append(item)

    def put_nowait(self, item: list[Any] | Signal) -> bool:
        """Append without waiting; False (nothing appended) when full or cancelled."""
        if self.cancelled or self._size >= self.capacity:
            return False
        self._append(item)
        return True

    def put_final(self, item: Signal) -> None:
        """Append a terminal signal regardless of capacity (end or failure)."""
        if not self.cancelled:
            self._append(item)

    async def get(self) -> list[Any] | Signal:
        """Remove and return the oldest chunk or signal, waiting while empty."""
        if not self._items:
            await self.wait_readable()
        return self._pop()

    def get_nowait(self) -> list[Any] | Signal | None:
        """The oldest item, or None when the channel is empty."""
        return self._pop() if self._items else None

    async def wait_readable(self) -> None:
        """Wait until an item is buffered (without removing it)."""
        while not self._items:
            fut = asyncio.get_running_loop().create_future()
            self._getter = fut
            try:
                await fut
            finally:
                self._getter = None

    async def wait_room(self) -> None:
        """Wait until a put would not block (or the consumer cancelled)."""
        while self._size >= self.capacity and not self.cancelled:
            fut = asyncio.get_running_loop().create_future()
            self._putter = fut
            try:
                await fut
            finally:
                self._putter = None

    def cancel(self) -> None:
        """The consumer wants nothing more: drop buffered items, refuse later puts."""
        if self.cancelled:
            return
        self.cancelled = True
        self._items.clear()
        self._size = 0
        putter = self._putter
        if putter is not None and not putter.done():
            putter.set_result(None)

    def abort(self, error: BaseException) -> None:
        """The producer fails at once: drop buffered items, make ``Failure(error)`` the next item.

        Later puts are refused as after a cancel. Each interrupt hook the consumer
        registered (:meth:`on_abort`) is called with ``error``.
        """
        if self.cancelled:
            return
        self._items.clear()
        self._size = 0
        self.put_final(Failure(error))  # through subclasses, which may watch what arrives
        self.aborted = error
        self.cancelled = True  # every later put, put_nowait or put_final is refused
        putter = self._putter
        if putter is not None and not putter.done():
            putter.set_result(None)
        for hook in self._interrupts or ():
            hook(error)

    def on_abort(self, hook: Callable[[BaseException], None]) -> None:
        """Call ``hook(error)`` when the producer aborts this channel (the consumer's interrupt)."""
        if self._interrupts is None:
            self._interrupts = []
        self._interrupts.append(hook)

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {self._size}/{self.capacity})"


async def wait_any(channels: list[Channel]) -> None:
    """Wait until at least one of ``channels`` has an item buffered."""
    for ch in channels:
        if ch._items:
            return
    fut = asyncio.get_running_loop().create_future()
    for ch in channels:
        ch._getter = fut
    try:
        await fut
    finally:
        for ch in channels:
            if ch._getter is fut:
                ch._getter = None


async def wait_any_room(channels: list[Channel]) -> None:
    """Wait until at least one of ``channels`` would accept a put without waiting."""
    for ch in channels:
        if ch._size < ch.capacity or ch.cancelled:
            return
    fut = asyncio.get_running_loop().create_future()
    for ch in channels:
        ch._putter = fut
    try:
        await fut
    finally:
        for ch in channels:
            if ch._putter is fut:
                ch._putter = None
