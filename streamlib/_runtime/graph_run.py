"""A running graph: owns every task of one run, under one TaskGroup.

Cancelling the :class:`RunningGraph` (directly, by cancelling a materialized
future, by cancelling the task that awaits it, or by cancelling the task that
started it) cancels every task it started; when the supervisor task ends,
nothing of the run is left running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from ..stage import AsyncLogic, annotate
from .channel import Channel, DownstreamCancelled
from .signals import END, Failure

log = logging.getLogger("streamlib")

_running: set[RunningGraph] = set()


class RunningGraph:
    """Handle on one materialized run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "graph") -> None:
        self.loop = loop
        self.name = name
        self._runners: list[Callable[[], Awaitable[None]]] = []
        self.task: asyncio.Task[None] | None = None
        #: Materialized futures of the run: any still pending when the run ends is cancelled.
        self.futures: list[asyncio.Future[Any]] = []
        #: The task that started the run: if it ends cancelled first, the run is cancelled too.
        self.owner: asyncio.Task[Any] | None = None

    def add(self, runner: Callable[[], Awaitable[None]]) -> None:
        self._runners.append(runner)

    def start(self) -> None:
        self.task = self.loop.create_task(self._supervise(), name=f"streamlib:{self.name}")
        _running.add(self)
        self.task.add_done_callback(self._ended)

    def tie_to(self, owner: asyncio.Task[Any] | None) -> None:
        """Cancel this run if ``owner`` ends cancelled while the run still goes on.

        A task that started a run and was cancelled (at any await, before it ever
        awaited the run's value) leaves nothing behind; a task that returns
        normally hands the run on to whoever holds its materialized value.
        """
        if owner is None or owner.done() or self.done:
            return
        self.owner = owner
        owner.add_done_callback(self._owner_done)

    def _owner_done(self, owner: asyncio.Task[Any]) -> None:
        self.owner = None
        if owner.cancelled():
            self.cancel()

    def _ended(self, task: asyncio.Task[None]) -> None:
        _running.discard(self)
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.remove_done_callback(self._owner_done)
        # Stages cancelled before their first step never settled their futures.
        for fut in self.futures:
            if not fut.done():
                fut.cancel()
        if not task.cancelled() and task.exception() is not None:
            log.error("run %s ended with an internal error", self.name, exc_info=task.exception())

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for runner in self._runners:
                tg.create_task(runner())  # type: ignore[arg-type]

    def cancel(self) -> None:
        """Stop the whole run now: every stage is cancelled."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    async def wait(self) -> None:
        """Wait until every task of the run has ended."""
        if self.task is not None:
            try:
                await asyncio.shield(self.task)
            except asyncio.CancelledError:
                if not self.task.cancelled():
                    raise


async def drive_async(logic: AsyncLogic, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
    """Run one async stage, turning its return, failure or cancellation into signals.

    An abort of any inlet (``KillSwitch.abort``) interrupts the stage wherever it
    waits: its inlets are cancelled, ``on_failure`` runs and every outlet is
    aborted in turn, so the failure overtakes what is buffered downstream.
    """
    task = asyncio.current_task()
    interrupted: list[BaseException] = []

    def interrupt(error: BaseException) -> None:
        if interrupted or task is None or task.done():
            return
        interrupted.append(error)
        if task is not asyncio.current_task():
            task.cancel()

    for ch in inlets:
        ch.on_abort(interrupt)
    try:
        await logic.run(inlets, outlets)
    except DownstreamCancelled:
        for ch in inlets:
            ch.cancel()
        for ch in outlets:
            ch.put_final(END)
    except asyncio.CancelledError:
        for ch in inlets:
            ch.cancel()
        if interrupted and task is not None and task.uncancel() == 0:
            _abort_outlets(logic, outlets, interrupted[0])
            return
        logic.on_failure(asyncio.CancelledError())
        raise
    except Exception as error:
        for ch in inlets:
            ch.cancel()
        aborted = interrupted[0] if interrupted else _aborted(inlets)
        if aborted is not None:
            _abort_outlets(logic, outlets, aborted)
            return
        annotate(error, logic.stage_name)
        logic.on_failure(error)
        for ch in outlets:
            ch.put_final(Failure(error))
    else:
        for ch in inlets:
            ch.cancel()
        aborted = interrupted[0] if interrupted else None
        if aborted is not None:
            _abort_outlets(logic, outlets, aborted)
            return
        for ch in outlets:
            ch.put_final(END)


def _aborted(inlets: Sequence[Channel]) -> BaseException | None:
    for ch in inlets:
        if ch.aborted is not None:
            return ch.aborted
    return None


def _abort_outlets(logic: AsyncLogic, outlets: Sequence[Channel], error: BaseException) -> None:
    logic.on_failure(error)
    for ch in outlets:
        ch.abort(error)
