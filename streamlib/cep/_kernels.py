"""Per-chunk kernels of the match stage; ``streamlib._native._cep`` has their compiled twins.

``stamp``: the timestamps of a chunk of events, checked, with their minimum and
whether they ascend. ``close_due``: closing the windows that end by a time. The
match stage keeps one live entry per key with runs, ``(end, seq, key)``,
in a deque (entries pushed in order of their end) or a heap (the others);
``due[key]`` is the end of the key's live entry, so entries left behind by a
reschedule are recognised and skipped. Closing pops the smaller head of the two
until the next end lies past ``upto``; a key whose runs all started after its
window's start is rescheduled at its earliest run's end, otherwise
``NFA.expire`` emits what the closed runs amount to and the rest is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop
from itertools import islice
from operator import le
from typing import Any


def stamp(ts_of: Callable[[Any], Any], chunk: list[Any], name: str) -> tuple[list[int], int, bool]:
    """``(timestamps, the smallest, ascending)`` of a non-empty ``chunk``; TypeError naming a non-int timestamp."""
    tss = list(map(ts_of, chunk))
    if set(map(type, tss)) != _INT:
        bad = next(t for t in tss if type(t) is not int)
        raise TypeError(
            f"{name}: the timestamp function returned {bad!r} ({type(bad).__name__}); event "
            "timestamps are int milliseconds since the epoch"
        )
    return tss, min(tss), ascending(tss)


def ascending(tss: list[int]) -> bool:
    """True when the times never decrease."""
    return all(map(le, tss, islice(tss, 1, None)))


_INT = {int}


def close_due(logic: Any, upto: int, out: list[Any], confirm: bool = True) -> None:
    """Close every window of ``logic`` (the match stage's logic) ending at or before ``upto``."""
    heap, fifo, runs, due = logic.heap, logic.fifo, logic.runs, logic.due
    nfa = logic.nfa
    popleft = fifo.popleft
    while True:
        if fifo and fifo[0][0] <= upto and (not heap or fifo[0] < heap[0]):
            at, _, k = popleft()
        elif heap and heap[0][0] <= upto:
            at, _, k = heappop(heap)
        else:
            break
        if due.get(k) != at:
            continue
        del due[k]
        rs = runs.get(k)
        if not rs:
            continue
        left = nfa.expire(k, rs, upto, out, confirm)
        if left:
            if left is not rs:
                runs[k] = left
                if logic.tracking:
                    logic.state.dirty.add(k)
            logic._schedule(min(r[4] for r in left) + logic.within, k)
        else:
            del runs[k]
            logic.state.remove(k)
