"""Compiled twin of ``streamlib.cep._linear.feed_linear``: the pattern matcher's fast path.

Same function, same behaviour: the same runs (tuples, in the same order),
the same calls to the key function and to each condition (at most once per
event, only when needed), the same heap entries, the same output. Only the loop
runs in C with typed locals (built without wraparound: no negative indices
here). See ``streamlib/cep/_linear.py`` for what it does.
"""

from heapq import heappush

from streamlib.cep._nfa import NO_LIMIT
from streamlib.cep._results import Match


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
    cdef Py_ssize_t j, cj, n
    cdef object done, held, b  # bit sets by condition index (Python ints: any number of conditions)
    cdef list runs, alive
    cdef object matches, expired
    cdef tuple taken
    cdef Py_ssize_t idx, count = len(evs)
    cdef dict events
    if len(tss) != count:
        raise ValueError("feed_linear: tss and evs differ in length")
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
            runs_of[k] = [(0, 1, mask0, True, ts, pos, ((0, pos, e),))]
            if tracking:
                dirty.add(k)
            if has_within and k not in due:
                seq += 1
                at = ts + within_ms
                due[k] = at
                if not fifo or fifo[len(fifo) - 1][0] <= at:
                    fifo.append((at, seq, k))
                else:
                    heappush(heap, (at, seq, k))
            continue
        limit = NO_LIMIT if not has_within else ts - within_ms
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
            b = 1 << cj
            if not done & b:
                done |= b
                if conds[cj](e):
                    held |= b
            if held & b:
                nr = (j, 1, mask[j], True, run[4], run[5], run[6] + ((j, pos, e),))
                if j == last:
                    if matches is None:
                        matches = []
                    matches.append(nr)
                else:
                    alive.append(nr)
            elif not strict[j]:
                if run[3]:
                    run = (run[0], run[1], run[2], False, run[4], run[5], run[6])
                alive.append(run)
        b = 1 << c0
        if not done & b:
            done |= b
            if start(e):
                held |= b
        if held & b:
            nr = (0, 1, mask0, True, ts, pos, ((0, pos, e),))
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
            runs_of[k] = alive
            if tracking:
                dirty.add(k)
            if has_within and k not in due:
                seq += 1
                lowest = alive[0][4]
                for a in alive:
                    st = a[4]
                    if st < lowest:
                        lowest = st
                at = lowest + within_ms
                due[k] = at
                if not fifo or fifo[len(fifo) - 1][0] <= at:
                    fifo.append((at, seq, k))
                else:
                    heappush(heap, (at, seq, k))
        else:
            del runs_of[k]
            remove(k)
    logic.seq = seq
    logic.pos = pos
