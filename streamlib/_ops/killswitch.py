"""Kill switches: stop a running stream from outside."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage


class KillSwitch:
    """Materialized by ``KillSwitches.single()``.

    ``shutdown()`` completes the stream downstream and cancels upstream: the
    elements already past the switch are still delivered. ``abort(error)`` fails
    it downstream with ``error`` at once, overtaking the elements buffered
    between the switch and the sinks (each stage on the way drops what it holds;
    an element a stage is working on is abandoned), and cancels upstream.
    """

    def __init__(self) -> None:
        self._logics: list[_KillSwitchLogic] = []
        self._state: BaseException | bool = False

    def shutdown(self) -> None:
        """Complete downstream, cancel upstream."""
        self._trigger(True)

    def abort(self, error: BaseException) -> None:
        """Fail downstream with ``error`` now, ahead of buffered elements; cancel upstream."""
        self._trigger(error)

    def _trigger(self, state: BaseException | bool) -> None:
        if self._state is not False:
            return
        self._state = state
        for logic in list(self._logics):
            if isinstance(state, BaseException) and logic.out is not None:
                logic.out.abort(state)  # at once, not when the switch's task next runs
            logic.wake()


class SharedKillSwitch(KillSwitch):
    """One switch for any number of streams: put ``switch.flow()`` in each."""

    def __init__(self, name: str = "shared") -> None:
        super().__init__()
        self.name = name

    def flow(self) -> Any:
        """A Flow that passes elements through until this switch is triggered."""
        from .._dsl.flow import Flow

        return Flow._of_stage(_KillSwitchStage(self))


class _KillSwitchLogic(AsyncLogic):
    def __init__(self, switch: KillSwitch) -> None:
        self.switch = switch
        self._waiter: asyncio.Future[None] | None = None
        self.out: Channel | None = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        loop = asyncio.get_running_loop()
        # Registered only while running: a run cancelled before it started leaves no trace.
        self.out = out
        self.switch._logics.append(self)
        try:
            while True:
                if self.switch._state is not False:
                    break
                if out.cancelled:
                    raise DownstreamCancelled(out.name)
                item = inlet.get_nowait()
                if item is None:
                    # Woken by input, by the switch, or by downstream taking or cancelling.
                    self._waiter = fut = loop.create_future()
                    inlet._getter = fut
                    out._putter = fut
                    try:
                        await fut
                    finally:
                        if inlet._getter is fut:
                            inlet._getter = None
                        if out._putter is fut:
                            out._putter = None
                    continue
                if item is END or isinstance(item, Failure):
                    out.put_final(item)  # type: ignore[arg-type]
                    return
                while not out.has_room() and self.switch._state is False:
                    self._waiter = fut = loop.create_future()
                    out._putter = fut
                    await fut
                if self.switch._state is not False:
                    break
                await out.put(item)
        finally:
            self.switch._logics.remove(self)
        state = self.switch._state
        inlet.cancel()
        if isinstance(state, BaseException):
            out.abort(state)
        else:
            out.put_final(END)


class _KillSwitchStage(Stage):
    name = "kill_switch"

    def __init__(self, switch: KillSwitch | None = None) -> None:
        self.switch = switch

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, KillSwitch]:
        switch = self.switch if self.switch is not None else KillSwitch()
        return _KillSwitchLogic(switch), switch


class KillSwitches:
    """Factories of kill-switch flows.

    >>> switch, done = source.via_mat(KillSwitches.single(), Keep.right).to_mat(sink, Keep.both).run()
    >>> switch.shutdown()
    """

    @staticmethod
    def single() -> Any:
        """A Flow materializing a :class:`KillSwitch` for this one run."""
        from .._dsl.flow import Flow

        return Flow._of_stage(_KillSwitchStage())

    @staticmethod
    def shared(name: str = "shared") -> SharedKillSwitch:
        """A switch created up front, usable in many streams through ``.flow()``."""
        return SharedKillSwitch(name)
