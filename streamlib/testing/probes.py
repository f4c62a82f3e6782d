"""Probes: drive one end of a stream by hand and assert what happens at the other.

In the spirit of Akka's TestKit. ``TestSink.probe()`` is a Sink materializing a
:class:`SinkProbe`: it takes elements from its channel only when asked with
``request(n)``, so a test can withhold demand and watch backpressure reach
upstream. ``TestSource.probe()`` is a Source materializing a
:class:`SourceProbe`: the test sends elements, completion or an error, and can
wait until downstream has room or has cancelled.

Waiting and timeouts follow a clock: the probe's ``clock`` argument, else the
run's clock. With the real clock, ``timeout`` is in seconds of real time. With a
:class:`~streamlib.testing.VirtualClock`, a waiting probe moves virtual time
forward itself (as ``clock.run`` does: to the next timer whenever every task
waits), so ``await probe.expect_next()`` returns at the virtual instant the
element was emitted; ``timeout`` is then in virtual seconds, and waiting for
something that no timer can ever bring fails at once instead of hanging.
Do not drive the same clock from another task while a probe waits.

>>> src, sink = TestSource.probe().map(str).to_mat(TestSink.probe(), Keep.both).run()
>>> await src.send_next(1)
>>> sink.request(1)
>>> await sink.expect_next("1")
>>> src.send_complete()
>>> await sink.expect_complete()
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Generic, TypeVar

from .._dsl.module import Module
from .._dsl.sink import Sink
from .._dsl.source import Source
from .._runtime.channel import Channel
from .._runtime.clock import Clock
from .._runtime.context import RunContext
from .._runtime.materializer import ChannelSinkLogic, ChannelSourceLogic
from .._runtime.signals import END, Failure, Signal
from ..stage import Stage
from ._clock import VirtualClock

T = TypeVar("T")
R = TypeVar("R")

_NOTHING: Any = object()

#: Default seconds (real or virtual) an expectation waits before it fails.
DEFAULT_TIMEOUT = 3.0


class _Waiting:
    """Shared by both probes: the clock, the default timeout, bounded waiting."""

    def __init__(self, clock: Clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout

    async def _within(self, what: str, aw: Coroutine[Any, Any, R], timeout: float | None) -> R:
        limit = self.timeout if timeout is None else timeout
        clock = self.clock
        if isinstance(clock, VirtualClock):
            try:
                return await clock.run(aw, timeout=limit)
            except TimeoutError:
                raise AssertionError(f"{what}: nothing happened within {limit} virtual seconds") from None
            except RuntimeError as error:
                if not str(error).startswith("deadlock"):
                    raise
                raise AssertionError(
                    f"{what}: nothing happened, and nothing can: every task waits and no timer is pending"
                ) from None
        try:
            return await asyncio.wait_for(aw, limit)
        except TimeoutError:
            raise AssertionError(f"{what}: nothing happened within {limit} seconds") from None

    async def _pause(self, seconds: float) -> None:
        clock = self.clock
        if isinstance(clock, VirtualClock):
            await clock.advance(seconds)
        else:
            await clock.sleep(seconds)


def _describe(item: Any) -> str:
    if isinstance(item, Failure):
        return f"a failure ({item.error!r})"
    if item is END:
        return "completion"
    if isinstance(item, Signal):
        return f"signal {item!r}"
    return f"element {item!r}"


class SinkProbe(_Waiting, Generic[T]):
    """Materialized by ``TestSink.probe()``: request elements and assert what arrives.

    Elements stay in the probe's channel (so upstream stays backpressured)
    until requested. A failure overtakes elements that wait for demand, as in
    reactive streams; completion does not.
    """

    def __init__(self, channel: Channel, clock: Clock, timeout: float, signals: bool) -> None:
        super().__init__(clock, timeout)
        self._channel = channel
        self._keep_signals = signals
        self._demand = 0
        self._received: deque[Any] = deque()
        self._terminal: Signal | None = None
        self._cancelled = False
        #: Every signal (watermark, barrier) seen so far, in order.
        self.signals: list[Signal] = []

    # -- demand -------------------------------------------------------------

    def request(self, n: int) -> None:
        """Ask for ``n`` more elements."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"request(n) needs n >= 1, got {n!r}")
        self._demand += n

    @property
    def demand(self) -> int:
        """Elements requested and not yet received."""
        return self._demand

    def cancel(self) -> None:
        """Cancel the stream from downstream: upstream sees the cancellation."""
        self._channel.cancel()
        self._cancelled = True

    # -- expectations --------------------------------------------------------

    async def expect_next(self, value: Any = _NOTHING, *, timeout: float | None = None) -> Any:
        """The next element (requested before); fails unless it equals ``value`` when given."""
        x = await self._within("expect_next", self._next_element("expect_next"), timeout)
        if value is not _NOTHING and x != value:
            raise AssertionError(f"expect_next: expected {value!r}, got {x!r}")
        return x

    async def request_next(self, value: Any = _NOTHING, *, timeout: float | None = None) -> Any:
        """``request(1)`` then ``expect_next(value)``."""
        self.request(1)
        return await self.expect_next(value, timeout=timeout)

    async def expect_next_n(self, expected: int | Sequence[Any], *, timeout: float | None = None) -> list[Any]:
        """The next ``expected`` elements (a count), or exactly the elements of a sequence."""
        count = expected if isinstance(expected, int) else len(expected)

        async def take() -> list[Any]:
            return [await self._next_element("expect_next_n") for _ in range(count)]

        got = await self._within("expect_next_n", take(), timeout)
        if not isinstance(expected, int) and got != list(expected):
            raise AssertionError(f"expect_next_n: expected {list(expected)!r}, got {got!r}")
        return got

    async def expect_signal(self, *, timeout: float | None = None) -> Signal:
        """The next signal (watermark, barrier); needs ``TestSink.probe(signals=True)``."""
        if not self._keep_signals:
            raise RuntimeError("expect_signal needs TestSink.probe(signals=True)")

        async def wait() -> Signal:
            while True:
                self._pump()
                if self._received:
                    item = self._received.popleft()
                    if not isinstance(item, Signal):
                        raise AssertionError(f"expect_signal: got {_describe(item)}")
                    return item
                self._check_not_ended("expect_signal")
                if self._demand == 0 and self._channel._items:
                    raise AssertionError("expect_signal: elements wait for demand before anything else")
                await self._wait_change()

        return await self._within("expect_signal", wait(), timeout)

    async def expect_complete(self, *, timeout: float | None = None) -> None:
        """The stream completes next (no element, signal or error first)."""

        async def wait() -> None:
            while True:
                self._pump()
                if self._received:
                    raise AssertionError(f"expect_complete: got {_describe(self._received[0])}")
                if self._terminal is END:
                    return
                if isinstance(self._terminal, Failure):
                    raise AssertionError(f"expect_complete: the stream failed: {self._terminal.error!r}") from (
                        self._terminal.error
                    )
                if self._demand == 0 and self._channel._items:
                    raise AssertionError(
                        f"expect_complete: {self._waiting_elements()} elements wait for demand (request them first)"
                    )
                await self._wait_change()

        await self._within("expect_complete", wait(), timeout)

    async def expect_error(self, *, timeout: float | None = None) -> BaseException:
        """The stream fails next; returns its error."""

        async def wait() -> BaseException:
            while True:
                self._pump()
                if self._received:
                    raise AssertionError(f"expect_error: got {_describe(self._received[0])}")
                if isinstance(self._terminal, Failure):
                    return self._terminal.error
                if self._terminal is END:
                    raise AssertionError("expect_error: the stream completed")
                await self._wait_change()

        return await self._within("expect_error", wait(), timeout)

    async def expect_no_message(self, seconds: float) -> None:
        """Nothing is received for ``seconds`` (elements beyond demand are not received)."""
        self._expect_nothing("expect_no_message")
        await self._pause(seconds)
        self._expect_nothing("expect_no_message")

    async def to_strict(self, *, timeout: float | None = None) -> list[Any]:
        """Request everything and return all elements once the stream completes."""

        async def drain() -> list[Any]:
            self._demand = sys.maxsize
            out: list[Any] = []
            while True:
                self._pump()
                while self._received:
                    item = self._received.popleft()
                    if isinstance(item, Signal):
                        raise AssertionError(f"to_strict: got {_describe(item)}")
                    out.append(item)
                if self._terminal is END:
                    return out
                if isinstance(self._terminal, Failure):
                    raise AssertionError(
                        f"to_strict: the stream failed after {len(out)} elements: {self._terminal.error!r}"
                    ) from self._terminal.error
                await self._wait_change()

        try:
            return await self._within("to_strict", drain(), timeout)
        finally:
            self._demand = 0

    # -- mechanics -------------------------------------------------------------

    async def _next_element(self, what: str) -> Any:
        while True:
            self._pump()
            if self._received:
                item = self._received.popleft()
                if isinstance(item, Signal):
                    raise AssertionError(f"{what}: expected an element, got {_describe(item)}")
                return item
            self._check_not_ended(what)
            if self._demand == 0:
                raise AssertionError(f"{what}: no demand: call request(n) first")
            await self._wait_change()

    def _check_not_ended(self, what: str) -> None:
        term = self._terminal
        if term is END:
            raise AssertionError(f"{what}: the stream completed")
        if isinstance(term, Failure):
            raise AssertionError(f"{what}: the stream failed: {term.error!r}") from term.error

    def _expect_nothing(self, what: str) -> None:
        self._pump()
        if self._received:
            raise AssertionError(f"{what}: got {_describe(self._received[0])}")
        if self._terminal is not None:
            raise AssertionError(f"{what}: got {_describe(self._terminal)}")

    def _waiting_elements(self) -> int:
        return sum(len(item) for item in self._channel._items if type(item) is list)

    def _pump(self) -> None:
        """Move what demand allows from the channel to ``_received``; see signals and the end."""
        ch = self._channel
        items = ch._items
        while self._terminal is None and items:
            head = items[0]
            if type(head) is list:
                if self._demand == 0:
                    if any(isinstance(item, Failure) for item in items):
                        while not isinstance(items[0], Failure):
                            ch.get_nowait()
                        continue
                    return
                taken = _take(ch, self._demand)
                self._demand -= len(taken)
                self._received.extend(taken)
                continue
            ch.get_nowait()
            if head is END or isinstance(head, Failure):
                self._terminal = head
            else:
                self.signals.append(head)
                if self._keep_signals:
                    self._received.append(head)

    async def _wait_change(self) -> None:
        """Wait until something is added to the channel."""
        if self._cancelled:
            raise AssertionError("the probe has cancelled the stream: nothing more will arrive")
        ch = self._channel
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ch._getter = fut
        try:
            await fut
        finally:
            if ch._getter is fut:
                ch._getter = None


