"""Cancellation at random points leaves nothing behind.

A thousand runs of pipelines with async boundaries, junctions, a kill switch and a
queue source are stopped at a random moment in a random way: cancelling the task
that awaits the result, cancelling the materialized future, cancelling the
running graph, a kill switch (shutdown or abort), or a ``Sink.head`` downstream.
Afterwards no graph and no task may be running, every generator the runs
started must have been closed (its ``finally`` ran), and every queue producer
must have been told the stream is gone.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from streamlib import (
    Broadcast,
    Flow,
    GraphBuilder,
    Keep,
    KillSwitches,
    Merge,
    QueueClosedError,
    Sink,
    Source,
)
from streamlib.testing import assert_no_running_graphs, leaked_tasks

RUNS = 1000
SEED = 20240611


@dataclass
class Tracked:
    """Counts for the generators of one run: started, closed (``finally`` ran), exhausted."""

    started: int = 0
    closed: int = 0
    exhausted: int = 0

    def numbers(self, n: int) -> Iterator[int]:
        def gen() -> Iterator[int]:
            self.started += 1
            try:
                yield from range(n)
                self.exhausted += 1
            finally:
                self.closed += 1

        return gen()


class Stop(Exception):
    pass


def linear(t: Tracked, n: int, sink: Any, switch: bool) -> Any:
    src = Source.from_iterator(lambda: t.numbers(n)).map(lambda x: x + 1).async_boundary()
    if switch:
        src = src.via_mat(KillSwitches.single(), Keep.right)
    src = src.filter(lambda x: x % 3 != 0).async_boundary().map(lambda x: x * 2)
    return src.to_mat(sink, Keep.both)


def fan_out_in(t: Tracked, n: int, sink: Any, switch: bool) -> Any:
    b = GraphBuilder()
    src = b.add(Source.from_iterator(lambda: t.numbers(n)))
    bcast, merge = b.add(Broadcast(2)), b.add(Merge(2))
    src >> bcast
    bcast.out(0) >> Flow.map(lambda x: x * 2) >> merge.inp(0)
    bcast.out(1) >> Flow.filter(lambda x: x % 2 == 0).async_boundary() >> merge.inp(1)
    fan: Any = b.to_source(merge)
    if switch:
        fan = fan.via_mat(KillSwitches.single(), Keep.right)
    return fan.to_mat(sink, Keep.both)


PIPELINES = {"linear": linear, "fan": fan_out_in}
MODES = ("cancel_task", "cancel_future", "cancel_graph", "shutdown", "abort", "head")


async def one_run(rng: random.Random, i: int) -> str:
    """One run stopped at a random point; returns how it went: completed, cut or unstarted."""
    t = Tracked()
    mode = rng.choice(MODES)
    kind = rng.choice(("linear", "fan", "queue"))
    n = rng.choice((1, 10, 1000, 100_000))
    sink = Sink.head_option() if mode == "head" else Sink.ignore()
    switch = mode in ("shutdown", "abort")
    producer: asyncio.Task[None] | None = None
    if kind == "queue":
        src: Any = Source.queue(rng.choice((1, 8)))
        if switch:
            src = src.via_mat(KillSwitches.single(), Keep.both)
        graph = src.map(lambda x: x + 1).async_boundary().to_mat(sink, Keep.both)
        (queue_mat, result), running = graph.run_graph(max_chunk=rng.choice((1, 16)), channel_capacity=16)
        queue, switch_value = queue_mat if switch else (queue_mat, None)

        async def produce() -> None:
            with closing(t.numbers(n)) as numbers:
                try:
                    for x in numbers:
                        await queue.offer(x)
                    queue.complete()
                except QueueClosedError:
                    pass

        producer = asyncio.create_task(produce())
    else:
        graph = PIPELINES[kind](t, n, sink, switch)
        (switch_value, result), running = graph.run_graph(max_chunk=rng.choice((1, 16)), channel_capacity=16)

    async def awaiter() -> Any:
        return await result

    waiting = asyncio.create_task(awaiter())
    for _ in range(rng.choice((rng.randrange(10), rng.randrange(10, 200)))):
        await asyncio.sleep(0)

    if mode == "cancel_task":
        waiting.cancel()
    elif mode == "cancel_future":
        result.cancel()
    elif mode == "cancel_graph":
        running.cancel()
    elif mode == "shutdown":
        switch_value.shutdown()
    elif mode == "abort":
        switch_value.abort(Stop(i))

    await asyncio.wait([waiting])
    await running.wait()
    if producer is not None:
        await asyncio.wait_for(producer, timeout=5)
    # Consume whatever outcome the awaiting task had, so no exception goes unretrieved.
    if not waiting.cancelled():
        waiting.exception()
    if not result.cancelled():
        result.exception()

    assert running.done, (i, kind, mode)
    assert t.started == t.closed, (i, kind, mode, t.started, t.closed)
    if not t.started:
        return "unstarted"
    return "completed" if t.exhausted else "cut"


async def test_a_thousand_runs_cancelled_at_random_points_leave_nothing_behind() -> None:
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    for i in range(RUNS):
        outcomes[await one_run(rng, i)] += 1
    await assert_no_running_graphs()
    assert leaked_tasks() == []
    # The random points really fall before, during and after the streams' lives.
    assert outcomes["cut"] > RUNS // 4, outcomes
    assert outcomes["completed"] > RUNS // 20, outcomes


@pytest.mark.parametrize("mode", ["cancel_future", "cancel_graph"])
async def test_a_queue_source_cancelled_before_it_ran_releases_the_producer(mode: str) -> None:
    (queue, fut), running = Source.queue(1).async_boundary().to_mat(Sink.ignore(), Keep.both).run_graph()
    if mode == "cancel_future":
        fut.cancel()
    else:
        running.cancel()
    await running.wait()
    with pytest.raises(QueueClosedError):
        for x in range(10):
            await asyncio.wait_for(queue.offer(x), timeout=5)


@pytest.mark.parametrize("started", [False, True])
async def test_a_sink_queue_puller_learns_that_the_stream_was_cancelled(started: bool) -> None:
    pull, running = Source.repeat(1).async_boundary().to_mat(Sink.queue(4), Keep.right).run_graph()
    if started:
        assert await pull.pull() == 1
    running.cancel()
    await running.wait()
    with pytest.raises(QueueClosedError):
        while True:
            await asyncio.wait_for(pull.pull(), timeout=5)


async def test_a_generator_source_is_closed_when_downstream_fails() -> None:
    t = Tracked()
    fut = (
        Source.from_iterator(lambda: t.numbers(1_000_000))
        .async_boundary()
        .map(lambda x: 1 // (x - 100))
        .run_with(Sink.ignore())
    )
    with pytest.raises(ZeroDivisionError):
        await fut
    await assert_no_running_graphs()
    assert t.started == t.closed == 1


async def test_an_async_generator_source_is_closed_when_cancelled() -> None:
    closed: list[bool] = []
    running = asyncio.Event()

    async def agen() -> Any:
        try:
            i = 0
            while True:
                yield i
                i += 1
                if i == 20:
                    running.set()
                await asyncio.sleep(0)
        finally:
            closed.append(True)

    fut = Source.from_async_iterable(agen).run_with(Sink.ignore())
    await running.wait()
    fut.cancel()
    await assert_no_running_graphs()
    assert closed == [True]


async def test_cancelling_a_graph_before_its_tasks_started_settles_its_futures() -> None:
    fut, running = Source.repeat(1).async_boundary().to_mat(Sink.ignore(), Keep.right).run_graph()
    running.cancel()
    await running.wait()
    assert fut.done()


# -- a run and the task that started it -----------------------------------------------------------


class Counting:
    """An endless generator source that counts what it yielded and whether it was closed."""

    def __init__(self) -> None:
        self.yielded = 0
        self.closed = False

    def __call__(self) -> Iterator[int]:
        try:
            while True:
                self.yielded += 1
                yield self.yielded
        finally:
            self.closed = True


async def _quiet(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_a_task_cancelled_before_its_first_step_starts_no_run() -> None:
    source = Counting()

    async def job() -> None:
        await Source.from_iterator(source).run_with(Sink.ignore())

    task = asyncio.create_task(job())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _quiet()
    assert source.yielded == 0
    assert leaked_tasks() == []


async def test_a_run_ends_with_the_task_that_started_it_when_that_task_is_cancelled() -> None:
    source = Counting()
    started = asyncio.Event()
    runs: list[asyncio.Future[None]] = []

    async def job() -> None:
        runs.append(Source.from_iterator(source).run_with(Sink.ignore()))
        started.set()
        await asyncio.Event().wait()  # cancelled here, never awaiting the run

    task = asyncio.create_task(job())
    await started.wait()
    await _quiet()
    assert source.yielded > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_no_running_graphs()
    assert runs[0].cancelled()
    assert source.closed
    yielded = source.yielded
    await _quiet()
    assert source.yielded == yielded


async def test_a_task_that_returns_hands_its_run_on() -> None:
    async def start() -> asyncio.Future[list[int]]:
        return Source.from_iterable(range(5)).run_with(Sink.collect())

    done = await asyncio.create_task(start())
    assert await done == [0, 1, 2, 3, 4]
