"""What every stage sees while it materializes: the loop, the clock, sizes, the graph."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .clock import Clock, LoopClock

if TYPE_CHECKING:
    from .graph_run import RunningGraph

#: Largest chunk a stage forwards at once.
DEFAULT_MAX_CHUNK = 1024
#: Elements a channel between two islands holds before its producer waits.
DEFAULT_CHANNEL_CAPACITY = 4096


@dataclass
class RunContext:
    """Per-run settings and services shared by all stages of one run."""

    loop: asyncio.AbstractEventLoop
    clock: Clock = field(default_factory=LoopClock)
    max_chunk: int = DEFAULT_MAX_CHUNK
    channel_capacity: int = DEFAULT_CHANNEL_CAPACITY
    graph: RunningGraph | None = None
    #: The run's default supervision decider (``run(supervision=...)``); None means stop.
    supervision: Any = None
    #: Per-operator element counters (``run(metrics=...)``, a Kafka app's registry); None: not counted.
    meters: Any = None

    def new_future(self, cancels_run: bool = True) -> asyncio.Future[Any]:
        """A future for a materialized value, settled at the latest when the run ends.

        With ``cancels_run``, cancelling it (or the task awaiting it) cancels the whole run.
        """
        fut: asyncio.Future[Any] = self.loop.create_future()
        if cancels_run:
            fut.add_done_callback(self._on_value_done)
        if self.graph is not None:
            self.graph.futures.append(fut)
        return fut

    def _on_value_done(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() and self.graph is not None:
            self.graph.cancel()
