"""The pattern builder (:class:`Pattern`) and its compiled form (:class:`Compiled`).

A pattern is a sequence of *steps*. A positive step takes events that satisfy
its condition, between ``lo`` and ``hi`` of them (``optional`` allows none); a
negative step (``not_next``, ``not_followed_by``) takes nothing and forbids
events. Builder methods return a new :class:`Pattern` (patterns are immutable
blueprints, like every stage); methods such as ``where`` and ``times`` apply to
the last step.

Compilation checks the pattern and turns it into the tables the NFA
(``_nfa.py``) runs on: one condition index per predicate (so conditions that
take only the event are evaluated once per event, into a bit set), and for each
positive step its *moves*: ``LOOP`` (take another event into the same step),
``EXIT j`` (take the first event of a later step ``j``, skipping optional steps
in between) and ``END`` (complete a pattern that ends with ``not_followed_by``
when its ``within`` window closes).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, TypeVar

from .._time.durations import event_ms

T = TypeVar("T")

STRICT, RELAXED, ANY = 0, 1, 2
NOT_NEXT, NOT_FOLLOWED = 3, 4
_CONTIGUITY_NAMES = {STRICT: "next", RELAXED: "followed_by", ANY: "followed_by_any",
                     NOT_NEXT: "not_next", NOT_FOLLOWED: "not_followed_by"}  # fmt: skip
INFINITE = 1 << 62


class SkipStrategy:
    """What to discard after a match is emitted: see :func:`no_skip` and the other three constructors."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: str, name: str | None = None) -> None:
        self.kind = kind
        self.name = name

    def __repr__(self) -> str:
        return f"{self.kind}({self.name!r})" if self.name is not None else f"{self.kind}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SkipStrategy) and (self.kind, self.name) == (other.kind, other.name)

    def __hash__(self) -> int:
        return hash((self.kind, self.name))


def no_skip() -> SkipStrategy:
    """Emit every match; discard nothing."""
    return SkipStrategy("no_skip")


def skip_to_next() -> SkipStrategy:
    """After a match, discard every partial match that started at or before the match's first event."""
    return SkipStrategy("skip_to_next")


def skip_past_last_event() -> SkipStrategy:
    """After a match, discard every partial match that started at or before its last event: matches never overlap."""
    return SkipStrategy("skip_past_last_event")


