"""Substreams: ``group_by``, ``split_when``/``split_after`` and ``flat_map_merge``/``flat_map_concat``.

One :class:`Substreams` stage (an :class:`~streamlib.stage.AsyncLogic`) does
all of them. It has two halves joined by shared state:

* the *router* (a task of the stage) reads upstream and decides, per element,
  which substream it belongs to. A new substream is a sub-run of the user's
  blueprint (the Flow accumulated on a ``SubFlow``, or the Source ``f(x)``
  returns), materialized with the ordinary materializer between two channels the
  stage owns: the router puts the substream's elements on its input channel, the
  sub-run puts results on its output channel;
* the *merger* (the stage's own task) forwards whatever the substreams' output
  channels hold to the stage's outlet. Output channels tell the merger when they
  receive something (a ready queue), so waiting costs nothing per idle
  substream, whatever their number.

Backpressure is Akka's: every substream channel is bounded
(:data:`SUBSTREAM_BUFFER` elements), and a router blocked on a full substream
blocks the whole stage, so a slow substream slows upstream and memory stays
bounded by ``substreams * buffer``. ``parallelism`` bounds how many substreams
run at once; the router waits for a slot before opening another (so
``group_by`` with more live keys than ``parallelism`` waits for a substream to
complete, as in Akka). ``max_substreams`` bounds the open substreams of
``group_by``: one more key is :class:`TooManySubstreamsError`.

When the substream Flow is synchronous from end to end (``map``, ``filter``,
``fold``, ``scan``, ... with no timer and no async stage) and the substreams are
never made to wait for a slot (``merge_substreams()`` after ``group_by``, or any
``split_*``), the stage drives each substream itself, inline: a substream is
then just its fused logics (the same code an island runs), with no task and no
channel, and the outputs of one input chunk leave as one chunk. Results are
those of the general path; only the interleaving of different substreams'
outputs is fixed (the order their input arrived).

A substream that completes early (its flow took what it wanted) is closed: later
elements for its key are dropped unless ``allow_closed_substream_recreation``,
and for ``split_*`` up to the next split. A substream that fails fails the stage.
Sub-runs belong to the stage: when it ends for any reason they are cancelled.
Watermarks and barriers do not cross substream boundaries.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .._dsl.module import Module
from .._runtime.channel import Channel, DownstreamCancelled
from .._runtime.context import RunContext
from .._runtime.island import Island
from .._runtime.materializer import Edge, _fuse_chains
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, SinkLogic, Stage, StageLogic, annotate
from ._subrun import ChannelSinkStage, ChannelSourceStage, SubRuns, close_source

#: Elements a substream's input and output channels each hold before their producer waits.
SUBSTREAM_BUFFER = 256


class TooManySubstreamsError(RuntimeError):
    """``group_by`` met a new key while ``max_substreams`` substreams were open."""


# -- what decides the substreams ------------------------------------------------------


class GroupBy:
    kind = "group_by"

    def __init__(self, max_substreams: int, key: Callable[[Any], Any], allow_recreation: bool) -> None:
        if not isinstance(max_substreams, int) or isinstance(max_substreams, bool) or max_substreams < 1:
            raise ValueError(f"group_by(max_substreams, key) needs max_substreams >= 1, got {max_substreams!r}")
        if not callable(key):
            raise TypeError(f"group_by(max_substreams, key) needs a callable key, got {key!r}")
        self.max_substreams = max_substreams
        self.key = key
        self.allow_recreation = allow_recreation


class Split:
    def __init__(self, predicate: Callable[[Any], object], after: bool) -> None:
        if not callable(predicate):
            raise TypeError(f"split needs a callable predicate, got {predicate!r}")
        self.predicate = predicate
        self.after = after
        self.kind = "split_after" if after else "split_when"


class FlatMap:
    def __init__(self, f: Callable[[Any], Any], concat: bool) -> None:
        if not callable(f):
            raise TypeError(f"flat_map needs a callable f, got {f!r}")
        self.f = f
        self.kind = "flat_map_concat" if concat else "flat_map_merge"


Splitter = GroupBy | Split | FlatMap


class Substreams(Stage):
    """Route elements to substreams running ``flow`` (or the Sources of ``FlatMap``) and merge them."""

    def __init__(self, splitter: Splitter, flow: Module | None, parallelism: int) -> None:
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise ValueError(f"{splitter.kind}: parallelism must be an int >= 1, got {parallelism!r}")
        if flow is not None and (flow.inlet is None or flow.outlet is None):
            raise TypeError(f"{splitter.kind}: the substream blueprint must be a Flow")
        self.splitter = splitter
        self.flow = flow
        self.parallelism = parallelism
        self.name = splitter.kind

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _SubstreamsLogic(self, ctx), None

    def __repr__(self) -> str:
        if self.flow is None:
            return self.name
        inner = " -> ".join(s.stage_name() for s in self.flow.stages if s.stage_name() != "identity")
        return f"{self.name}[{inner or 'identity'}]"


# -- the channels between the stage and its substreams -----------------------------------


class _OutChannel(Channel):
    """A substream's output channel: tells the merger whenever it receives something."""

    __slots__ = ("logic", "sub")

    def __init__(self, capacity: int, name: str, logic: _SubstreamsLogic, sub: _Sub) -> None:
        super().__init__(capacity, name)
        self.logic = logic
        self.sub = sub

    async def put(self, item: list[Any] | Any) -> None:
        await super().put(item)
        self.logic.ready(self)

    def put_nowait(self, item: list[Any] | Any) -> bool:
        ok = super().put_nowait(item)
        if ok:
            self.logic.ready(self)
        return ok

    def put_final(self, item: Any) -> None:
        super().put_final(item)
        self.logic.ready(self)


