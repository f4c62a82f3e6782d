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


#: Seconds any one test may take before it is failed with the stacks of every thread;
#: ``@pytest.mark.time_limit(seconds)`` sets another limit for one test.
DEFAULT_TIME_LIMIT = int(os.environ.get("STREAMLIB_TEST_TIME_LIMIT", "240"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "time_limit(seconds): fail the test if it runs longer than this")


class TestTookTooLong(Exception):
    """A test ran past its time limit (a hang must fail the run, never stall it)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):  # type: ignore[no-untyped-def]
    import faulthandler
    import signal
    import sys

    marker = item.get_closest_marker("time_limit")
    limit = int(marker.args[0]) if marker is not None else DEFAULT_TIME_LIMIT

    def expire(signum: int, frame: object) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TestTookTooLong(f"{item.nodeid} ran longer than {limit} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