def skip_to_first(name: str) -> SkipStrategy:
    """After a match, discard every partial match that started before the match's first event of step ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"skip_to_first(name) takes a step name, got {name!r}")
    return SkipStrategy("skip_to_first", name)


def _arity(fn: Callable[..., Any], what: str) -> int:
    """1 for ``fn(event)``, 2 for ``fn(event, ctx)``."""
    if not callable(fn):
        raise TypeError(f"{what} needs a function of the event (or of the event and the match so far), got {fn!r}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 1
    required = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(required) > 2:
        raise TypeError(f"{what}: {fn!r} takes {len(required)} arguments; a condition takes (event) or (event, ctx)")
    return 2 if len(required) == 2 else 1


class _Step:
    __slots__ = ("name", "contiguity", "conds", "lo", "hi", "optional", "greedy", "inner", "until", "looping")

    def __init__(self, name: str, contiguity: int) -> None:
        self.name = name
        self.contiguity = contiguity
        self.conds: tuple[Callable[..., Any], ...] = ()
        self.lo = 1
        self.hi = 1
        self.optional = False
        self.greedy = False
        self.inner = RELAXED
        self.until: Callable[..., Any] | None = None
        self.looping = False

    def copy(self) -> _Step:
        s = _Step(self.name, self.contiguity)
        for a in self.__slots__:
            setattr(s, a, getattr(self, a))
        return s

    @property
    def negative(self) -> bool:
        return self.contiguity in (NOT_NEXT, NOT_FOLLOWED)


class Pattern(Generic[T]):
    """A sequence of named steps matched per key, compiled to an NFA by ``keyed.match(pattern)``.

    >>> fails = Pattern.begin("fail").where(lambda e: not e.ok).times(3)
    >>> alert = fails.followed_by("success").where(lambda e: e.ok).within(timedelta(minutes=1))
    >>> source.with_timestamps(ts).key_by(user).match(alert)  # Source of Match(key, events)
    """

    __slots__ = ("_steps", "_within", "_skip")

    def __init__(self, steps: tuple[_Step, ...], within: int | None, skip: SkipStrategy) -> None:
        self._steps = steps
        self._within = within
        self._skip = skip

    # -- building ---------------------------------------------------------------------

    @staticmethod
    def begin(name: str, skip: SkipStrategy | None = None) -> Pattern[Any]:
        """Start a pattern with a step called ``name``; ``skip`` is the after-match skip strategy (default no_skip)."""
        if skip is None:
            skip = no_skip()
        if not isinstance(skip, SkipStrategy):
            raise TypeError(
                f"Pattern.begin(skip=) takes no_skip(), skip_to_next(), skip_past_last_event() or "
                f"skip_to_first(name) from streamlib.cep, got {skip!r}"
            )
        return Pattern((_new_step(name, RELAXED, ()),), None, skip)

    def _add(self, name: str, contiguity: int) -> Pattern[T]:
        return Pattern(self._steps + (_new_step(name, contiguity, self._steps),), self._within, self._skip)

    def _last(self, fn: Callable[[_Step], None]) -> Pattern[T]:
        last = self._steps[-1].copy()
        fn(last)
        return Pattern(self._steps[:-1] + (last,), self._within, self._skip)

    def next(self, name: str) -> Pattern[T]:
        """A step whose first event comes right after the previous step's last (strict contiguity)."""
        return self._add(name, STRICT)

    def followed_by(self, name: str) -> Pattern[T]:
        """A step whose first event is the next event satisfying its condition (relaxed contiguity)."""
        return self._add(name, RELAXED)

    def followed_by_any(self, name: str) -> Pattern[T]:
        """A step whose first event is any later event satisfying its condition (non-deterministic relaxed)."""
        return self._add(name, ANY)

    def not_next(self, name: str) -> Pattern[T]:
        """The event right after the previous step's last must not satisfy this step's condition."""
        return self._add(name, NOT_NEXT)

    def not_followed_by(self, name: str) -> Pattern[T]:
        """No event between the previous step and the next may satisfy this step's condition.

        As the last step it needs ``within``: the match completes when the
        window closes (watermark or clock) with no such event seen.
        """
        return self._add(name, NOT_FOLLOWED)

    def where(self, cond: Callable[[T], object] | Callable[[T, dict[str, list[T]]], object]) -> Pattern[T]:
        """Add a condition to the last step (several ``where`` must all hold).

        ``cond(event)`` or ``cond(event, ctx)``; ``ctx`` maps each step name to
        the events the partial match has taken so far.
        """
        _arity(cond, f"where() of step {self._steps[-1].name!r}")
        return self._last(lambda s: setattr(s, "conds", s.conds + (cond,)))

    def times(self, lo: int, hi: int | None = None) -> Pattern[T]:
        """The last step takes exactly ``lo`` events, or between ``lo`` and ``hi``."""
        hi = lo if hi is None else hi
        for v in (lo, hi):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"times({lo!r}, {hi!r}): counts are positive ints (use optional() for zero)")
        if hi < lo:
            raise ValueError(f"times({lo}, {hi}): the upper bound is below the lower one")
        return self._quantify(lambda s: _bounds(s, lo, hi), "times")

    def one_or_more(self) -> Pattern[T]:
        """The last step takes one event or more (each count is a match of its own)."""
        return self._quantify(lambda s: _bounds(s, 1, INFINITE), "one_or_more")

    def times_or_more(self, lo: int) -> Pattern[T]:
        """The last step takes ``lo`` events or more."""
        if not isinstance(lo, int) or isinstance(lo, bool) or lo < 1:
            raise ValueError(f"times_or_more({lo!r}): the count is a positive int")
        return self._quantify(lambda s: _bounds(s, lo, INFINITE), "times_or_more")

    def _quantify(self, fn: Callable[[_Step], Any], what: str) -> Pattern[T]:
        if self._steps[-1].negative:
            raise ValueError(f"{what}(): step {self._steps[-1].name!r} is negative and takes no events")

        def apply(s: _Step) -> None:
            fn(s)
            s.looping = s.hi > 1

        return self._last(apply)

    def optional(self) -> Pattern[T]:
        """The last step may take no event at all."""
        if self._steps[-1].negative:
            raise ValueError(f"optional(): step {self._steps[-1].name!r} is negative and takes no events")
        return self._last(lambda s: setattr(s, "optional", True))

    def greedy(self) -> Pattern[T]:
        """The last (looping) step takes every event it can before the next step may start."""
        return self._loop_option("greedy", lambda s: setattr(s, "greedy", True))

    def consecutive(self) -> Pattern[T]:
        """The events of the last (looping) step come one right after the other (strict inner contiguity)."""
        return self._loop_option("consecutive", lambda s: setattr(s, "inner", STRICT))

    def allow_combinations(self) -> Pattern[T]:
        """The events of the last (looping) step may skip matching events (non-deterministic inner contiguity)."""
        return self._loop_option("allow_combinations", lambda s: setattr(s, "inner", ANY))

    def until(self, cond: Callable[[T], object] | Callable[[T, dict[str, list[T]]], object]) -> Pattern[T]:
        """Stop the last (looping) step at the first event satisfying ``cond`` after its first event."""
        _arity(cond, f"until() of step {self._steps[-1].name!r}")
        return self._loop_option("until", lambda s: setattr(s, "until", cond))

    def _loop_option(self, what: str, fn: Callable[[_Step], None]) -> Pattern[T]:
        s = self._steps[-1]
        if not s.looping:
            raise ValueError(
                f"{what}(): step {s.name!r} takes one event; {what} applies to a looping step "
                "(after one_or_more(), times_or_more(n) or times(lo, hi) with hi > 1)"
            )
        return self._last(fn)

    def within(self, window: int | timedelta) -> Pattern[T]:
        """Every match spans less than ``window`` of event time (int ms or timedelta) from its first event."""
        ms = event_ms(window, "within()", positive=True)
        return Pattern(self._steps, ms, self._skip)

    def skip(self, strategy: SkipStrategy) -> Pattern[T]:
        """The same pattern with another after-match skip strategy."""
        if not isinstance(strategy, SkipStrategy):
            raise TypeError(f"skip() takes a skip strategy from streamlib.cep, got {strategy!r}")
        return Pattern(self._steps, self._within, strategy)

    @property
    def names(self) -> list[str]:
        """The step names, in order."""
        return [s.name for s in self._steps]

    def __repr__(self) -> str:
        parts = []
        for i, s in enumerate(self._steps):
            head = f"Pattern.begin({s.name!r})" if i == 0 else f".{_CONTIGUITY_NAMES[s.contiguity]}({s.name!r})"
            q = ""
            if s.hi == INFINITE:
                q = ".one_or_more()" if s.lo == 1 else f".times_or_more({s.lo})"
            elif (s.lo, s.hi) != (1, 1):
                q = f".times({s.lo}, {s.hi})"
            parts.append(head + ".where(...)" * len(s.conds) + q + (".optional()" if s.optional else ""))
        if self._within is not None:
            parts.append(f".within({self._within})")
        return "".join(parts)

    def compile(self) -> Compiled:
        """Check the pattern and build its NFA tables (done once per ``match`` stage)."""
        return Compiled(self)


