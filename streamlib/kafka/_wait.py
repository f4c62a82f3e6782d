"""Waiting with a timeout without losing a cancellation.

``asyncio.wait_for`` in Python 3.11 can swallow a cancellation that arrives
just as the awaited operation completes, leaving a task running after it was
cancelled. These helpers run the wait as a task raced with ``asyncio.wait``,
which never swallows the caller's cancellation, and always reap the task
before returning (a channel waiter must be gone before the next wait starts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .._runtime.channel import Channel, wait_any_room


async def within(make: Callable[[], Awaitable[Any]], timeout: float) -> bool:
    """Await ``make()`` for at most ``timeout`` seconds; True when it completed."""
    if timeout <= 0:
        return False
    task = asyncio.ensure_future(make())
    try:
        done, _ = await asyncio.wait([task], timeout=timeout)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
    if done:
        task.result()
        return True
    return False


async def get_within(channel: Channel, timeout: float) -> Any:
    """The channel's next item, or None when none arrives within ``timeout`` seconds."""
    item = channel.get_nowait()
    if item is not None:
        return item
    await within(channel.wait_readable, timeout)
    return channel.get_nowait()


async def room_within(channel: Channel, timeout: float) -> bool:
    """True once ``channel`` has room (or was cancelled), False after ``timeout`` seconds."""
    if channel.has_room():
        return True
    await within(channel.wait_room, timeout)
    return channel.has_room()


async def any_room_within(channels: list[Channel], timeout: float) -> bool:
    if any(ch.has_room() for ch in channels):
        return True
    return await within(lambda: wait_any_room(channels), timeout)


async def event_within(event: asyncio.Event, timeout: float) -> bool:
    if event.is_set():
        return True
    return await within(event.wait, timeout)
