"""Checks that a test left nothing running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .._runtime.graph_run import _running
from .._runtime.task_places import task_place


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
            names = [g.name for g in running] + [f"{t.get_name()} at {task_place(t)}" for t in tasks]
            raise AssertionError(f"still running after the test: {names}")
        await asyncio.sleep(0.001)


async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fixture: after the test, no graph and no other task may still run."""
    yield
    await assert_no_running_graphs()


async def _needs_pytest_asyncio() -> AsyncIterator[None]:
    """Stands in for the ``no_leaked_tasks`` fixture where pytest-asyncio is not installed."""
    raise RuntimeError(
        "the no_leaked_tasks fixture needs pytest-asyncio (pip install pytest-asyncio); "
        "without it, await assert_no_running_graphs() at the end of the test"
    )
    yield  # pragma: no cover - makes this an async generator like the fixture


_fixture: list[Any] = []


def no_leaked_tasks_fixture() -> Any:
    """The ``no_leaked_tasks`` pytest-asyncio fixture, built on first use.

    Built lazily so that importing the test kit neither needs nor imports pytest.
    """
    if not _fixture:
        try:
            import pytest_asyncio
        except ImportError:
            _fixture.append(_needs_pytest_asyncio)
        else:
            _fixture.append(pytest_asyncio.fixture(name="no_leaked_tasks")(_no_leaked_tasks))
    return _fixture[0]