class _Sub:
    __slots__ = ("key", "inlet", "out", "closed")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.inlet: Channel | None = None
        self.out: _OutChannel | None = None
        self.closed = False


class _FlowTemplate:
    """A substream Flow closed between two placeholder channel stages; only the channels change per run."""

    def __init__(self, flow: Module) -> None:
        n = len(flow.stages)
        assert flow.inlet is not None and flow.outlet is not None
        self.stages = flow.stages
        self.edges = (
            tuple(Edge(e.src + 1, e.src_port, e.dst + 1, e.dst_port) for e in flow.edges)
            + (Edge(0, 0, flow.inlet[0] + 1, flow.inlet[1]),)
            + (Edge(flow.outlet[0] + 1, flow.outlet[1], n + 1, 0),)
        )

    def closed(self, inlet: Channel, out: Channel) -> Module:
        stages = (ChannelSourceStage(inlet), *self.stages, ChannelSinkStage(out))
        return Module(stages, self.edges, None, None, _no_value)


def _no_value(mats: Sequence[Any]) -> None:
    return None


# -- the logic ---------------------------------------------------------------------------


class _SubstreamsLogic(AsyncLogic):
    def __init__(self, stage: Substreams, ctx: RunContext) -> None:
        self.stage = stage
        self.splitter = stage.splitter
        self.ctx = ctx
        self.buffer = min(SUBSTREAM_BUFFER, ctx.channel_capacity)
        self.runs = SubRuns()
        flow = stage.flow
        if flow is not None and ctx.supervision is not None:
            from .supervision import with_default_supervision

            flow = with_default_supervision(flow, ctx.supervision)
        self.flow = flow
        self.template = _FlowTemplate(flow) if flow is not None else None
        self.order = _linear_order(flow) if flow is not None else None
        self._probe: list[StageLogic] | None = None
        #: Open substreams by key (``group_by``); the current one is ``self.current`` for the others.
        self.open: dict[Any, _Sub] = {}
        self.closed_keys: set[Any] = set()
        self.current: _Sub | None = None
        self.current_has_elements = False
        self.running = 0  # substreams started and not yet completed
        self.started = 0
        self.router_done = False
        self.router_error: BaseException | None = None
        #: Upstream's failure: handed to the open substreams after their elements, raised once they ended.
        self.upstream_error: BaseException | None = None
        self._ready: deque[_OutChannel] = deque()
        self._queued: set[int] = set()
        self._wake: asyncio.Future[None] | None = None
        self._slot: asyncio.Future[None] | None = None

    # -- the inline path -------------------------------------------------------------

    def inline_logics(self) -> list[StageLogic] | None:
        """Fresh logics for one substream, fused; None when one of them cannot be driven inline."""
        if self._probe is not None:
            logics, self._probe = self._probe, None
            return logics
        assert self.flow is not None and self.order is not None
        out: list[StageLogic] = []
        for i in self.order:
            stage = self.flow.stages[i]
            logic, _mat = stage.materialize(self.ctx)
            if (
                not isinstance(logic, StageLogic)
                or isinstance(logic, SinkLogic)
                or not logic.fuse_output
                or logic.uses_timers
            ):
                return None
            logic.stage_name = stage.stage_name()
            out.append(logic)
        return _fuse_chains(out)

    def _can_inline(self) -> bool:
        sp = self.splitter
        if isinstance(sp, FlatMap) or self.order is None:
            return False
        if isinstance(sp, GroupBy) and self.stage.parallelism < sp.max_substreams:
            return False  # substreams may have to wait for a slot: they need tasks of their own
        self._probe = self.inline_logics()
        return self._probe is not None

    # -- notifications -------------------------------------------------------------

    def ready(self, ch: _OutChannel) -> None:
        key = id(ch)
        if key not in self._queued:
            self._queued.add(key)
            self._ready.append(ch)
        self._wake_merger()

    def _wake_merger(self) -> None:
        fut = self._wake
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _free_slot(self) -> None:
        fut = self._slot
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- merging (the stage's task) ----------------------------------------------------

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,), (out,) = inlets, outlets
        if self._can_inline():
            await _Inline(self).run(inlet, out)
            return
        router = self.ctx.loop.create_task(self._route_and_report(inlet))
        try:
            await self._merge(out)
        finally:
            router.cancel()
            try:
                await asyncio.wait([router])
            finally:
                if not router.cancelled():
                    router.exception()
                await self.runs.aclose()

    async def _merge(self, out: Channel) -> None:
        loop = self.ctx.loop
        ready, queued = self._ready, self._queued
        while True:
            if self.router_error is not None:
                raise self.router_error
            if out.cancelled:
                raise DownstreamCancelled(out.name)
            if not ready:
                if self.router_done and self.running == 0:
                    if self.upstream_error is not None:
                        raise self.upstream_error
                    return
                # Also woken by a cancellation downstream, even while no substream has output.
                self._wake = wake = loop.create_future()
                out._putter = wake
                try:
                    await wake
                finally:
                    self._wake = None
                    if out._putter is wake:
                        out._putter = None
                continue
            ch = ready.popleft()
            queued.discard(id(ch))
            item = ch.get_nowait()
            if item is None:
                continue
            if len(ch):
                queued.add(id(ch))
                ready.append(ch)  # round robin between substreams with output
            if type(item) is list:
                await out.put(item)
            elif item is END:
                self._finished(ch.sub)
            elif isinstance(item, Failure):
                if item.error is not self.upstream_error:
                    raise item.error
                self._finished(ch.sub)  # upstream's failure, after this substream's elements
            # other signals from inside a substream do not leave it

    def _finished(self, sub: _Sub) -> None:
        self.running -= 1
        sub.closed = True
        if self.open.get(sub.key) is sub:
            del self.open[sub.key]
            self.closed_keys.add(sub.key)
        self._free_slot()

    # -- routing (a task of the stage) --------------------------------------------------------

    async def _route_and_report(self, inlet: Channel) -> None:
        try:
            await self._route(inlet)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.router_error = error
        else:
            self.router_done = True
        finally:
            inlet.cancel()
            self._wake_merger()

    async def _route(self, inlet: Channel) -> None:
        sp = self.splitter
        while True:
            item = await inlet.get()
            if type(item) is list:
                if isinstance(sp, GroupBy):
                    await self._route_groups(sp, item)
                elif isinstance(sp, Split):
                    await self._route_split(sp, item)
                else:
                    for x in item:
                        await self._start_source(sp, x)
            elif item is END or isinstance(item, Failure):
                # A failure is in band: each open substream gets it after its elements.
                if isinstance(item, Failure):
                    self.upstream_error = item.error
                for sub in list(self.open.values()) + ([self.current] if self.current else []):
                    if sub.inlet is not None:
                        sub.inlet.put_final(item)
                return

    async def _wait_slot(self) -> None:
        while self.running >= self.stage.parallelism:
            self._slot = self.ctx.loop.create_future()
            try:
                await self._slot
            finally:
                self._slot = None

    def _start_flow(self, key: Any) -> _Sub:
        assert self.template is not None
        sub = _Sub(key)
        name = f"{self.stage_name}#{self.started}"
        sub.inlet = Channel(self.buffer, f"{name}.in")
        sub.out = _OutChannel(self.buffer, f"{name}.out", self, sub)
        self.started += 1
        self.running += 1
        self.runs.start(self.template.closed(sub.inlet, sub.out), self.ctx, name, self.buffer)
        return sub

    async def _route_groups(self, sp: GroupBy, chunk: list[Any]) -> None:
        key = sp.key
        groups: dict[Any, list[Any]] = {}
        for x in chunk:
            k = key(x)
            part = groups.get(k)
            if part is None:
                groups[k] = [x]
            else:
                part.append(x)
        for k, part in groups.items():
            sub = self.open.get(k)
            if sub is None:
                if k in self.closed_keys and not sp.allow_recreation:
                    continue  # that substream completed: it wants no more elements
                if len(self.open) >= sp.max_substreams:
                    self._forget_closing()
                if len(self.open) >= sp.max_substreams:
                    raise TooManySubstreamsError(
                        f"{self.stage_name}: key {k!r} would open substream {len(self.open) + 1}, "
                        f"more than max_substreams={sp.max_substreams}"
                    )
                await self._wait_slot()
                sub = self.open[k] = self._start_flow(k)
                self.closed_keys.discard(k)
            assert sub.inlet is not None
            try:
                await sub.inlet.put(part)
            except DownstreamCancelled:
                pass  # completed meanwhile; its END reaches the merger, which closes the key

    def _forget_closing(self) -> None:
        """Substreams that cancelled their input are completing: they no longer count as open."""
        for k, sub in list(self.open.items()):
            if sub.inlet is not None and sub.inlet.cancelled:
                del self.open[k]
                self.closed_keys.add(k)

    async def _route_split(self, sp: Split, chunk: list[Any]) -> None:
        p, after = sp.predicate, sp.after
        part: list[Any] = []
        for x in chunk:
            if after:
                if self.current is None:
                    await self._open_split()
                part.append(x)
                if p(x):
                    await self._close_split(part)
                    part = []
            else:
                if self.current is not None and p(x) and (part or self.current_has_elements):
                    await self._close_split(part)
                    part = []
                if self.current is None:
                    await self._open_split()
                part.append(x)
        if part:
            await self._feed_current(part)

    async def _open_split(self) -> None:
        await self._wait_slot()
        self.current = self._start_flow(None)
        self.current_has_elements = False

    async def _feed_current(self, part: list[Any]) -> None:
        sub = self.current
        assert sub is not None and sub.inlet is not None
        self.current_has_elements = True
        if not sub.inlet.cancelled:
            try:
                await sub.inlet.put(part)
            except DownstreamCancelled:
                pass  # the substream completed early: drop up to the next split

    async def _close_split(self, part: list[Any]) -> None:
        if part:
            await self._feed_current(part)
        sub = self.current
        assert sub is not None and sub.inlet is not None
        sub.inlet.put_final(END)
        self.current = None

    async def _start_source(self, sp: FlatMap, x: Any) -> None:
        blueprint = sp.f(x)
        module = getattr(blueprint, "_module", None)
        if not isinstance(module, Module) or module.inlet is not None or module.outlet is None:
            raise TypeError(f"{self.stage_name}: f must return a Source, got {blueprint!r} for element {x!r}")
        if self.ctx.supervision is not None:
            from .supervision import with_default_supervision

            module = with_default_supervision(module, self.ctx.supervision)
        await self._wait_slot()
        sub = _Sub(None)
        name = f"{self.stage_name}#{self.started}"
        sub.out = _OutChannel(self.buffer, f"{name}.out", self, sub)
        self.started += 1
        self.running += 1
        self.runs.start(close_source(module, sub.out), self.ctx, name, self.buffer)