def _bounds(s: _Step, lo: int, hi: int) -> None:
    s.lo = lo
    s.hi = hi


def _new_step(name: str, contiguity: int, before: tuple[_Step, ...]) -> _Step:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a step name is a non-empty str, got {name!r}")
    if any(s.name == name for s in before):
        raise ValueError(f"step name {name!r} is used twice in the pattern; names must be unique")
    return _Step(name, contiguity)


def _all_true(e: Any) -> bool:
    return True


class Compiled:
    """A checked pattern as tables for the NFA.

    Condition indices: ``conds[c]`` is a function; ``ctx_conds`` holds the
    indices of those taking ``(event, ctx)``. For positive step ``i``:
    ``cond[i]``, ``lo[i]`` (0 when optional... see ``opt``), ``hi[i]``,
    ``until[i]`` (-1 for none), and ``moves[i]``: a list of
    ``(bit, target, kill_always, kill_conds, kill_next, take_checks_next)``.
    """

    def __init__(self, pattern: Pattern[Any]) -> None:
        steps = pattern._steps
        self.within: int | None = pattern._within
        self.skip = pattern._skip
        if steps[0].negative:
            raise ValueError(f"a pattern cannot begin with a negative step ({steps[0].name!r})")
        last = steps[-1]
        if last.contiguity == NOT_NEXT:
            raise ValueError(
                f"a pattern cannot end with not_next({last.name!r}); use not_followed_by(...).within(...) "
                "to require that no such event follows"
            )
        self.trailing_negative = last.contiguity == NOT_FOLLOWED
        if self.trailing_negative and self.within is None:
            raise ValueError(
                f"a pattern ending with not_followed_by({last.name!r}) needs within(...): without a window "
                "the absence could never be confirmed"
            )
        for k, s in enumerate(steps):
            if s.negative and k < len(steps) - 1:
                after = [t for t in steps[k + 1 :] if not t.negative]
                if not after or after[0].optional:
                    raise ValueError(
                        f"the step after negative step {s.name!r} must take at least one event "
                        "(not optional, not negative)"
                    )
        if self.skip.kind == "skip_to_first" and self.skip.name not in [s.name for s in steps if not s.negative]:
            raise ValueError(f"skip_to_first({self.skip.name!r}): the pattern has no positive step of that name")

        self.conds: list[Callable[..., Any]] = []
        self.ctx_conds: list[bool] = []

        seen: dict[tuple[int, ...], int] = {}

        def cond_index(fns: tuple[Callable[..., Any], ...], what: str) -> int:
            ident = tuple(id(f) for f in fns)
            if ident in seen:  # the same function(s) on several steps: evaluated once per event
                return seen[ident]
            seen[ident] = len(self.conds)
            if not fns:
                fn: Callable[..., Any] = _all_true
                takes_ctx = False
            elif len(fns) == 1:
                fn = fns[0]
                takes_ctx = _arity(fn, what) == 2
            else:
                arities = [_arity(f, what) for f in fns]
                takes_ctx = 2 in arities
                if takes_ctx:
                    pairs = list(zip(fns, arities))

                    def fn(e: Any, ctx: Any, _pairs: Any = pairs) -> bool:
                        return all(f(e, ctx) if a == 2 else f(e) for f, a in _pairs)
                else:
                    def fn(e: Any, _fns: Any = fns) -> bool:
                        return all(f(e) for f in _fns)
            self.conds.append(fn)
            self.ctx_conds.append(takes_ctx)
            return len(self.conds) - 1

        pos = [s for s in steps if not s.negative]
        self.names: list[str] = [s.name for s in pos]
        m = len(pos)
        self.m = m
        self.cond = [cond_index(s.conds, f"where() of step {s.name!r}") for s in pos]
        self.until = [-1 if s.until is None else cond_index((s.until,), f"until() of {s.name!r}") for s in pos]
        self.lo = [s.lo for s in pos]
        self.hi = [s.hi for s in pos]
        self.opt = [s.optional for s in pos]
        self.inner = [s.inner for s in pos]
        self.entry = [s.contiguity for s in pos]
        self.greedy = [s.greedy for s in pos]
        # negatives: (kind, cond index, index of the positive step before it)
        negs: list[tuple[int, int, int]] = []
        p = -1
        for s in steps:
            if s.negative:
                negs.append((s.contiguity, cond_index(s.conds, f"where() of step {s.name!r}"), p))
            else:
                p += 1
        self.negs = negs
        for i, s in enumerate(pos):
            if s.greedy:
                later = pos[i + 1 :]
                if not self.trailing_negative and all(t.optional for t in later):
                    raise ValueError(
                        f"greedy(): step {s.name!r} is greedy but nothing after it must match, so a match "
                        "could never tell when it ends; add a later step that is not optional"
                    )
        # Steps a match may start at: every step before them is optional.
        self.starts: list[int] = []
        for j in range(m):
            self.starts.append(j)
            if not self.opt[j]:
                break
        # A match completes after step j when every later step is optional (and no absence trails).
        self.final = [
            (not self.trailing_negative) and all(self.opt[k] for k in range(j + 1, m)) for j in range(m)
        ]
        self.end_reachable = [self.trailing_negative and all(self.opt[k] for k in range(j + 1, m)) for j in range(m)]
        # Moves: bit 1 = LOOP, then one bit per exit target, then END.
        self.moves: list[list[tuple[int, int]]] = []  # (bit, target); target i = loop, m = END
        self.loop_bit = [0] * m
        self.exit_bits = [0] * m
        self.crossed: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i in range(m):
            mv: list[tuple[int, int]] = []
            bit = 1
            if self.hi[i] > 1:
                mv.append((bit, i))
                self.loop_bit[i] = bit
            bit <<= 1
            ex = 0
            for j in range(i + 1, m):
                mv.append((bit, j))
                ex |= bit
                self.crossed[(i, j)] = [(kind, c) for kind, c, at in negs if i <= at < j]
                bit <<= 1
                if not self.opt[j]:
                    break
            if self.end_reachable[i]:
                mv.append((bit, m))
                ex |= bit
                self.crossed[(i, m)] = [(kind, c) for kind, c, at in negs if i <= at]
            self.exit_bits[i] = ex
            self.moves.append(mv)
        self.any_ctx = any(self.ctx_conds)
        self.plain = [c for c in range(len(self.conds)) if not self.ctx_conds[c]]

    def mask(self, i: int, count: int) -> int:
        """The moves open to a partial match whose last event is the ``count``-th of step ``i``."""
        mk = 0
        if count < self.hi[i]:
            mk |= self.loop_bit[i]
        if count >= self.lo[i]:
            mk |= self.exit_bits[i]
        return mk
