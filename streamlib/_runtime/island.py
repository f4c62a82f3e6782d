"""The fused island: one task driving a run of synchronous stages.

An island is a head (a pull source, or the channel from the previous island),
a list of :class:`~streamlib.stage.StageLogic` applied to each chunk in turn,
and a tail (the channel to the next island, or nothing when the last logic is a
sink). Per input chunk the island calls each logic's ``on_chunk`` synchronously
and only awaits at the tail, so a chain of ``map``/``filter``/``fold`` costs one
function call per stage per chunk plus the user functions themselves.

Completion: when a logic sets ``completed`` (``take``, ``Sink.head``) the
island cancels its head, finishes the logics after it, and ends. When a logic
raises, its partial output for the chunk is delivered first, then the error is
annotated with the stage name and sent downstream as a failure while the head
is cancelled.

Fast path (``offer_inline``): while the task of an island fed by a
``Source.queue`` waits on its empty inlet, a producer's offer runs the chunk
through the logics on the producer's stack instead of waking the task. Whatever
needs more than that (a failure to send on, a completion, output the tail has no
room for) is left for the task, which is woken to do it exactly as if it had
pushed the chunk itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..stage import PullSourceLogic, StageLogic, annotate
from .channel import Channel, DownstreamCancelled
from .context import RunContext
from .signals import END, Failure, Signal

#: Seconds a pull-headed island may run before it yields to the event loop.
_YIELD_EVERY = 0.002

#: What ``_wait_item`` returns when an inline push left work for the task.
_KICK: Any = object()


class Island:
    __slots__ = (
        "head", "inlet", "logics", "tail", "ctx", "out", "stop_at", "failed_at", "n", "timed", "finished",
        "task", "interrupted", "waiting", "busy", "kicked", "deferred", "cells",
    )

    def __init__(
        self,
        head: PullSourceLogic | None,
        inlet: Channel | None,
        logics: list[StageLogic],
        tail: Channel | None,
        ctx: RunContext,
    ) -> None:
        self.head = head
        self.inlet = inlet
        self.logics = logics
        self.n = len(logics)
        self.tail = tail
        self.ctx = ctx
        self.out: list[Any] = []
        self.stop_at = -1
        self.failed_at = -1
        self.timed = [(i, lg) for i, lg in enumerate(logics) if lg.uses_timers]
        self.finished = False
        self.task: asyncio.Task[Any] | None = None
        #: The error of an abort of the inlet that interrupted this island's task.
        self.interrupted: BaseException | None = None
        #: The future the task waits on while its inlet is empty (None while it runs).
        self.waiting: asyncio.Future[None] | None = None
        #: True while ``offer_inline`` pushes a chunk (a re-entrant offer must not).
        self.busy = False
        #: An inline push left work for the task (``deferred``, ``out`` or ``stop_at``).
        self.kicked = False
        #: What an inline push raised: the task raises it as if its own push had.
        self.deferred: BaseException | None = None
        #: Per logic, the run's counter of elements it took in (only when the run is metered).
        meters = ctx.meters
        self.cells: list[list[int]] | None = (
            None if meters is None else [meters.cell(lg.stage_name) for lg in logics]
        )

    def describe(self) -> str:
        parts = [self.head.stage_name if self.head else "channel"]
        parts += [lg.stage_name for lg in self.logics]
        return " -> ".join(parts)

    # -- synchronous core -------------------------------------------------

    def _push(self, start: int, chunk: list[Any]) -> None:
        logics = self.logics
        cells = self.cells
        i = start
        n = self.n
        while i < n:
            lg = logics[i]
            if cells is not None:
                cells[i][0] += len(chunk)
            try:
                chunk = lg.on_chunk(chunk)
            except BaseException:
                if self._raised(i, lg):
                    return
                raise
            if lg.completed and i > self.stop_at:
                self.stop_at = i
            if lg.pending_signals:
                if chunk:
                    self._push(i + 1, chunk)
                self._forward_signals(i, lg)
                return
            if not chunk:
                return
            i += 1
        if self.tail is not None:
            self.out.append(chunk)

    def _emitted(self, i: int, lg: StageLogic, emitted: list[Any]) -> None:
        """After a callback of logic ``i``: note its completion, pass on what it emitted."""
        if lg.completed and i > self.stop_at:
            self.stop_at = i
        if emitted:
            self._push(i + 1, emitted)
        if lg.pending_signals:
            self._forward_signals(i, lg)

    def _forward_signals(self, i: int, lg: StageLogic) -> None:
        """Send the signals logic ``i`` emitted on to the stages after it."""
        signals = lg.pending_signals or []
        lg.pending_signals = None
        for sig in signals:
            self._signal(i + 1, sig)

    def _raised(self, i: int, lg: StageLogic) -> bool:
        """Logic ``i`` raised: deliver what it produced before the failure.

        Returns True when a stage after it has completed meanwhile (a ``take``
        satisfied by that partial output): element by element, the failing
        element would never have been processed, so the error is moot.
        """
        self.failed_at = i
        partial = lg.take_partial()
        if partial:
            self._push(i + 1, partial)
        if self.stop_at > i:
            self.failed_at = -1
            return True
        return False

    def _signal(self, start: int, sig: Signal) -> None:
        logics = self.logics
        for i in range(start, self.n):
            lg = logics[i]
            try:
                emitted = lg.on_signal(sig)
            except BaseException:
                if self._raised(i, lg):
                    return
                raise
            if emitted:
                self._push(i + 1, emitted)
            # Signals set while handling a signal replace it; an empty list drops it.
            if lg.pending_signals is not None:
                self._forward_signals(i, lg)
                return
        if self.tail is not None:
            self.out.append(sig)

    def _start(self) -> None:
        # Downstream stages start first: their start elements come before any
        # element an upstream stage emits at its start.
        for i in range(self.n - 1, -1, -1):
            lg = self.logics[i]
            try:
                emitted = lg.on_start()
            except BaseException:
                if self._raised(i, lg):
                    return
                raise
            if lg.completed and i > self.stop_at:
                self.stop_at = i
            if emitted:
                self._push(i + 1, emitted)
            if self.stop_at >= 0:
                return

    def _finish(self, start: int) -> None:
        self.finished = True
        i = start
        while i < self.n:
            if self.stop_at >= i:
                i = self.stop_at + 1
                continue
            lg = self.logics[i]
            try:
                emitted = lg.on_finish()
            except BaseException:
                if self._raised(i, lg):
                    continue
                raise
            self._emitted(i, lg, emitted)
            i += 1
        if self.tail is not None:
            self.out.append(END)

    def _next_deadline(self) -> float | None:
        deadline: float | None = None
        for _i, lg in self.timed:
            at = lg.timer_at
            if at is not None and (deadline is None or at < deadline):
                deadline = at
        return deadline

    def _fire_timers(self) -> None:
        now = self.ctx.clock.now()
        for i, lg in self.timed:
            at = lg.timer_at
            if at is None or at > now or i <= self.stop_at:
                continue
            lg.timer_at = None
            try:
                emitted = lg.on_timer(now)
            except BaseException:
                if self._raised(i, lg):
                    return
                raise
            self._emitted(i, lg, emitted)

    # -- fast path --------------------------------------------------------

    def offer_inline(self, chunk: list[Any]) -> bool:
        """Push ``chunk`` through the logics now, on the caller's stack; False when it may not.

        Only while the task waits on an empty inlet with nothing of its own to do:
        not re-entrant, not while anything is queued or the task was woken, not
        with timers, not when the tail has no room, not while the run is being
        cancelled. The chunk then meets exactly what the task would have done with
        it next, so ordering holds, and the island stays idle, so the next offer may
        go inline too. A raised error, output the tail cannot take at once, or a
        completed logic is left for the task, woken to finish it as after its own
        push: nothing raised here reaches the caller.
        """
        fut = self.waiting
        if fut is None or fut.done() or self.busy or self.kicked:
            return False
        inlet = self.inlet
        if inlet is None or inlet._items or inlet.cancelled:
            return False
        tail = self.tail
        if tail is not None and (tail.cancelled or tail._size >= tail.capacity):
            return False
        graph = self.ctx.graph
        if graph is not None and graph.task is not None and graph.task.cancelling():
            return False  # the run is being cancelled: its tasks drop what is offered now
        self.busy = True
        try:
            self._push(0, chunk)
        except BaseException as error:  # the task raises it where its own push would have
            self.deferred = error
        finally:
            self.busy = False
        if self.out:
            self._flush_nowait()
        if self.deferred is not None or self.out or self.stop_at >= 0:
            self.kicked = True
            if not fut.done():
                fut.set_result(None)
        return True

    def _flush_nowait(self) -> None:
        """Put what ``out`` holds into the tail while it has room; the rest stays for ``_flush``."""
        out = self.out
        tail = self.tail
        assert tail is not None
        max_chunk = self.ctx.max_chunk
        k = 0
        for item in out:
            if type(item) is list and len(item) > max_chunk:
                break
            if not tail.put_nowait(item):
                break
            k += 1
        del out[:k]

    # -- asynchronous driver ----------------------------------------------

    async def _flush(self) -> None:
        out = self.out
        self.out = []
        tail = self.tail
        assert tail is not None
        max_chunk = self.ctx.max_chunk
        for item in out:
            if type(item) is list and len(item) > max_chunk:
                for k in range(0, len(item), max_chunk):
                    await tail.put(item[k : k + max_chunk])
            elif item is END:
                tail.put_final(END)
            else:
                await tail.put(item)

    async def run(self) -> None:
        self.task = asyncio.current_task()
        if self.inlet is not None:
            self.inlet.on_abort(self._interrupt)
        try:
            await self._run()
        except asyncio.CancelledError:
            error = self.interrupted
            if error is None or self.task is None or self.task.uncancel() > 0:
                raise  # the run itself is cancelled
            self._abort_now(error)
        finally:
            if self.inlet is not None:
                self.inlet.inline = None  # the queue handle no longer keeps this island alive

    def _interrupt(self, error: BaseException) -> None:
        """The inlet was aborted: stop wherever the task waits (even on a full tail)."""
        task = self.task
        if task is None or task.done() or self.interrupted is not None:
            return
        if task is asyncio.current_task():
            return  # aborted from inside this island: the failure is the next item it reads
        self.interrupted = error
        task.cancel()

    async def _run(self) -> None:
        try:
            self._start()
            if self.out:
                await self._flush()
            if self.stop_at < 0:
                if self.head is not None:
                    await self._run_pull(self.head)
                else:
                    assert self.inlet is not None
                    await self._run_channel(self.inlet)
            if self.stop_at >= 0 and not self.finished:
                self._cancel_upstream(self.stop_at)
                self._finish(self.stop_at + 1)
                if self.out:
                    await self._flush()
        except DownstreamCancelled:
            self._cancel_upstream(self.n)
        except asyncio.CancelledError:
            if self.interrupted is None:
                self._abort(asyncio.CancelledError())
            raise
        except Exception as error:
            where = self.failed_at
            if 0 <= where < self.n:
                name = self.logics[where].stage_name
            else:
                name = self.head.stage_name if self.head is not None else self.describe()
            annotate(error, name)
            if self.out and self.tail is not None:
                # The failing chunk's partial output goes downstream before the failure.
                try:
                    await self._flush()
                except DownstreamCancelled:
                    pass
            self._fail(error, max(where, 0))

    async def _run_pull(self, head: PullSourceLogic) -> None:
        loop_time = self.ctx.loop.time
        max_chunk = self.ctx.max_chunk
        last_yield = loop_time()
        while True:
            try:
                chunk = head.pull(max_chunk)
            except BaseException:
                self.failed_at = -1
                raise
            if chunk:
                self._push(0, chunk)
            if self.timed:
                self._fire_timers()
            if self.out:
                await self._flush()
            if self.stop_at >= 0:
                return
            if head.done:
                self._finish(0)
                if self.out:
                    await self._flush()
                return
            now = loop_time()
            if now - last_yield >= _YIELD_EVERY:
                await asyncio.sleep(0)
                last_yield = now

    async def _run_channel(self, inlet: Channel) -> None:
        while True:
            item = inlet.get_nowait()
            if self.timed:
                if item is None:
                    item = await self._wait_item(inlet, self._next_deadline())
                self._fire_timers()
                if item is None:
                    if self.out:
                        await self._flush()
                    if self.stop_at >= 0:
                        return
                    continue
            elif item is None:
                item = await self._wait_item(inlet, None)
                if item is _KICK:
                    if not await self._after_inline():
                        return
                    continue
            if type(item) is list:
                self._push(0, item)
            elif item is END:
                self._finish(0)
                if self.out:
                    await self._flush()
                return
            elif isinstance(item, Failure):
                self._propagate_failure(item.error)
                return
            else:
                self._signal(0, item)  # type: ignore[arg-type]
            if self.out:
                await self._flush()
            if self.stop_at >= 0:
                return

    async def _after_inline(self) -> bool:
        """Finish what an inline push left: raise its error, flush, stop. False once the island is done."""
        self.kicked = False
        error = self.deferred
        if error is not None:
            self.deferred = None
            raise error
        if self.out:
            await self._flush()
        return self.stop_at < 0

    async def _wait_item(self, inlet: Channel, deadline: float | None) -> Any:
        """Wait for the next item; None once the clock reaches ``deadline`` first.

        While waiting, a cancellation of the tail wakes the island too (a
        cancelled channel wakes its producer), so an idle island passes a
        downstream cancellation upstream at once. ``_KICK`` when an inline push
        (``offer_inline``) left work for the task.
        """
        clock = self.ctx.clock
        tail = self.tail
        loop = self.ctx.loop
        while True:
            if deadline is not None and clock.now() >= deadline:
                return None
            fut = loop.create_future()

            def wake(fut: asyncio.Future[None] = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            handle = clock.call_at(deadline, wake) if deadline is not None else None
            inlet._getter = fut
            if tail is not None:
                tail._putter = fut
            self.waiting = fut
            try:
                await fut
            finally:
                self.waiting = None
                if handle is not None:
                    handle.cancel()
                if inlet._getter is fut:
                    inlet._getter = None
                if tail is not None and tail._putter is fut:
                    tail._putter = None
            if self.kicked:
                return _KICK
            if tail is not None and tail.cancelled:
                raise DownstreamCancelled(tail.name)
            item = inlet.get_nowait()
            if item is not None:
                return item

    # -- ending -----------------------------------------------------------

    def _cancel_upstream(self, upto: int) -> None:
        if self.head is not None:
            self.head.done = True
            self.head.cancel()
        if self.inlet is not None:
            self.inlet.cancel()
        for lg in self.logics[: upto + 1]:
            lg.on_cancel()

    def _propagate_failure(self, error: BaseException) -> None:
        if self.inlet is not None and self.inlet.aborted is error:
            self._abort_now(error)
            return
        for lg in self.logics:
            lg.on_failure(error)
        if self.tail is not None:
            self.tail.put_final(Failure(error))

    def _abort_now(self, error: BaseException) -> None:
        """The inlet was aborted: drop what waits, fail the logics, abort the tail (overtaking)."""
        self.out = []
        if self.head is not None:
            self.head.done = True
            self.head.cancel()
        if self.inlet is not None:
            self.inlet.cancel()
        for lg in self.logics:
            lg.on_failure(error)
        if self.tail is not None:
            self.tail.abort(error)

    def _fail(self, error: BaseException, where: int) -> None:
        if self.head is not None:
            self.head.done = True
            self.head.cancel()
        if self.inlet is not None:
            self.inlet.cancel()
        for lg in self.logics[:where]:
            lg.on_cancel()
        for lg in self.logics[where:]:
            lg.on_failure(error)
        if self.tail is not None:
            self.tail.put_final(Failure(error))

    def _abort(self, error: BaseException) -> None:
        if self.head is not None:
            self.head.cancel()
        if self.inlet is not None:
            self.inlet.cancel()
        for lg in self.logics:
            lg.on_failure(error)
