"""Element-wise operators, fused into one chain per island.

``map``, ``filter``, ``filter_not``, ``map_concat``, ``collect``, ``take``,
``take_while``, ``drop``, ``drop_while``, ``scan`` and ``zip_with_index`` are
all :class:`ChainStage` s. Adjacent ones in an island merge into a single
:class:`ChainLogic` that runs the ops over a chunk. This module is the pure
Python implementation; ``streamlib._native`` provides a compiled one with the
same contract, chosen by :func:`streamlib._native.chain_logic_class`.

Contract of ``ChainLogic.on_chunk`` (both implementations):

* outputs are exactly what applying the ops element by element would give;
* when a user function raises, the elements that element-by-element
  evaluation would have emitted before the failing element are kept
  (``take_partial``), the exception propagates unchanged, annotated with the
  failing op's stage name;
* ``take``/``take_while`` stop the chain (``completed``) after the last
  element they let through.
"""

from __future__ import annotations

from itertools import accumulate, chain, dropwhile, filterfalse, takewhile
from typing import Any, Callable

from ..stage import Stage, StageLogic, annotate

MAP = 0
FILTER = 1
FILTER_NOT = 2
MAP_CONCAT = 3
COLLECT = 4
TAKE_WHILE = 5
DROP_WHILE = 6
SCAN = 7
TAKE = 8
DROP = 9
ZIP_WITH_INDEX = 10

KIND_NAMES = {
    MAP: "map",
    FILTER: "filter",
    FILTER_NOT: "filter_not",
    MAP_CONCAT: "map_concat",
    COLLECT: "collect",
    TAKE_WHILE: "take_while",
    DROP_WHILE: "drop_while",
    SCAN: "scan",
    TAKE: "take",
    DROP: "drop",
    ZIP_WITH_INDEX: "zip_with_index",
}


class ChainStage(Stage):
    """A stage that is one element-wise op: ``kind`` with a function or a number."""

    __slots__ = ("kind", "fn", "arg", "name")

    def __init__(self, kind: int, fn: Callable[..., Any] | None = None, arg: Any = None) -> None:
        self.kind = kind
        self.fn = fn
        self.arg = arg
        self.name = KIND_NAMES[kind]

    def materialize(self, ctx: Any) -> tuple[StageLogic, None]:
        from .._native import chain_logic_class

        return chain_logic_class()([(self.kind, self.fn, self.arg, self.name)]), None


def _collect_apply(fn: Callable[[Any], Any], chunk: list[Any]) -> Any:
    return (y for y in map(fn, chunk) if y is not None)


