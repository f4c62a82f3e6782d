"""The NFA that runs a compiled pattern over one key's events, in time order.

A *run* is one partial match: ``[step, count, moves, fresh, start_ts,
start_pos, taken]``. ``step``/``count``: the step of its last event and how
many events that step has taken; ``moves``: a bit set of the moves still open
(``Compiled.moves``); ``fresh``: no event was ignored since its last event
(``not_next`` looks at that one event); ``start_ts``/``start_pos``: time and
position of its first event; ``taken``: a tuple of ``(step, pos, event)``.
Runs are plain lists of MessagePack-encodable values, so a key's runs are its
stored state as they are.

For each event, every run may *take* it through each open move whose
conditions hold (making a new run) and may *ignore* it (staying alive with the
moves whose gap rules the event does not break). A run with no open move dies.
Each labelled subsequence is reached by exactly one path, so no match is
emitted twice. Conditions that take only the event are evaluated once per
event into a bit set; conditions that take ``ctx`` are evaluated per run, for
the steps the run can reach.

Expiry (``within``): a run whose window ``[start_ts, start_ts + within)`` closed
either completes (its ``END`` move is open: an absence confirmed) or times out.
After each emitted match the skip strategy discards runs by their start
position.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from ._pattern import ANY, INFINITE, NOT_FOLLOWED, NOT_NEXT, RELAXED, STRICT, Compiled
from ._results import Match, Timeout

NO_LIMIT = -(2**63)


class NFA:
    def __init__(self, c: Compiled, timeouts: bool) -> None:
        self.c = c
        self.timeouts = timeouts
        self.within = c.within
        m = c.m
        self.m = m
        self.plain = [(1 << k, c.conds[k]) for k in c.plain]
        self.ctx_conds = c.ctx_conds
        self.conds = c.conds
        self.names = c.names
        self.end_bit = [0] * m
        for i in range(m):
            for bit, j in c.moves[i]:
                if j == m:
                    self.end_bit[i] = bit
        # Per step: the ctx conditions a run there may need.
        self.ctx_needed: list[list[int]] = []
        for i in range(m):
            need = {c.cond[i], c.until[i]}
            for _bit, j in c.moves[i]:
                if j < m:
                    need.add(c.cond[j])
                if j != i:
                    need.update(nc for _kind, nc in c.crossed[(i, j)])
            self.ctx_needed.append(sorted(k for k in need if k >= 0 and c.ctx_conds[k]))
        self.start_ctx = sorted({c.cond[j] for j in c.starts if c.ctx_conds[c.cond[j]]})
        # Per step and move: a compact plan. (bit, target, take_conds..., ignore rules)
        self.plans: list[list[tuple[Any, ...]]] = []
        for i in range(m):
            plan: list[tuple[Any, ...]] = []
            for bit, j in c.moves[i]:
                if j == i:
                    plan.append((bit, j, 0, c.inner[i], c.cond[i], c.until[i], ()))
                else:
                    entry = c.entry[j] if j < m else ANY
                    cj = c.cond[j] if j < m else -1
                    plan.append((bit, j, 1, entry, cj, -1, tuple(c.crossed[(i, j)])))
            self.plans.append(plan)
        # Counts beyond cap compare with the step's bounds like cap does.
        self.cap = [c.lo[i] if c.hi[i] >= INFINITE else c.hi[i] for i in range(m)]
        self.memo: dict[tuple[int, int, int, bool, int], tuple[tuple[Any, ...], int]] = {}
        self.start_plan = [(j, c.cond[j], c.mask(j, 1), c.final[j] and 1 >= c.lo[j]) for j in c.starts]
        # One start step with a condition on the event alone: a key without runs tests just that.
        self.simple_start: Callable[[Any], Any] | None = None
        if len(c.starts) == 1 and not c.ctx_conds[c.cond[c.starts[0]]]:
            self.simple_start = c.conds[c.cond[c.starts[0]]]
        # ... and when that start never completes a match alone, the new run is all there is to make.
        self.inline_start: tuple[int, int] | None = None
        if self.simple_start is not None and len(self.start_plan) == 1 and not self.start_plan[0][3]:
            j0, _cj, nmask0, _fin = self.start_plan[0]
            if nmask0:
                self.inline_start = (j0, nmask0)
        self.skip = c.skip.kind
        self.skip_step = c.names.index(c.skip.name) if c.skip.name is not None else -1

    # -- helpers -----------------------------------------------------------------------

    def ctx_of(self, taken: tuple[Any, ...]) -> dict[str, list[Any]]:
        names = self.names
        ctx: dict[str, list[Any]] = {n: [] for n in names}
        for s, _p, e in taken:
            ctx[names[s]].append(e)
        return ctx

    def result(self, key: Hashable, taken: tuple[Any, ...]) -> Match[Any, Any]:
        names = self.names
        events: dict[str, list[Any]] = {}
        for s, _p, e in taken:
            n = names[s]
            lst = events.get(n)
            if lst is None:
                events[n] = [e]
            else:
                lst.append(e)
        return Match(key, events)

    def _pruner(self, taken: tuple[Any, ...]) -> Callable[[int], bool] | None:
        kind = self.skip
        if kind == "skip_past_last_event":
            last = taken[-1][1]
            return lambda start: start <= last
        if kind == "skip_to_next":
            first = taken[0][1]
            return lambda start: start <= first
        step = self.skip_step
        for s, p, _e in taken:
            if s == step:
                return lambda start: start < p
        return None

    # -- one event -----------------------------------------------------------------------

    def transition(self, i: int, n: int, mask: int, fresh: bool, rb: int) -> tuple[tuple[Any, ...], int]:
        """What a run at step ``i`` (count ``n``, open moves ``mask``) does with an event whose conditions are ``rb``.

        Returns the takes, as ``(step, is_loop, moves of the new run, completes)``,
        and the moves left open if the run ignores the event (0: it dies).
        Depends on ``n`` only through comparisons with the step's bounds, so
        the result is cached per ``(i, min(n, cap), mask, fresh, rb)``.
        """
        c = self.c
        hi, lo, final, mask_of = c.hi, c.lo, c.final, c.mask
        in_i = rb >> c.cond[i] & 1
        greedy_block = c.greedy[i] and n < hi[i] and in_i
        newmask = mask
        takes: list[tuple[int, bool, int, bool]] = []
        for bit, j, is_exit, contig, cj, cu, negs in self.plans[i]:
            if not mask & bit:
                continue
            if not is_exit:
                until_hit = cu >= 0 and rb >> cu & 1
                if in_i and not until_hit:
                    takes.append((i, True, mask_of(i, n + 1), final[i] and n + 1 >= lo[i]))
                if contig == STRICT or (contig == RELAXED and in_i) or until_hit:
                    newmask &= ~bit
                continue
            neg_hit = neg_next_hit = False
            for kind, nc in negs:
                if rb >> nc & 1:
                    if kind == NOT_FOLLOWED:
                        neg_hit = True
                    elif fresh:
                        neg_next_hit = True
            in_j = cj >= 0 and rb >> cj & 1
            if in_j and not greedy_block and not neg_next_hit:
                takes.append((j, False, mask_of(j, 1), final[j] and 1 >= lo[j]))
            if contig == STRICT or (contig == RELAXED and in_j) or greedy_block or neg_hit or neg_next_hit:
                newmask &= ~bit
        return tuple(takes), newmask

    def step(
        self, key: Hashable, runs: Sequence[list[Any]], ts: int, pos: int, x: Any, out: list[Any]
    ) -> list[list[Any]]:
        """Feed event ``x`` (time ``ts``, position ``pos``) to ``key``'s runs; return the runs alive after it."""
        c = self.c
        bits = 0
        for b, f in self.plain:
            if f(x):
                bits |= b
        alive: list[list[Any]] = []
        matches: list[list[Any]] | None = None
        expired: list[list[Any]] | None = None
        limit = ts - self.within if self.within is not None else NO_LIMIT
        cap, memo, ctx_needed, conds = self.cap, self.memo, self.ctx_needed, self.conds
        for run in runs:
            i, n, mask, fresh, st, sp, taken = run
            if st <= limit:
                if expired is None:
                    expired = []
                expired.append(run)
                continue
            rb = bits
            need = ctx_needed[i]
            if need:
                ctx = self.ctx_of(taken)
                for k in need:
                    if conds[k](x, ctx):
                        rb |= 1 << k
            mk = (i, n if n < cap[i] else cap[i], mask, fresh, rb)
            tr = memo.get(mk)
            if tr is None:
                if len(memo) > 100_000:
                    memo.clear()
                tr = memo[mk] = self.transition(i, mk[1], mask, fresh, rb)
            takes, newmask = tr
            for j, loop, nmask, fin in takes:
                nr = [j, n + 1 if loop else 1, nmask, True, st, sp, taken + ((j, pos, x),)]
                if nmask:
                    alive.append(nr)
                if fin:
                    if matches is None:
                        matches = []
                    matches.append(nr)
            if newmask:
                if newmask != mask:
                    run[2] = newmask
                if fresh:
                    run[3] = False
                alive.append(run)
        # New runs starting at x.
        sb = bits
        if self.start_ctx:
            ctx0 = self.ctx_of(())
            for k in self.start_ctx:
                if conds[k](x, ctx0):
                    sb |= 1 << k
        for j, cj, nmask, fin in self.start_plan:
            if sb >> cj & 1:
                nr = [j, 1, nmask, True, ts, pos, ((j, pos, x),)]
                if nmask:
                    alive.append(nr)
                if fin:
                    if matches is None:
                        matches = []
                    matches.append(nr)
        if expired is not None:
            alive, matches = self.close(key, expired, alive, matches, out)
        if matches:
            alive = self._emit_matches(key, matches, alive, out)
        return alive

    def _emit_matches(
        self, key: Hashable, matches: list[list[Any]], alive: list[list[Any]], out: list[Any]
    ) -> list[list[Any]]:
        if len(matches) > 1:
            matches.sort(key=lambda r: [p for _s, p, _e in r[6]])
        if self.skip == "no_skip":
            for r in matches:
                out.append(self.result(key, r[6]))
            return alive
        dead: set[int] = set()
        for r in matches:
            if id(r) in dead:
                continue
            out.append(self.result(key, r[6]))
            prune = self._pruner(r[6])
            if prune is None:
                continue
            for other in matches:
                if prune(other[5]):
                    dead.add(id(other))
            alive = [a for a in alive if not prune(a[5])]
        return alive

    # -- windows closing --------------------------------------------------------------------

    def expire(
        self, key: Hashable, runs: list[list[Any]], upto: int, out: list[Any], confirm: bool = True
    ) -> list[list[Any]]:
        """Close the windows ending at or before ``upto``: absence matches, timeouts; return the runs left.

        ``confirm=False`` (processing time, end of stream): an absence whose
        window did not really close is not confirmed; it times out instead.
        """
        w = self.within
        assert w is not None
        limit = upto - w
        gone = [r for r in runs if r[4] <= limit]
        if not gone:
            return runs
        left = [r for r in runs if r[4] > limit]
        left, _ = self.close(key, gone, left, None, out, confirm)
        return left

    def close(
        self,
        key: Hashable,
        gone: list[list[Any]],
        left: list[list[Any]],
        matches: list[list[Any]] | None,
        out: list[Any],
        confirm: bool = True,
    ) -> tuple[list[list[Any]], list[list[Any]] | None]:
        """Emit what the runs ``gone`` (windows closed) amount to; prune ``left`` and ``matches`` by skip strategy."""
        w = self.within
        assert w is not None
        if len(gone) > 1:
            gone.sort(key=lambda r: (r[4], [p for _s, p, _e in r[6]]))
        c, end_bit = self.c, self.end_bit
        dead: set[int] = set()
        for r in gone:
            if id(r) in dead:
                continue
            i = r[0]
            if confirm and r[2] & end_bit[i]:
                out.append(self.result(key, r[6]))
                if self.skip != "no_skip":
                    prune = self._pruner(r[6])
                    if prune is not None:
                        for other in gone:
                            if prune(other[5]):
                                dead.add(id(other))
                        left = [a for a in left if not prune(a[5])]
                        if matches:
                            matches = [a for a in matches if not prune(a[5])]
            elif self.timeouts and not (c.final[i] and r[1] >= c.lo[i]):
                events = self.result(key, r[6]).events
                out.append(Timeout(key, events, r[4] + w))
        return left, matches
