"""The test kit: check your own pipelines the way streamlib checks its own.

* :func:`assert_no_running_graphs` / the ``no_leaked_tasks`` pytest fixture:
  a test left no graph and no task running behind it.
"""

from ._leaks import assert_no_running_graphs, leaked_tasks, no_leaked_tasks

__all__ = ["assert_no_running_graphs", "leaked_tasks", "no_leaked_tasks"]
