"""The test kit: check your own pipelines the way streamlib checks its own.

* :func:`assert_no_running_graphs` / the ``no_leaked_tasks`` pytest fixture:
  a test left no graph and no task running behind it.
* :func:`settle`: run every task that can run until all of them wait on something,
  instead of counting ``asyncio.sleep(0)``.
* :class:`VirtualClock`: processing time that moves only when the test says,
  so timers and windows are tested without sleeping.
* :func:`source_from_chunks` / :func:`split_at`: a source with chosen chunk
  boundaries, to check that chunking never changes a result.
* :class:`TestSource` / :class:`TestSink`: probes that drive a stream by hand
  (send elements, request them one by one, expect completion or an error).

Importing the kit needs no test framework; only the ``no_leaked_tasks`` fixture uses
pytest-asyncio, imported when the fixture is first looked up.
"""

from typing import Any

from ._chunks import source_from_chunks, split_at
from ._clock import VirtualClock, settle
from . import _leaks
from ._leaks import assert_no_running_graphs, leaked_tasks
from .probes import SinkProbe, SourceProbe, TestSink, TestSource

__all__ = [
    "SinkProbe",
    "SourceProbe",
    "TestSink",
    "TestSource",
    "VirtualClock",
    "assert_no_running_graphs",
    "leaked_tasks",
    "no_leaked_tasks",
    "settle",
    "source_from_chunks",
    "split_at",
]


def __getattr__(name: str) -> Any:
    # The pytest fixture is built on first access, so that importing the kit does not
    # need (or import) pytest.
    if name == "no_leaked_tasks":
        fixture = _leaks.no_leaked_tasks_fixture()
        globals()[name] = fixture
        return fixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
