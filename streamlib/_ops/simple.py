"""Synchronous stateful one-in one-out stages that are not element-wise."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from functools import reduce
from typing import Any

from .._native import fold_function
from .._runtime.context import RunContext
from ..stage import Stage, StageLogic, fail_future
from .sinks import _NOTHING, EmptyStreamError


class _LogicStage(Stage):
    """A stage made from a logic factory: ``make(ctx) -> (logic, mat)``."""

    def __init__(self, name: str, make: Callable[[RunContext], tuple[StageLogic, Any]]) -> None:
        self.name = name
        self.make = make

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, Any]:
        return self.make(ctx)


class IdentityLogic(StageLogic):
    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        return chunk


class AsyncBoundaryLogic(IdentityLogic):
    fuse_output = False


def identity() -> Stage:
    return _LogicStage("identity", lambda ctx: (IdentityLogic(), None))


def async_boundary() -> Stage:
    return _LogicStage("async_boundary", lambda ctx: (AsyncBoundaryLogic(), None))


class FoldLogic(StageLogic):
    def __init__(self, zero: Any, f: Callable[[Any, Any], Any]) -> None:
        self.acc = zero
        self.f = f
        self.fold = fold_function()  # reduce(f, chunk, acc), compiled when available

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        self.acc = self.fold(self.f, chunk, self.acc)
        return []

    def on_finish(self) -> list[Any]:
        return [self.acc]


def fold(zero: Any, f: Callable[[Any, Any], Any]) -> Stage:
    return _LogicStage("fold", lambda ctx: (FoldLogic(zero, f), None))


class ReduceLogic(StageLogic):
    def __init__(self, f: Callable[[Any, Any], Any]) -> None:
        self.acc: Any = _NOTHING
        self.f = f

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        self.acc = reduce(self.f, chunk) if self.acc is _NOTHING else reduce(self.f, chunk, self.acc)
        return []

    def on_finish(self) -> list[Any]:
        if self.acc is _NOTHING:
            raise EmptyStreamError(f"{self.stage_name}: the stream was empty")
        return [self.acc]


def reduce_stage(f: Callable[[Any, Any], Any]) -> Stage:
    return _LogicStage("reduce", lambda ctx: (ReduceLogic(f), None))


class GroupedLogic(StageLogic):
    def __init__(self, n: int) -> None:
        self.n = n
        self.buf: list[Any] = []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        buf = self.buf
        n = self.n
        buf.extend(chunk)
        if len(buf) < n:
            return []
        full = len(buf) - len(buf) % n
        out = [buf[i : i + n] for i in range(0, full, n)]
        self.buf = buf[full:]
        return out

    def on_finish(self) -> list[Any]:
        return [self.buf] if self.buf else []


def grouped(n: int) -> Stage:
    if n < 1:
        raise ValueError(f"grouped(n) needs n >= 1, got {n}")
    return _LogicStage("grouped", lambda ctx: (GroupedLogic(n), None))


class SlidingLogic(StageLogic):
    def __init__(self, n: int, step: int) -> None:
        self.n = n
        self.step = step
        self.buf: deque[Any] = deque()
        self.skip = 0
        self.fresh = 0

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out = []
        buf, n, step = self.buf, self.n, self.step
        for x in chunk:
            if self.skip:
                self.skip -= 1
                continue
            buf.append(x)
            self.fresh += 1
            if len(buf) == n:
                out.append(list(buf))
                self.fresh = 0
                if step >= n:
                    buf.clear()
                    self.skip = step - n
                else:
                    for _ in range(step):
                        buf.popleft()
        return out

    def on_finish(self) -> list[Any]:
        return [list(self.buf)] if self.buf and self.fresh else []


def sliding(n: int, step: int = 1) -> Stage:
    if n < 1 or step < 1:
        raise ValueError(f"sliding(n, step) needs n >= 1 and step >= 1, got {n}, {step}")
    return _LogicStage("sliding", lambda ctx: (SlidingLogic(n, step), None))


class IntersperseLogic(StageLogic):
    def __init__(self, start: Any, inject: Any, end: Any) -> None:
        self.start, self.inject, self.end = start, inject, end
        self.first = True

    def on_start(self) -> list[Any]:
        return [] if self.start is _NOTHING else [self.start]

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        out: list[Any] = []
        inject = self.inject
        for x in chunk:
            if not self.first:
                out.append(inject)
            self.first = False
            out.append(x)
        return out

    def on_finish(self) -> list[Any]:
        return [] if self.end is _NOTHING else [self.end]


def intersperse(inject: Any, start: Any = _NOTHING, end: Any = _NOTHING) -> Stage:
    return _LogicStage("intersperse", lambda ctx: (IntersperseLogic(start, inject, end), None))


class WatchTerminationLogic(IdentityLogic):
    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut

    def on_finish(self) -> list[Any]:
        if not self.fut.done():
            self.fut.set_result(None)
        return []

    def on_cancel(self) -> None:
        if not self.fut.done():
            self.fut.set_result(None)

    def on_failure(self, error: BaseException) -> None:
        fail_future(self.fut, error)


def watch_termination() -> Stage:
    def make(ctx: RunContext) -> tuple[StageLogic, asyncio.Future[None]]:
        fut: asyncio.Future[None] = ctx.new_future(cancels_run=False)
        return WatchTerminationLogic(fut), fut

    return _LogicStage("watch_termination", make)
