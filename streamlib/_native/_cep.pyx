"""Compiled twins of ``streamlib.cep._linear.feed_linear`` (the pattern matcher's fast path)
and of ``streamlib.cep._kernels`` (``stamp``: a chunk's timestamps; ``close_due``:
closing the windows that end by a watermark).

Same function, same behaviour: the same runs (tuples, in the same order),
the same calls to the key function and to each condition (at most once per
event, only when needed), the same heap entries, the same output. Only the loop
runs in C with typed locals (built without wraparound: no negative indices
here). See ``streamlib/cep/_linear.py`` for what it does.
"""

from cpython.object cimport PyObject
from cpython.long cimport PyLong_CheckExact
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from heapq import heappop, heappush

cdef extern from "Python.h":
    int PyObject_GC_IsTracked(object op)
    void PyObject_GC_UnTrack(void *op)


cdef inline tuple _settled(tuple t):
    """``t``, out of the cyclic collector when none of its items is in it (ints, untracked tuples).

    CPython's collector does the same to such a tuple at its first pass over it,
    but only once the items inside were done first: a run nests tuples three
    deep, so each level would wait for one more collection (and be promoted
    through the generations meanwhile, to be walked by the older ones). Done
    here, at creation, innermost first, the result is what the collector would
    reach; a tuple holding a tracked object (an event with a dict, a list) stays
    tracked, as it would.
    """
    cdef Py_ssize_t i
    for i in range(PyTuple_GET_SIZE(t)):
        if PyObject_GC_IsTracked(<object>PyTuple_GET_ITEM(t, i)):
            return t
    PyObject_GC_UnTrack(<void *>t)
    return t

from streamlib.cep._nfa import NO_LIMIT
from streamlib.cep._results import Match


cdef inline tuple _extended(tuple t, object item):
    """``t + (item,)``, settled (see ``_settled``), without the one-item tuple in between."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(t)
    cdef tuple r = PyTuple_New(n + 1)
    cdef object x
    for i in range(n):
        x = <object>PyTuple_GET_ITEM(t, i)
        Py_INCREF(x)
        PyTuple_SET_ITEM(r, i, x)
    Py_INCREF(item)
    PyTuple_SET_ITEM(r, n, item)
    return _settled(r)


def feed_linear(logic, list tss, list evs, list out):
    """Run each event ``evs[i]`` (time ``tss[i]``) through its key's runs (see the pure twin)."""
    plan = logic.linear
    nfa = plan.nfa
    cdef dict runs_of = logic.runs
    key_of = logic.key_of
    state = logic.state
    cdef bint tracking = logic.tracking
    cdef set dirty = state.dirty
    remove = state.remove
    within = logic.within
    cdef bint has_within = within is not None
    cdef long long within_ms = within if has_within else 0
    cdef dict due = logic.due
    cdef list heap = logic.heap
    fifo = logic.fifo
    seq = logic.seq
    cdef long long pos = logic.pos
    cdef Py_ssize_t m = plan.m
    cdef Py_ssize_t last = m - 1
    cdef tuple conds = plan.conds
    cdef tuple cond = plan.cond
    cdef tuple strict = plan.strict
    cdef tuple mask = plan.mask
    cdef tuple names = plan.names
    cdef int skip = plan.skip
    cdef Py_ssize_t skip_step = plan.skip_step
    cdef Py_ssize_t c0 = cond[0]
    start = conds[c0]
    mask0 = mask[0]
    cdef long long ts, limit, cut, at, lowest, st
    cdef long long no_limit = NO_LIMIT
    cdef Py_ssize_t j, cj, n
    cdef unsigned long long done, held, b  # bit sets by condition index (at most 64 conditions, see below)
    cdef object runs  # a tuple of runs (a list after an expiry)
    cdef list alive
    cdef object matches, expired
    cdef tuple taken, run, nr
    cdef Py_ssize_t idx, count = len(evs)
    cdef dict events
    if len(tss) != count:
        raise ValueError("feed_linear: tss and evs differ in length")
    if len(conds) > 64:  # bit sets wider than a machine word: the pure twin (Python ints) does the same
        from streamlib.cep._linear import feed_linear as pure

        pure(logic, tss, evs, out)
        return
    for idx in range(count):
        ts = tss[idx]
        e = evs[idx]
        pos += 1
        k = key_of(e)
        runs = runs_of.get(k)
        if not runs:
            if not start(e):
                continue
            if m == 1:
                out.append(Match(k, {names[0]: [e]}))
                continue
            runs_of[k] = _settled((_settled((0, 1, mask0, True, ts, pos, _settled((_settled((0, pos, e)),)))),))
            if tracking:
                dirty.add(k)
            if has_within and k not in due:
                seq += 1
                at = ts + within_ms
                due[k] = at
                if not fifo or fifo[len(fifo) - 1][0] <= at:
                    fifo.append(_settled((at, seq, k)))
                else:
                    heappush(heap, _settled((at, seq, k)))
            continue
        limit = no_limit if not has_within else ts - within_ms
        done = 0
        held = 0
        alive = []
        matches = None
        expired = None
        for run in runs:
            st = run[4]
            if st <= limit:
                if expired is None:
                    expired = []
                expired.append(run)
                continue
            j = <Py_ssize_t>run[0] + 1
            cj = cond[j]
            b = (<unsigned long long>1) << cj
            if not done & b:
                done |= b
                if conds[cj](e):
                    held |= b
            if held & b:
                nr = _settled((j, 1, mask[j], True, run[4], run[5], _extended(run[6], _settled((j, pos, e)))))
                if j == last:
                    if matches is None:
                        matches = []
                    matches.append(nr)
                else:
                    alive.append(nr)
            elif not strict[j]:
                if run[3]:
                    run = _settled((run[0], run[1], run[2], False, run[4], run[5], run[6]))
                alive.append(run)
        b = (<unsigned long long>1) << c0
        if not done & b:
            done |= b
            if start(e):
                held |= b
        if held & b:
            nr = _settled((0, 1, mask0, True, ts, pos, _settled((_settled((0, pos, e)),))))
            if m == 1:
                if matches is None:
                    matches = []
                matches.append(nr)
            else:
                alive.append(nr)
        if expired is not None:
            alive, matches = nfa.close(k, expired, alive, matches, out)
        if matches:
            if len(matches) == 1:
                taken = matches[0][6]
                events = {}
                for t in taken:
                    events[names[t[0]]] = [t[2]]
                out.append(Match(k, events))
                if skip and alive:
                    if skip == 2:
                        cut = taken[len(taken) - 1][1]
                    elif skip == 1:
                        cut = taken[0][1]
                    else:
                        cut = <long long>taken[skip_step][1] - 1
                    alive = [a for a in alive if <long long>a[5] > cut]
            else:
                alive = nfa._emit_matches(k, matches, alive, out)
        if alive:
            runs_of[k] = _settled(tuple(alive))
            if tracking:
                dirty.add(k)
            # The key had runs, so it has its window-end entry (``_kernels.py``): nothing to schedule.
        else:
            del runs_of[k]
            if tracking:  # (OperatorState.remove does nothing otherwise)
                remove(k)
    logic.seq = seq
    logic.pos = pos


