"""The fast path for the common pattern shape: a chain of single-event steps.

A pattern is *linear* when every step takes exactly one event (no ``times``,
``one_or_more``, ``optional``), every step after the first is joined by
``next`` or ``followed_by``, there is no negative step, and every condition
takes only the event. Then each run is deterministic: the event either
satisfies the next step's condition (the run moves on, and the old run dies)
or not (a ``followed_by`` run waits, a ``next`` run dies). :func:`feed_linear`
runs that directly, with no transition table and no per-event bit set:
each condition is evaluated at most once per event, and only when a run (or
the start) needs it.

Its runs have the general NFA's fields, values and order (``_nfa.py``), as
tuples instead of lists (a tuple is replaced, never changed), and a key's runs
are a tuple of them too: a tuple holding only untracked values (ints, tuples of
them, events without containers) drops out of the cyclic garbage collector,
which otherwise spends a large share of the time traversing partial matches
that live for thousands of events. Runs restored from a store are made tuples
too; a key's runs may be a list (after an expiry). The stored
form (MessagePack arrays) is the same, and expiry (``NFA.close``), the skip
strategies and the queue of window ends are shared with the general path, so
results are identical.
``streamlib._native._cep`` is the compiled twin of this module (same
functions, same behaviour); ``streamlib._native.cep_kernel`` picks one.
"""

from __future__ import annotations

from heapq import heappush
from typing import Any

from ._nfa import NFA, NO_LIMIT
from ._pattern import RELAXED, STRICT, Compiled
from ._results import Match

SKIP_KINDS = {"no_skip": 0, "skip_to_next": 1, "skip_past_last_event": 2, "skip_to_first": 3}


def is_linear(c: Compiled) -> bool:
    """True when the pattern has the shape :func:`feed_linear` runs."""
    m = c.m
    return (
        not c.negs
        and not any(c.ctx_conds)
        and all(c.lo[i] == 1 and c.hi[i] == 1 and not c.opt[i] and c.until[i] < 0 for i in range(m))
        and all(c.entry[j] in (STRICT, RELAXED) for j in range(1, m))
    )


class LinearPlan:
    """The tables :func:`feed_linear` reads (built once per stage from the general NFA)."""

    __slots__ = ("nfa", "m", "conds", "cond", "strict", "mask", "names", "skip", "skip_step")

    def __init__(self, nfa: NFA) -> None:
        c = nfa.c
        m = c.m
        self.nfa = nfa
        self.m = m
        self.conds = tuple(c.conds)
        self.cond = tuple(c.cond)
        self.strict = tuple(j > 0 and c.entry[j] == STRICT for j in range(m))
        self.mask = tuple(c.mask(j, 1) for j in range(m))
        self.names = tuple(c.names)
        self.skip = SKIP_KINDS[c.skip.kind]
        self.skip_step = nfa.skip_step


def feed_linear(logic: Any, tss: list[int], evs: list[Any], out: list[Any]) -> None:
    """Run each event ``evs[i]`` (time ``tss[i]``) through its key's runs, as ``_MatchLogic._feed_all`` does.

    ``logic`` is the match stage's logic: its ``linear`` plan, ``runs``,
    ``key_of``, ``state``, ``within``, ``due``, ``fifo``, ``heap``, ``seq`` and ``pos``
    are read, and ``seq``/``pos`` written back.
    """
    plan: LinearPlan = logic.linear
    nfa = plan.nfa
    runs_of = logic.runs
    key_of = logic.key_of
    state = logic.state
    tracking = logic.tracking
    dirty = state.dirty
    remove = state.remove
    within = logic.within
    due = logic.due
    heap = logic.heap
    fifo = logic.fifo
    seq = logic.seq
    pos = logic.pos
    m = plan.m
    last = m - 1
    conds = plan.conds
    cond = plan.cond
    strict = plan.strict
    mask = plan.mask
    names = plan.names
    skip = plan.skip
    skip_step = plan.skip_step
    c0 = cond[0]
    start = conds[c0]
    mask0 = mask[0]
    if len(tss) != len(evs):
        raise ValueError("feed_linear: tss and evs differ in length")
    for ts, e in zip(tss, evs):
        pos += 1
        k = key_of(e)
        runs = runs_of.get(k)
        if not runs:
            if not start(e):
                continue
            if m == 1:
                out.append(Match(k, {names[0]: [e]}))
                continue
            runs_of[k] = ((0, 1, mask0, True, ts, pos, ((0, pos, e),)),)
            if tracking:
                dirty.add(k)
            if within is not None and k not in due:
                seq += 1
                at = ts + within
                due[k] = at
                if not fifo or fifo[-1][0] <= at:
                    fifo.append((at, seq, k))
                else:
                    heappush(heap, (at, seq, k))
            continue
        limit = NO_LIMIT if within is None else ts - within
        done = 0  # conditions evaluated for this event (bits by condition index) ...
        held = 0  # ... and those that held
        alive: list[Any] = []
        matches: list[Any] | None = None
        expired: list[Any] | None = None
        for run in runs:
            if run[4] <= limit:
                if expired is None:
                    expired = []
                expired.append(run)
                continue
            j = run[0] + 1
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
                out.append(Match(k, {names[s]: [x] for s, _p, x in taken}))
                if skip and alive:
                    if skip == 2:
                        cut = taken[-1][1]
                    elif skip == 1:
                        cut = taken[0][1]
                    else:
                        cut = taken[skip_step][1] - 1
                    alive = [a for a in alive if a[5] > cut]
            else:
                alive = nfa._emit_matches(k, matches, alive, out)
        if alive:
            runs_of[k] = tuple(alive)
            if tracking:
                dirty.add(k)
            # The key had runs, so it has its window-end entry (``_kernels.py``): nothing to schedule.
        else:
            del runs_of[k]
            remove(k)
    logic.seq = seq
    logic.pos = pos