def _linear_order(flow: Module) -> list[int] | None:
    """The stage indices of a one-in one-out chain from inlet to outlet; None for anything else."""
    if flow.inlet is None or flow.outlet is None:
        return None
    if any(st.inputs != 1 or st.outputs != 1 for st in flow.stages):
        return None
    nxt = {e.src: e.dst for e in flow.edges}
    order = [flow.inlet[0]]
    while order[-1] != flow.outlet[0]:
        i = nxt.get(order[-1])
        if i is None or len(order) > len(flow.stages):
            return None
        order.append(i)
    return order if len(order) == len(flow.stages) else None


class _Inline:
    """Substreams of synchronous stages, driven by the substreams stage's own task.

    Each substream is an :class:`Island` used only for its synchronous core
    (``_start``, ``_push``, ``_finish``): no head, no task, no channel. The
    outputs of all substreams for one input chunk are gathered and put on the
    outlet together; an error delivers what was gathered before it.
    """

    def __init__(self, logic: _SubstreamsLogic) -> None:
        self.logic = logic
        self.ctx = logic.ctx
        self.name = logic.stage_name
        self.tail = Channel(1, f"{self.name}.inline")  # never used: an island only gathers output with a tail
        self.open: dict[Any, Island] = {}
        self.current: Island | None = None
        self.current_done = False  # the current split substream completed early
        self.current_fed = False

    async def run(self, inlet: Channel, out: Channel) -> None:
        sp = self.logic.splitter
        try:
            while True:
                item = await inlet.get()
                outs: list[Any] = []
                try:
                    if type(item) is list:
                        if isinstance(sp, GroupBy):
                            self._groups(sp, item, outs)
                        else:
                            assert isinstance(sp, Split)
                            self._split(sp, item, outs)
                    elif item is END:
                        for isl in list(self.open.values()):
                            self._end(isl, outs)
                        self.open.clear()
                        if self.current is not None and not self.current_done:
                            self._end(self.current, outs)
                        self.current = None
                    elif isinstance(item, Failure):
                        raise item.error
                except Exception:
                    if outs:
                        try:
                            await self._put(out, outs)
                        except DownstreamCancelled:
                            pass
                    raise
                if outs:
                    await self._put(out, outs)
                if item is END:
                    return
        except BaseException as error:
            for isl in [*self.open.values(), *([self.current] if self.current is not None else [])]:
                for lg in isl.logics:
                    if isinstance(error, DownstreamCancelled):
                        lg.on_cancel()
                    else:
                        lg.on_failure(error)
            raise

    async def _put(self, out: Channel, outs: list[Any]) -> None:
        step = self.ctx.max_chunk
        for k in range(0, len(outs), step):
            await out.put(outs[k : k + step])

    # -- one substream --------------------------------------------------------------

    def _new(self, outs: list[Any]) -> Island:
        logics = self.logic.inline_logics()
        assert logics is not None  # the probe said every stage can run inline
        isl = Island(None, None, logics, self.tail, self.ctx)
        self._guard(isl, isl._start, outs)
        return isl

    def _guard(self, isl: Island, step: Any, outs: list[Any], *args: Any) -> None:
        try:
            step(*args)
        except Exception as error:
            where = isl.failed_at
            annotate(error, isl.logics[where].stage_name if 0 <= where < isl.n else self.name)
            self._gather(isl, outs)
            raise
        self._gather(isl, outs)

    @staticmethod
    def _gather(isl: Island, outs: list[Any]) -> None:
        for item in isl.out:
            if type(item) is list:
                outs.extend(item)  # END and signals stay inside the substream
        isl.out = []

    def _push(self, isl: Island, part: list[Any], outs: list[Any]) -> bool:
        """Feed ``part``; True when the substream completed (it wants no more)."""
        if isl.stop_at < 0:
            self._guard(isl, isl._push, outs, 0, part)
        if isl.stop_at >= 0:
            for lg in isl.logics[: isl.stop_at + 1]:
                lg.on_cancel()
            self._guard(isl, isl._finish, outs, isl.stop_at + 1)
            return True
        return False

    def _end(self, isl: Island, outs: list[Any]) -> None:
        if isl.stop_at < 0:
            self._guard(isl, isl._finish, outs, 0)

    # -- routing ------------------------------------------------------------------------

    def _groups(self, sp: GroupBy, chunk: list[Any], outs: list[Any]) -> None:
        key = sp.key
        groups: dict[Any, list[Any]] = {}
        for x in chunk:
            k = key(x)
            part = groups.get(k)
            if part is None:
                groups[k] = [x]
            else:
                part.append(x)
        closed = self.logic.closed_keys
        for k, part in groups.items():
            isl = self.open.get(k)
            if isl is None:
                if k in closed and not sp.allow_recreation:
                    continue  # that substream completed: it wants no more elements
                if len(self.open) >= sp.max_substreams:
                    raise TooManySubstreamsError(
                        f"{self.name}: key {k!r} would open substream {len(self.open) + 1}, "
                        f"more than max_substreams={sp.max_substreams}"
                    )
                isl = self.open[k] = self._new(outs)
                closed.discard(k)
                if isl.stop_at >= 0:  # complete before any element (take(0))
                    self._push(isl, [], outs)
                    del self.open[k]
                    closed.add(k)
                    continue
            if self._push(isl, part, outs):
                del self.open[k]
                closed.add(k)

    def _split(self, sp: Split, chunk: list[Any], outs: list[Any]) -> None:
        p, after = sp.predicate, sp.after
        part: list[Any] = []
        for x in chunk:
            if after:
                if self.current is None:
                    self._open_split(outs)
                part.append(x)
                if p(x):
                    self._close_split(part, outs)
                    part = []
            else:
                if self.current is not None and p(x) and (part or self.current_fed):
                    self._close_split(part, outs)
                    part = []
                if self.current is None:
                    self._open_split(outs)
                part.append(x)
        if part:
            self._feed(part, outs)

    def _open_split(self, outs: list[Any]) -> None:
        self.current = self._new(outs)
        self.current_done = False
        self.current_fed = False
        if self.current.stop_at >= 0:
            self._push(self.current, [], outs)
            self.current_done = True

    def _feed(self, part: list[Any], outs: list[Any]) -> None:
        assert self.current is not None
        self.current_fed = True
        if not self.current_done and self._push(self.current, part, outs):
            self.current_done = True  # completed early: drop up to the next split

    def _close_split(self, part: list[Any], outs: list[Any]) -> None:
        if part:
            self._feed(part, outs)
        assert self.current is not None
        if not self.current_done:
            self._end(self.current, outs)
        self.current = None
