"""Shared fixtures: every test checks it left no running graph or task behind."""

from __future__ import annotations

import os

import pytest

from streamlib.testing import no_leaked_tasks  # noqa: F401

pytest_plugins: list[str] = []


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> None:
    """Async tests get the leak check automatically."""
    if request.node.get_closest_marker("asyncio") is not None or _is_async(request):
        request.getfixturevalue("no_leaked_tasks")


def _is_async(request: pytest.FixtureRequest) -> bool:
    import inspect

    fn = getattr(request.node, "obj", None)
    return fn is not None and inspect.iscoroutinefunction(fn)


def pytest_report_header() -> str:
    from streamlib import native_enabled

    return f"streamlib native kernels: {'on' if native_enabled() else 'off'} (STREAMLIB_PURE={os.environ.get('STREAMLIB_PURE', '')})"