def _take(ch: Channel, n: int) -> list[Any]:
    """Remove up to ``n`` elements from the chunk at the head of ``ch`` (splitting it if needed)."""
    head = ch._items[0]
    if len(head) <= n:
        ch.get_nowait()
        return head  # type: ignore[no-any-return]
    ch._items[0] = head[n:]
    ch._size -= n
    putter = ch._putter
    if putter is not None and not putter.done() and ch._size < ch.capacity:
        putter.set_result(None)
    return head[:n]  # type: ignore[no-any-return]


class SourceProbe(_Waiting, Generic[T]):
    """Materialized by ``TestSource.probe()``: send elements, completion or an error by hand."""

    def __init__(self, channel: Channel, clock: Clock, timeout: float) -> None:
        super().__init__(clock, timeout)
        self._channel = channel
        self._closed = False

    @property
    def pending_demand(self) -> int:
        """Elements downstream would take now without waiting (0 once cancelled or full)."""
        ch = self._channel
        if ch.cancelled or self._closed:
            return 0
        return max(0, ch.capacity - len(ch))

    @property
    def cancelled(self) -> bool:
        """True once downstream has cancelled."""
        return self._channel.cancelled

    async def expect_request(self, *, timeout: float | None = None) -> int:
        """Wait until downstream has room; returns ``pending_demand``."""

        async def wait() -> int:
            ch = self._channel
            while True:
                if ch.cancelled:
                    raise AssertionError("expect_request: downstream cancelled")
                if ch.has_room():
                    return self.pending_demand
                await self._wait_putter()

        return await self._within("expect_request", wait(), timeout)

    async def expect_cancellation(self, *, timeout: float | None = None) -> None:
        """Wait until downstream cancels the stream."""

        async def wait() -> None:
            while not self._channel.cancelled:
                await self._wait_putter()

        await self._within("expect_cancellation", wait(), timeout)

    async def send_next(self, element: T, *, timeout: float | None = None) -> None:
        """Send one element once downstream has room."""
        await self.send_chunk((element,), timeout=timeout)

    async def send_chunk(self, elements: Iterable[T], *, timeout: float | None = None) -> None:
        """Send several elements as one chunk once downstream has room."""
        chunk = list(elements)
        self._check_open("send_chunk")
        if chunk:
            await self.expect_request(timeout=timeout)
            self._channel.put_nowait(chunk)

    async def send_signal(self, signal: Signal, *, timeout: float | None = None) -> None:
        """Send a signal (a ``Watermark`` or ``Barrier``) in order with the elements."""
        if signal is END or isinstance(signal, Failure):
            raise ValueError("use send_complete() or send_error(e) to end the stream")
        self._check_open("send_signal")
        await self.expect_request(timeout=timeout)
        self._channel.put_nowait(signal)

    def send_complete(self) -> None:
        """Complete the stream after what was sent."""
        self._check_open("send_complete")
        self._closed = True
        self._channel.put_final(END)

    def send_error(self, error: BaseException) -> None:
        """Fail the stream with ``error``."""
        self._check_open("send_error")
        self._closed = True
        self._channel.put_final(Failure(error))

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"{what} after send_complete() or send_error()")

    async def _wait_putter(self) -> None:
        """Wait until downstream takes something or cancels."""
        ch = self._channel
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ch._putter = fut
        try:
            await fut
        finally:
            if ch._putter is fut:
                ch._putter = None


