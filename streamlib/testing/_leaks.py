"""Checks that a test left nothing running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .._runtime.graph_run import _running


def leaked_tasks() -> list[asyncio.Task[object]]:
    """Tasks of the running loop other than the current one that are not done."""
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


async def assert_no_running_graphs(timeout: float = 1.0) -> None:
    """Fail unless every graph started so far has ended (waiting up to ``timeout`` s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        running = [g for g in _running if g.task is not None and g.task.get_loop() is loop and not g.done]
        tasks = leaked_tasks()
        if not running and not tasks:
            return
        if loop.time() >= deadline:
            names = [g.name for g in running] + [t.get_name() for t in tasks]
            raise AssertionError(f"still running after the test: {names}")
        await asyncio.sleep(0.001)


try:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def no_leaked_tasks() -> AsyncIterator[None]:
        """Fixture: after the test, no graph and no other task may still run."""
        yield
        await assert_no_running_graphs()

except ImportError:  # pragma: no cover - the fixture needs pytest-asyncio

    async def no_leaked_tasks() -> AsyncIterator[None]:  # type: ignore[misc]
        raise RuntimeError("the no_leaked_tasks fixture needs pytest-asyncio")
        yield