def close_due(logic, upto, list out, bint confirm=True):
    """Close every window of ``logic`` ending at or before ``upto`` (see ``streamlib/cep/_kernels.py``).

    The loop over the due entries runs here; ``NFA.expire`` is called only for a
    key with a run whose window really closed (a key whose runs all started
    later is rescheduled without it: ``expire`` would return its runs as they are).
    """
    cdef list heap = logic.heap
    fifo = logic.fifo
    cdef dict runs = logic.runs
    cdef dict due = logic.due
    nfa = logic.nfa
    within = logic.within
    cdef long long within_ms = within
    cdef long long up = upto
    cdef long long limit = up - within_ms
    cdef long long at, st, lowest
    cdef bint gone, tracking = logic.tracking
    state = logic.state
    seq = logic.seq
    popleft = fifo.popleft
    cdef tuple entry
    while True:
        if fifo and <long long>fifo[0][0] <= up and (not heap or fifo[0] < heap[0]):
            entry = popleft()
        elif heap and <long long>heap[0][0] <= up:
            entry = heappop(heap)
        else:
            break
        k = entry[2]
        at = entry[0]
        d = due.get(k)
        if d is None or <long long>d != at:
            continue
        del due[k]
        rs = runs.get(k)
        if not rs:
            continue
        gone = False
        for r in rs:
            if <long long>r[4] <= limit:
                gone = True
                break
        if gone:
            left = nfa.expire(k, rs, upto, out, confirm)
            if not left:
                del runs[k]
                if tracking:
                    state.remove(k)
                continue
            if left is not rs:
                runs[k] = left
                if tracking:
                    state.dirty.add(k)
        else:
            left = rs
        lowest = left[0][4]
        for r in left:
            st = r[4]
            if st < lowest:
                lowest = st
        at = lowest + within_ms
        due[k] = at
        seq += 1
        if not fifo or <long long>fifo[len(fifo) - 1][0] <= at:
            fifo.append(_settled((at, seq, k)))
        else:
            heappush(heap, _settled((at, seq, k)))
    logic.seq = seq


def stamp(ts_of, list chunk, name):
    """``(timestamps, the smallest, ascending)`` of a non-empty ``chunk`` (see ``streamlib/cep/_kernels.py``)."""
    cdef Py_ssize_t i, n = len(chunk)
    cdef list tss = [None] * n
    cdef long long t, lowest = 0, prev = 0
    cdef bint up = True
    for i in range(n):
        v = ts_of(chunk[i])
        if not PyLong_CheckExact(v):  # the first one that is not an int, as the pure twin names
            raise TypeError(
                f"{name}: the timestamp function returned {v!r} ({type(v).__name__}); event "
                "timestamps are int milliseconds since the epoch"
            )
        tss[i] = v
        try:
            t = v
        except OverflowError:  # beyond 64 bits: Python ints compare the same, slower
            from streamlib.cep._kernels import stamp as pure

            return pure(ts_of, chunk, name)
        if i == 0:
            lowest = t
        else:
            if t < lowest:
                lowest = t
            if t < prev:
                up = False
        prev = t
    return tss, lowest, up