# -- blueprints ---------------------------------------------------------------------


def _check_capacity(capacity: int) -> int:
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ValueError(f"probe capacity must be an int >= 1, got {capacity!r}")
    return capacity


class _SinkProbeStage(Stage):
    inputs = 1
    outputs = 0
    name = "probe_sink"

    def __init__(self, clock: Clock | None, timeout: float, capacity: int, signals: bool) -> None:
        self.clock = clock
        self.timeout = timeout
        self.capacity = _check_capacity(capacity)
        self.signals = signals

    def materialize(self, ctx: RunContext) -> tuple[ChannelSinkLogic, SinkProbe[Any]]:
        channel = Channel(self.capacity, "probe sink")
        clock = self.clock if self.clock is not None else ctx.clock
        return ChannelSinkLogic(channel), SinkProbe(channel, clock, self.timeout, self.signals)


class _SourceProbeStage(Stage):
    inputs = 0
    outputs = 1
    name = "probe_source"

    def __init__(self, clock: Clock | None, timeout: float, capacity: int) -> None:
        self.clock = clock
        self.timeout = timeout
        self.capacity = _check_capacity(capacity)

    def materialize(self, ctx: RunContext) -> tuple[ChannelSourceLogic, SourceProbe[Any]]:
        channel = Channel(self.capacity, "probe source")
        clock = self.clock if self.clock is not None else ctx.clock
        return ChannelSourceLogic(channel), SourceProbe(channel, clock, self.timeout)


class TestSink:
    """Factory of probe sinks."""

    __test__ = False  # not a pytest test class

    @staticmethod
    def probe(
        *,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        capacity: int = 1,
        signals: bool = False,
    ) -> Sink[Any, SinkProbe[Any]]:
        """A Sink materializing a :class:`SinkProbe`.

        ``capacity``: elements its channel holds (a chunk is accepted whole while
        below it); nothing is taken from the channel without demand.
        ``signals=True`` delivers watermarks and barriers in order (``expect_signal``);
        otherwise they are only recorded in ``probe.signals``.
        """
        return Sink(Module.of(_SinkProbeStage(clock, timeout, capacity, signals)))


class TestSource:
    """Factory of probe sources."""

    __test__ = False  # not a pytest test class

    @staticmethod
    def probe(
        *, clock: Clock | None = None, timeout: float = DEFAULT_TIMEOUT, capacity: int = 1
    ) -> Source[Any, SourceProbe[Any]]:
        """A Source materializing a :class:`SourceProbe`; ``capacity`` is its channel's size in elements."""
        return Source(Module.of(_SourceProbeStage(clock, timeout, capacity)))
