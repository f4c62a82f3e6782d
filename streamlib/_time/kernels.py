"""Per-chunk window updates: the hot loops of the window operators.

One function per window family. Each takes one input chunk and the operator's
live state (plain dicts), applies every element in order, and reports what it
did through output containers the caller owns; it never emits, never touches
the store and never looks at the watermark except through ``closed_to``. These
are the functions a compiled twin replaces; the contract below is exhaustive.

Common arguments:

* ``ts_of(e) -> int``, ``key_of(e) -> hashable``: the user's functions.
* ``value_of``: the aggregated value is ``value_of(e)``, or ``e`` itself when
  ``value_of`` is None.
* ``create(v) -> acc`` and ``add(acc, v) -> acc`` (``merge(a, b)`` for
  sessions): the aggregation. ``add`` may mutate ``acc``; the state keeps
  whatever it returns.
* ``closed_to``: ``watermark - allowed_lateness``. A window ``[s, e)`` with
  ``e <= closed_to`` is closed. An element whose earliest window is closed is
  *late*: it changes no state and is appended to ``late`` as
  ``(element, ts, key, window_start, window_end)`` naming that window.

Exceptions from user functions propagate unchanged; the elements before the
failing one have been applied.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Hashable
from copy import copy
from heapq import heappop, heappush
from operator import itemgetter
from typing import TYPE_CHECKING, Any

#: Marks "no accumulator yet" in dict lookups.
MISSING: Any = object()

_ts_key = itemgetter(0)


def update_fixed(
    chunk: list[Any],
    ts_of: Callable[[Any], int],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    size: int,
    step: int,
    offset: int,
    create: Callable[[Any], Any],
    add: Callable[[Any, Any], Any],
    accs: dict[tuple[Hashable, int], Any],
    closed_to: int,
    touched: set[tuple[Hashable, int]],
    created: list[tuple[Hashable, int]],
    late: list[tuple[Any, int, Hashable, int, int]],
) -> None:
    """Tumbling (``step == size``) and hopping windows.

    Element ``e`` with timestamp ``ts`` belongs to every window
    ``[s, s + size)`` with ``s <= ts < s + size`` and ``s ≡ offset (mod step)``.
    ``accs[(key, s)]`` holds each open window's accumulator: ``create(v)``
    when the element is the window's first, else ``add(acc, v)``. Each window
    changed is added to ``touched``; each window created is appended to
    ``created`` (in creation order). Late when ``s_min + size <= closed_to`` for
    the earliest window ``s_min``.
    """
    if step == size:  # tumbling: one window per element
        for e in chunk:
            ts = ts_of(e)
            k = key_of(e)
            start = ts - (ts - offset) % size
            if start + size <= closed_to:
                late.append((e, ts, k, start, start + size))
                continue
            wk = (k, start)
            v = e if value_of is None else value_of(e)
            acc = accs.get(wk, MISSING)
            if acc is MISSING:
                accs[wk] = create(v)
                created.append(wk)
            else:
                accs[wk] = add(acc, v)
            touched.add(wk)
        return
    for e in chunk:
        ts = ts_of(e)
        k = key_of(e)
        last = ts - (ts - offset) % step
        first = last - ((size - 1 - (ts - last)) // step) * step
        if first + size <= closed_to:
            late.append((e, ts, k, first, first + size))
            continue
        v = e if value_of is None else value_of(e)
        s = first
        while s <= last:
            wk = (k, s)
            acc = accs.get(wk, MISSING)
            if acc is MISSING:
                accs[wk] = create(v)
                created.append(wk)
            else:
                accs[wk] = add(acc, v)
            touched.add(wk)
            s += step


#: ``closed_end`` of a session entry whose key has no closed session yet.
NO_CLOSED = -(2**63)


def update_sessions(
    chunk: list[Any],
    ts_of: Callable[[Any], int],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    gap: int,
    create: Callable[[Any], Any],
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any],
    sessions: dict[Hashable, list[Any]],
    closed_to: int,
    touched: set[Hashable],
    created: list[tuple[Hashable, int]],
    late: list[tuple[Any, int, Hashable, int, int]],
) -> None:
    """Session windows.

    ``sessions[key]`` is one flat list per key::

        [closed_start, closed_end, start_1, end_1, acc_1, start_2, end_2, acc_2, ...]

    ``closed_start``/``closed_end`` bound the key's latest closed session
    (``closed_end == NO_CLOSED`` when there is none); then come the key's open
    sessions, three items each (``end`` = last timestamp + gap). An element at
    ``ts`` spans ``[ts, ts + gap)``.

    * Late when ``ts < closed_end`` (it would join the closed session, or lies
      before it); when ``ts + 2 * gap <= closed_to`` (an open session grows
      back at most one gap past ``closed_to - gap``); or when it overlaps no
      open session and ``ts + gap <= closed_to`` (its own session would be
      closed already). The second rule makes the first one redundant once
      ``closed_to >= closed_end + 2 * gap``, which is when the caller may
      forget a closed session.
    * Otherwise it joins every open session it overlaps (``start < ts + gap and
      ts < end``), merging them into the first one found (``merge`` of
      accumulators, bounds widened), then ``add``; with no overlap it starts
      ``ts, ts + gap, create(v)`` at the end of the list and is appended to
      ``created`` as ``(key, end)``.

    Each key applied to is added to ``touched``.
    """
    for e in chunk:
        ts = ts_of(e)
        k = key_of(e)
        end = ts + gap
        entry = sessions.get(k)
        if entry is None:
            if end <= closed_to:
                late.append((e, ts, k, ts, end))
                continue
            sessions[k] = [0, NO_CLOSED, ts, end, create(e if value_of is None else value_of(e))]
            created.append((k, end))
            touched.add(k)
            continue
        if ts < entry[1]:
            late.append((e, ts, k, entry[0], entry[1]))
            continue
        if end + gap <= closed_to:
            late.append((e, ts, k, ts, end))
            continue
        hit = -1
        i = 2
        n = len(entry)
        while i < n:
            if entry[i] < end and ts < entry[i + 1]:
                if hit < 0:
                    hit = i
                else:  # a second overlapping session: fold it into the first
                    if entry[i] < entry[hit]:
                        entry[hit] = entry[i]
                    if entry[i + 1] > entry[hit + 1]:
                        entry[hit + 1] = entry[i + 1]
                    entry[hit + 2] = merge(entry[hit + 2], entry[i + 2])
                    del entry[i : i + 3]
                    n -= 3
                    continue
            i += 3
        v = e if value_of is None else value_of(e)
        if hit < 0:
            if end <= closed_to:
                late.append((e, ts, k, ts, end))
                continue
            entry += (ts, end, create(v))
            created.append((k, end))
        else:
            if ts < entry[hit]:
                entry[hit] = ts
            if end > entry[hit + 1]:
                entry[hit + 1] = end
            entry[hit + 2] = add(entry[hit + 2], v)
        touched.add(k)


class SessionCore:
    """The session windows of one operator: live sessions, when each closes, when each key is forgotten.

    ``sessions`` is the operator's state dict (the layout of
    :func:`update_sessions`); the core also keeps an index of close times
    (every key with open sessions, at the earliest end among them, ordered by
    time and then by when it was scheduled) and a FIFO of keys left with only
    a closed session (``tombs``), each due two gaps after that session's end.
    The compiled twin (``streamlib._native._windows.SessionCore``) keeps the
    same contract: same state, same outputs in the same order, same calls of
    user functions, same exceptions.

    * :meth:`update` applies one chunk (:func:`update_sessions`) and schedules
      the sessions it created, also those created before an exception.
    * :meth:`close` handles a new ``closed_to``: every session with
      ``end <= closed_to`` is closed: appended to ``out`` as
      ``result_type(key, start, end, value)`` when ``emit`` (in order of
      scheduled close time, a key's sessions by end), recorded as the key's
      closed session and the key added to ``dirty``; then each key whose entry
      holds only a closed session ending at ``at - 2 * gap`` with
      ``at <= closed_to`` is deleted from ``sessions`` and passed to
      ``remove``.
    * :meth:`flush` closes every open session (end of stream) and forgets the tombs.
    * :meth:`restore` rebuilds the index and the tombs from ``sessions`` (after a reload).
    """

    def __init__(
        self,
        ts_of: Callable[[Any], int],
        key_of: Callable[[Any], Hashable],
        value_of: Callable[[Any], Any] | None,
        gap: int,
        create: Callable[[Any], Any],
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any],
        result: Callable[[Any], Any] | None,
        result_type: Callable[[Hashable, int, int, Any], Any],
        sessions: dict[Hashable, list[Any]],
    ) -> None:
        self.ts_of, self.key_of, self.value_of = ts_of, key_of, value_of
        self.gap, self.forget = gap, 2 * gap
        self.create, self.add, self.merge, self.result = create, add, merge, result
        self.result_type = result_type
        self.sessions = sessions
        self.heap: list[Any] = []  # distinct close times
        self.by_close: dict[Any, list[Hashable]] = {}  # close time -> keys, in scheduling order
        self.tombs: deque[tuple[Any, Hashable]] = deque()

    def schedule(self, at: Any, k: Hashable) -> None:
        """Look at key ``k`` again once ``closed_to >= at``."""
        keys = self.by_close.get(at)
        if keys is None:
            self.by_close[at] = [k]
            heappush(self.heap, at)
        else:
            keys.append(k)

    def update(self, chunk: list[Any], closed_to: int, touched: set[Hashable] | None, late: list[Any]) -> None:
        """Apply ``chunk`` (:func:`update_sessions`) and schedule the sessions it created.

        ``touched`` None: the keys applied to are not collected.
        """
        created: list[tuple[Hashable, int]] = []
        try:
            PURE["update_sessions"](
                chunk, self.ts_of, self.key_of, self.value_of, self.gap, self.create, self.add, self.merge,
                self.sessions, closed_to, set() if touched is None else touched, created, late,
            )  # fmt: skip
        finally:
            schedule = self.schedule
            for k, end in created:
                schedule(end, k)

    def close(self, closed_to: Any, emit: bool, dirty: set[Hashable] | None, remove: Callable[[Hashable], Any],
              out: list[Any]) -> None:  # fmt: skip
        """Close the sessions ending at or before ``closed_to``, then forget the keys due."""
        heap = self.heap
        if heap and heap[0] <= closed_to:
            keys: list[Hashable] = []
            by_close = self.by_close
            while heap and heap[0] <= closed_to:
                keys.extend(by_close.pop(heappop(heap)))
            self._expire(keys, closed_to, emit, dirty, out)
        tombs, sessions, forget = self.tombs, self.sessions, self.forget
        while tombs and tombs[0][0] <= closed_to:
            at, k = tombs.popleft()
            entry = sessions.get(k)
            if entry is not None and len(entry) == 2 and entry[1] + forget == at:
                del sessions[k]
                remove(k)

    def flush(self, dirty: set[Hashable] | None, out: list[Any]) -> None:
        """End of stream: emit every open session (in order of close time) and forget the tombs."""
        keys: list[Hashable] = []
        by_close = self.by_close
        for at in sorted(by_close):
            keys.extend(by_close[at])
        by_close.clear()
        self.heap.clear()
        self._expire(keys, 2**63, True, dirty, out)
        self.tombs.clear()

    def restore(self) -> None:
        """Schedule every key of ``sessions`` (loaded from a store): open ones, or their forgetting."""
        tombs = []
        forget = self.forget
        for k, entry in self.sessions.items():
            if len(entry) > 2:
                self.schedule(min(entry[3::3]), k)
            else:
                tombs.append((entry[1] + forget, k))
        tombs.sort(key=_first)
        self.tombs.extend(tombs)

    def _expire(self, keys: list[Hashable], closed_to: Any, emit: bool, dirty: set[Hashable] | None,
                out: list[Any]) -> None:  # fmt: skip
        sessions, forget, result, make = self.sessions, self.forget, self.result, self.result_type
        schedule = self.schedule
        tombs: list[tuple[Any, Hashable]] = []
        for k in dict.fromkeys(keys):
            entry = sessions.get(k)
            if entry is None:
                continue
            n = len(entry)
            if n == 5:  # the common case: one open session
                end = entry[3]
                if end > closed_to:
                    schedule(end, k)  # it grew since it was scheduled
                    continue
                if emit:
                    acc = entry[4]
                    out.append(make(k, entry[2], end, acc if result is None else result(acc)))
                entry[0] = entry[2]
                entry[1] = end
                del entry[2:]
            elif n > 5:
                done = sorted(
                    ((entry[i + 1], entry[i], entry[i + 2]) for i in range(2, n, 3) if entry[i + 1] <= closed_to),
                    key=_first,
                )
                if not done:
                    schedule(min(entry[3::3]), k)
                    continue
                if emit:
                    for end, start, acc in done:
                        out.append(make(k, start, end, acc if result is None else result(acc)))
                entry[2:] = [x for i in range(2, n, 3) if entry[i + 1] > closed_to for x in entry[i : i + 3]]
                entry[0], entry[1] = done[-1][1], done[-1][0]
            else:
                continue
            if dirty is not None:
                dirty.add(k)
            if len(entry) > 2:
                schedule(min(entry[3::3]), k)
            else:
                tombs.append((entry[1] + forget, k))
        if tombs:
            tombs.sort(key=_first)
            self.tombs.extend(tombs)


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


def update_sliding(
    chunk: list[Any],
    ts_of: Callable[[Any], int],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    create: Callable[[Any], Any],
    records: dict[Hashable, list[list[Any]]],
    closed_to: int,
    touched: dict[Hashable, list[int]],
    late: list[tuple[Any, int, Hashable, int, int]],
    size: int,
) -> None:
    """Sliding windows: record the elements; windows are folded from records when emitted.

    ``records[key]`` is the key's elements as ``[ts, create(v)]`` sorted by
    ``ts`` (equal timestamps in arrival order). An element is late when its own
    window ``[ts - size + 1, ts + 1)`` is closed (``ts + 1 <= closed_to``).
    ``touched[key]`` collects the timestamps inserted per key.
    """
    for e in chunk:
        ts = ts_of(e)
        k = key_of(e)
        if ts + 1 <= closed_to:
            late.append((e, ts, k, ts - size + 1, ts + 1))
            continue
        item = [ts, create(e if value_of is None else value_of(e))]
        recs = records.get(k)
        if recs is None:
            records[k] = [item]
        elif recs[-1][0] <= ts:
            recs.append(item)
        else:
            insort(recs, item, key=_ts_key)
        t = touched.get(k)
        if t is None:
            touched[k] = [ts]
        else:
            t.append(ts)


def fold_sliding(
    recs: list[list[Any]],
    starts: list[int],
    size: int,
    merge: Callable[[Any, Any], Any],
    result: Callable[[Any], Any] | None,
    result_type: Callable[[Hashable, int, int, Any], Any],
    k: Hashable,
    out: list[Any],
) -> None:
    """Key ``k``'s sliding windows ``[s, s + size)`` for each ``s`` in ``starts`` (ascending), folded.

    ``recs`` is the key's records (see :func:`update_sliding`); each window must
    hold at least one. Its accumulator is ``copy(acc)`` of its first record,
    then ``merge(acc, a)`` with each next one's in order; appended to ``out`` as
    ``result_type(k, s, s + size, acc if result is None else result(acc))``.
    """
    for s in starts:
        i0 = bisect_left(recs, s, key=_ts_key)
        i1 = bisect_left(recs, s + size, lo=i0, key=_ts_key)
        acc = copy(recs[i0][1])
        for i in range(i0 + 1, i1):
            acc = merge(acc, recs[i][1])
        out.append(result_type(k, s, s + size, acc if result is None else result(acc)))


def expire_sliding(
    recs: list[list[Any]],
    k: Hashable,
    lo: int,
    closed_to: int,
    size: int,
    emit: bool,
    merge: Callable[[Any, Any], Any],
    result: Callable[[Any], Any] | None,
    result_type: Callable[[Hashable, int, int, Any], Any],
    out: list[Any],
) -> tuple[int, Any]:
    """Close key ``k``'s sliding windows ending in ``(lo, closed_to]``.

    The windows of records at times R (sorted ``recs``) are ``[t - size + 1, t + 1)``
    for each t in R and ``[t + 1, t + 1 + size)`` for each t in R with some r
    in R, ``t < r <= t + size``. With ``emit``, those ending in the range are
    folded into ``out`` (:func:`fold_sliding`, in order of start). Returns
    ``(cut, due)``: how many leading records no later window uses (``t <=
    closed_to - 1 - size``), and the earliest end after ``closed_to`` of a
    window of the records left (None when none is left).
    """
    n = len(recs)
    if emit:
        starts: set[int] = set()
        # Windows ending in (lo, closed_to]: left windows of t with lo < t + 1 <= closed_to ...
        for i in range(bisect_right(recs, lo - 1, key=_ts_key), bisect_right(recs, closed_to - 1, key=_ts_key)):
            starts.add(recs[i][0] - size + 1)
        # ... and right windows of t with lo < t + 1 + size <= closed_to that have a witness.
        for i in range(
            bisect_right(recs, lo - 1 - size, key=_ts_key), bisect_right(recs, closed_to - 1 - size, key=_ts_key)
        ):
            t = recs[i][0]
            j = bisect_right(recs, t, key=_ts_key)
            if j < n and recs[j][0] <= t + size:
                starts.add(t + 1)
        if starts:
            fold_sliding(recs, sorted(starts), size, merge, result, result_type, k, out)
    cut = bisect_right(recs, closed_to - 1 - size, key=_ts_key)
    if cut == n:
        return cut, None
    due = recs[cut][0] + 1 + size
    later = bisect_right(recs, closed_to - 1, key=_ts_key)
    if later < n and recs[later][0] + 1 < due:
        due = recs[later][0] + 1
    return cut, due


def update_count(
    chunk: list[Any],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    n: int,
    create: Callable[[Any], Any],
    add: Callable[[Any, Any], Any],
    counts: dict[Hashable, list[Any]],
    touched: dict[Hashable, int],
    full: list[tuple[Hashable, int, Any]],
) -> None:
    """Count windows: every ``n`` elements of a key, in arrival order.

    ``counts[key]`` is ``[total]`` (the key's element count so far, current
    window empty) or ``[total, acc]`` (current window's accumulator). When a
    window fills, ``(key, total, acc)`` is appended to ``full`` (the window is
    ``[total - n, total)``) and the entry goes back to ``[total]``.
    ``touched[key]`` is set to the key's total after each element.
    """
    for e in chunk:
        k = key_of(e)
        v = e if value_of is None else value_of(e)
        st = counts.get(k)
        if st is None:
            st = counts[k] = [0]
        total = st[0] + 1
        if len(st) == 1:
            acc = create(v)
            st.append(acc)
        else:
            acc = st[1] = add(st[1], v)
        st[0] = total
        if total % n == 0:
            full.append((k, total, acc))
            del st[1]
        touched[k] = total


def max_timestamp(ts_of: Callable[[Any], int], chunk: list[Any]) -> Any:
    """The largest ``ts_of(e)`` of a non-empty chunk, as ``max(map(ts_of, chunk))`` finds it (for watermarks)."""
    return max(map(ts_of, chunk))


# -- the switch ------------------------------------------------------------------------
# Callers use the module-level names; each call runs the compiled twin from
# ``streamlib._native._windows`` when compiled kernels are enabled (see
# ``streamlib._native``), else the pure function above, kept in ``PURE``.

#: The pure-Python kernels, by name.
PURE: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        update_fixed, update_sessions, update_sliding, fold_sliding, expire_sliding, update_count, max_timestamp,
        SessionCore,
    )
}


def session_core() -> type[SessionCore]:
    """The class a session window operator runs: the compiled twin of :class:`SessionCore` when in use."""
    from .. import _native

    return _native.window_kernel("SessionCore", SessionCore)


def _switched(name: str) -> Callable[..., Any]:
    from .. import _native

    pure = PURE[name]
    pick = _native.window_kernel

    def kernel(*args: Any) -> Any:
        return pick(name, pure)(*args)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = pure.__doc__
    return kernel


if not TYPE_CHECKING:  # same signatures as the pure functions
    update_fixed = _switched("update_fixed")
    update_sessions = _switched("update_sessions")
    update_sliding = _switched("update_sliding")
    fold_sliding = _switched("fold_sliding")
    expire_sliding = _switched("expire_sliding")
    update_count = _switched("update_count")
    max_timestamp = _switched("max_timestamp")
