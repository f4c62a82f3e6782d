"""Where unfinished asyncio tasks wait, for error messages about work that did not end."""

from __future__ import annotations

import asyncio
import os
from typing import Any


def task_place(task: asyncio.Task[Any]) -> str:
    """``file:line function`` of where ``task`` is suspended, innermost first (three frames at most)."""
    frames = []
    coro: Any = task.get_coro()
    while coro is not None:  # down the chain of awaits to where it is suspended
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " < ".join(reversed(frames[-3:])) or "(not started)"


def waiting_tasks(loop: asyncio.AbstractEventLoop) -> str:
    """Where the unfinished tasks of ``loop`` wait (see ``task_place``), alike ones counted, for a log line."""
    here = asyncio.current_task(loop)
    places: dict[str, int] = {}
    for task in asyncio.all_tasks(loop):
        if task is here or task.done():
            continue
        place = task_place(task)
        places[place] = places.get(place, 0) + 1
    return "; ".join(f"{n} x {place}" if n > 1 else place for place, n in sorted(places.items())) or "no task"
