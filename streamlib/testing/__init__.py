"""The test kit: check your own pipelines the way streamlib checks its own.

* :func:`assert_no_running_graphs` / the ``no_leaked_tasks`` pytest fixture:
  a test left no graph and no task running behind it.
* :class:`VirtualClock`: processing time that moves only when the test says,
  so timers and windows are tested without sleeping.
* :func:`source_from_chunks` / :func:`split_at`: a source with chosen chunk
  boundaries, to check that chunking never changes a result.
* :class:`TestSource` / :class:`TestSink`: probes that drive a stream by hand
  (send elements, request them one by one, expect completion or an error).
"""

from ._chunks import source_from_chunks, split_at
from ._clock import VirtualClock
from ._leaks import assert_no_running_graphs, leaked_tasks, no_leaked_tasks
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
    "source_from_chunks",
    "split_at",
]