class ChainLogic(StageLogic):
    """Runs a list of element-wise ops over each chunk (pure Python)."""

    def __init__(self, ops: list[tuple[int, Any, Any, str]]) -> None:
        self.ops: list[tuple[int, Any, Any, str]] = list(ops)
        # Per-op mutable state: scan accumulator, take/drop counters, drop_while flag, index.
        self.state: list[Any] = [self._initial_state(op) for op in self.ops]
        self.partial: list[Any] = []
        self.stage_name = "+".join(op[3] for op in self.ops)

    @staticmethod
    def _initial_state(op: tuple[int, Any, Any, str]) -> Any:
        kind, _fn, arg, _name = op
        if kind in (SCAN, TAKE, DROP):
            return arg
        if kind == DROP_WHILE:
            return True
        if kind == ZIP_WITH_INDEX:
            return 0
        return None

    def merge_with(self, other: StageLogic) -> bool:
        if type(other) is not type(self):
            return False
        assert isinstance(other, ChainLogic)
        self.ops.extend(other.ops)
        self.state.extend(other.state)
        self.stage_name = "+".join(op[3] for op in self.ops)
        return True

    def take_partial(self) -> list[Any]:
        partial, self.partial = self.partial, []
        return partial

    def on_start(self) -> list[Any]:
        """The scan zeros, as nested generators would emit them before any input.

        Each scan's zero comes before what reaches it from the ops upstream; ops
        before a ``take(0)`` are never asked for anything; when a function fails on
        a zero, what was emitted before it is the partial output, unless a later
        ``take``/``take_while`` completed before reaching the failing element.
        """
        ops, state = self.ops, self.state
        first = 0
        for k in range(len(ops) - 1, -1, -1):
            if ops[k][0] == TAKE and state[k] <= 0:
                self.completed = True
                first = k + 1
                break
        items: list[Any] = []
        error: BaseException | None = None
        for k in range(first, len(ops)):
            head = [state[k]] if ops[k][0] == SCAN else []
            if items:
                was_completed, self.completed = self.completed, False
                try:
                    items = self._run_from(k, items, stop=k + 1)
                except Exception as exc:
                    items, error = self.take_partial(), exc
                else:
                    if error is not None and self.completed:
                        error = None  # completed before the failing element
                self.completed = self.completed or was_completed
            items = head + items
        if error is not None:
            self.partial = items
            raise error
        return items

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        return self._run_from(0, chunk)

    def _run_from(self, start: int, chunk: list[Any], stop: int | None = None) -> list[Any]:
        ops = self.ops
        end = len(ops) if stop is None else stop
        for k in range(start, end):
            if not chunk:
                return chunk
            kind, fn, _arg, name = ops[k]
            out: list[Any] = []
            try:
                if kind == MAP:
                    out.extend(map(fn, chunk))
                elif kind == FILTER:
                    out.extend(filter(fn, chunk))
                elif kind == FILTER_NOT:
                    out.extend(filterfalse(fn, chunk))
                elif kind == MAP_CONCAT:
                    out.extend(chain.from_iterable(map(fn, chunk)))
                elif kind == COLLECT:
                    out.extend(_collect_apply(fn, chunk))
                elif kind == TAKE_WHILE:
                    out.extend(takewhile(fn, chunk))
                    if len(out) < len(chunk):
                        self.completed = True
                elif kind == DROP_WHILE:
                    if self.state[k]:
                        out.extend(dropwhile(fn, chunk))
                        if out:
                            self.state[k] = False
                    else:
                        out = chunk
                elif kind == SCAN:
                    it = accumulate(chunk, fn, initial=self.state[k])
                    next(it)
                    out.extend(it)
                    self.state[k] = out[-1]
                elif kind == TAKE:
                    remaining = self.state[k]
                    out = chunk[:remaining] if len(chunk) > remaining else chunk
                    self.state[k] = remaining - len(out)
                    if self.state[k] <= 0:
                        self.completed = True
                elif kind == DROP:
                    remaining = self.state[k]
                    if remaining > 0:
                        out = chunk[remaining:]  # a slice also takes counts beyond sys.maxsize
                        self.state[k] = max(0, remaining - len(chunk))
                    else:
                        out = chunk
                elif kind == ZIP_WITH_INDEX:
                    i0 = self.state[k]
                    out.extend(zip(chunk, range(i0, i0 + len(chunk))))
                    self.state[k] = i0 + len(chunk)
            except BaseException as error:
                annotate(error, name)
                if kind == SCAN and out:
                    self.state[k] = out[-1]
                was_completed, self.completed = self.completed, False
                self.partial = self._rest_after_failure(k, out, end)
                later_completed = self.completed
                self.completed = later_completed or was_completed
                if later_completed and isinstance(error, Exception):
                    # A later take/take_while completed on the elements before the failing
                    # one: element by element, the failing element is never reached.
                    partial, self.partial = self.partial, []
                    return partial
                raise
            if self.completed and kind in (TAKE, TAKE_WHILE):
                # Outside the try: a failure in the ops after take is theirs, not take's.
                return self._rest(k, out, end)
            chunk = out
        return chunk

    def _rest(self, k: int, out: list[Any], end: int) -> list[Any]:
        """Run the ops after ``k`` (the chain has completed at ``k``)."""
        return self._run_from(k + 1, out, end) if k + 1 < end else out

    def _rest_after_failure(self, k: int, out: list[Any], end: int) -> list[Any]:
        if not out or k + 1 >= end:
            return out
        # A later op failing on an earlier element wins, as element-wise evaluation would.
        return self._run_from(k + 1, out, end)
