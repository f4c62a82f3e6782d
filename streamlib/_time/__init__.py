"""Event time and windows.

* ``durations.py``: event-time durations (int ms / timedelta) and processing-time ones (seconds).
* ``watermarks.py``: ``with_timestamps`` (timestamps, bounded out-of-orderness, idle timeout).
* ``windows.py``: the window assigners.
* ``aggregations.py``: count, sum, min, max, mean, collect, user aggregations.
* ``kernels.py``: the per-chunk window updates (the functions a compiled twin replaces).
* ``window_op.py``: the window operator (emission, lateness, state, checkpoints).
* ``results.py``: ``WindowResult``, ``LateRecord``, ``LateDataError``.
"""

from .results import LateDataError, LateRecord, WindowResult, is_late
from .windows import CountWindows, HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows, WindowAssigner

__all__ = [
    "CountWindows",
    "HoppingWindows",
    "LateDataError",
    "LateRecord",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "WindowAssigner",
    "WindowResult",
    "is_late",
]
