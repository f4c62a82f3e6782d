"""The compiled chain and fold kernels against their pure-Python twins and a list model.

Random chains of element-wise ops (deterministic functions, some of which raise
on a chosen element) run over random inputs cut into random chunks, through
``NativeChainLogic`` and the pure ``ChainLogic`` side by side. Both must give
the outputs, partial output, exception (type, message, stage-name note) and
completion that evaluating the ops element by element gives (a lazy generator
model). The same chains then run end to end through ``Source``...``run_with``
with the switch set each way.

The compiled modules are required unless ``STREAMLIB_PURE`` is set: ``make
test`` always builds them, so a missing one is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import operator
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import reduce
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamlib._native as switch
from streamlib import Keep, Sink, Source, native_enabled
from streamlib._ops.chain import (
    COLLECT,
    DROP,
    DROP_WHILE,
    FILTER,
    FILTER_NOT,
    KIND_NAMES,
    MAP,
    MAP_CONCAT,
    SCAN,
    TAKE,
    TAKE_WHILE,
    ZIP_WITH_INDEX,
    ChainLogic,
)
from streamlib.testing import source_from_chunks, split_at

PURE_FORCED = os.environ.get("STREAMLIB_PURE", "") not in ("", "0")


def compiled(name: str) -> ModuleType:
    """The compiled module, or a failure (a skip only when pure Python is forced)."""
    if PURE_FORCED:
        pytest.skip("STREAMLIB_PURE is set: the compiled kernels are not in use")
    try:
        return __import__(f"streamlib._native.{name}", fromlist=["_"])
    except ImportError as error:
        pytest.fail(f"compiled module streamlib._native.{name} is missing ({error}); build it with `make test`")


# -- ops with simple deterministic functions that may raise on a chosen element ---------


class Boom(Exception):
    """Raised by a test function on its chosen element."""


RAISED: list[BaseException] = []


def val(x: Any) -> int:
    """An int for any element (zip_with_index makes ``(element, index)`` tuples)."""
    return x if type(x) is int else val(x[0]) * 3 + x[1]


def check_fail(name: str, fail_on: int | None, x: Any) -> None:
    if fail_on is not None and val(x) == fail_on:
        error = Boom(f"{name} failed on {x!r}")
        RAISED.append(error)
        raise error


@dataclass(frozen=True)
class OpSpec:
    kind: int
    a: int  # a parameter: multiplier, modulus, threshold, count, zero...
    b: int  # a second parameter / a variant
    fail_on: int | None
    name: str = field(default="")

    def function(self) -> Any:
        """The user function for this op (None for take/drop/zip_with_index)."""
        kind, a, b, fail, name = self.kind, self.a, self.b, self.fail_on, self.name
        if kind == MAP:

            def user_map(x: Any) -> int:
                check_fail(name, fail, x)
                return val(x) * a + b

            return user_map
        if kind in (FILTER, FILTER_NOT):

            def user_pred(x: Any) -> bool:
                check_fail(name, fail, x)
                return val(x) % a == b % a

            return user_pred
        if kind == MAP_CONCAT:

            def user_concat(x: Any) -> Any:
                check_fail(name, fail, x)
                v = val(x)
                items = [v + i for i in range(v % a)]
                if b % 3 == 0:
                    return items
                if b % 3 == 1:
                    return tuple(items)
                return gen(v, items)

            def gen(v: int, items: list[int]) -> Iterator[int]:
                for i, y in enumerate(items):
                    if i == 1:
                        check_fail(name, fail, v + 1000)  # fails mid-iteration
                    yield y

            return user_concat
        if kind == COLLECT:

            def user_collect(x: Any) -> int | None:
                check_fail(name, fail, x)
                v = val(x)
                return None if v % a == 0 else v + b

            return user_collect
        if kind in (TAKE_WHILE, DROP_WHILE):

            def user_while(x: Any) -> bool:
                check_fail(name, fail, x)
                return val(x) < a

            return user_while
        if kind == SCAN:

            def user_scan(acc: int, x: Any) -> int:
                check_fail(name, fail, x)
                return (acc * b + val(x)) % 1000

            return user_scan
        return None

    def arg(self) -> Any:
        if self.kind == SCAN:
            return self.a
        if self.kind in (TAKE, DROP):
            return self.a
        return None

    def op(self) -> tuple[int, Any, Any, str]:
        return (self.kind, self.function(), self.arg(), self.name)

    def apply(self, src: Any) -> Any:
        """The same op through the DSL."""
        kind, fn = self.kind, self.function()
        if kind == MAP:
            return src.map(fn)
        if kind == FILTER:
            return src.filter(fn)
        if kind == FILTER_NOT:
            return src.filter_not(fn)
        if kind == MAP_CONCAT:
            return src.map_concat(fn)
        if kind == COLLECT:
            return src.collect(fn)
        if kind == TAKE_WHILE:
            return src.take_while(fn)
        if kind == DROP_WHILE:
            return src.drop_while(fn)
        if kind == SCAN:
            return src.scan(self.a, fn)
        if kind == TAKE:
            return src.take(self.a)
        if kind == DROP:
            return src.drop(self.a)
        return src.zip_with_index()


def model_gen(spec: OpSpec, it: Iterator[Any], flags: dict[str, bool]) -> Iterator[Any]:
    """One op as a lazy generator: pulling element by element is the reference semantics."""
    kind, fn = spec.kind, spec.function()
    if kind == MAP:
        for x in it:
            yield fn(x)
    elif kind == FILTER:
        for x in it:
            if fn(x):
                yield x
    elif kind == FILTER_NOT:
        for x in it:
            if not fn(x):
                yield x
    elif kind == MAP_CONCAT:
        for x in it:
            yield from fn(x)
    elif kind == COLLECT:
        for x in it:
            y = fn(x)
            if y is not None:
                yield y
    elif kind == TAKE_WHILE:
        for x in it:
            if not fn(x):
                flags["completed"] = True
                return
            yield x
    elif kind == DROP_WHILE:
        dropping = True
        for x in it:
            if dropping and fn(x):
                continue
            dropping = False
            yield x
    elif kind == SCAN:
        acc = spec.a
        yield acc
        for x in it:
            acc = fn(acc, x)
            yield acc
    elif kind == TAKE:
        n = spec.a
        if n <= 0:
            flags["completed"] = True
            return
        for x in it:
            n -= 1
            if n == 0:
                flags["completed"] = True  # as the logic: complete with the last element
                yield x
                return
            yield x
    elif kind == DROP:
        n = spec.a
        for x in it:
            if n > 0:
                n -= 1
                continue
            yield x
    else:
        for i, x in enumerate(it):
            yield (x, i)


@dataclass
class Outcome:
    out: list[Any]
    error: BaseException | None
    completed: bool
    partial: list[Any] = field(default_factory=list)


def model(specs: list[OpSpec], xs: list[int]) -> Outcome:
    RAISED.clear()
    flags = {"completed": False}
    it: Iterator[Any] = iter(xs)
    for spec in specs:
        it = model_gen(spec, it, flags)
    out: list[Any] = []
    try:
        for y in it:
            out.append(y)
    except Boom as error:
        return Outcome(out, error, flags["completed"])
    return Outcome(out, None, flags["completed"])


def drive(logic: ChainLogic, chunks: list[list[int]]) -> Outcome:
    """Feed a logic the way an island does: on_start, then chunks until completed."""
    out: list[Any] = []
    try:
        out.extend(logic.on_start())
        for chunk in chunks:
            if logic.completed:
                break
            original = list(chunk)
            out.extend(logic.on_chunk(chunk))
            assert chunk == original, "the input chunk was mutated"
    except Boom as error:
        partial = logic.take_partial()
        assert logic.take_partial() == [], "take_partial hands the partial output over once"
        return Outcome(out + partial, error, logic.completed, partial)
    return Outcome(out, None, logic.completed)


def build(cls: type[ChainLogic], specs: list[OpSpec], merged: bool) -> ChainLogic:
    """One logic for all ops, or one per op merged the way the materializer fuses them."""
    ops = [s.op() for s in specs]
    if not merged or not ops:
        return cls(ops)
    logic = cls(ops[:1])
    for op in ops[1:]:
        assert logic.merge_with(cls([op]))
    return logic


def assert_failure_matches(
    error: BaseException, expected: BaseException, raised_last: bool, dsl_names: bool = False
) -> None:
    """Same type and message, the failing op's name in one note, the very object raised."""
    assert type(error) is type(expected)
    assert str(error) == str(expected)
    failing_op = str(error).split(" failed on ")[0]
    if dsl_names:  # through the DSL, stages are named after their kind ("map")
        failing_op = failing_op.split(":")[1]
    assert [n for n in getattr(error, "__notes__", []) if n.startswith("in stage ")] == [f"in stage '{failing_op}'"]
    if raised_last:
        assert error is RAISED[-1], "the exception object raised by the user function propagates"


# -- strategies ------------------------------------------------------------------------

FN_KINDS = (MAP, FILTER, FILTER_NOT, MAP_CONCAT, COLLECT, TAKE_WHILE, DROP_WHILE, SCAN)
ALL_KINDS = (*FN_KINDS, TAKE, DROP, ZIP_WITH_INDEX)


@st.composite
def op_specs(draw: st.DrawFn, index: int) -> OpSpec:
    kind = draw(st.sampled_from(ALL_KINDS))
    if kind in (TAKE, DROP):
        a = draw(st.integers(0, 12))
    elif kind in (TAKE_WHILE, DROP_WHILE):
        a = draw(st.integers(0, 40))
    elif kind == SCAN:
        a = draw(st.integers(-5, 5))
    else:
        a = draw(st.integers(1, 4))
    b = draw(st.integers(0, 5))
    fail_on = draw(st.none() | st.integers(0, 40)) if kind in FN_KINDS else None
    return OpSpec(kind, a, b, fail_on, f"op{index}:{KIND_NAMES[kind]}")


@st.composite
def chains(draw: st.DrawFn, max_ops: int = 6) -> list[OpSpec]:
    n = draw(st.integers(0, max_ops))
    return [draw(op_specs(i)) for i in range(n)]


@st.composite
def chunked(draw: st.DrawFn) -> tuple[list[int], list[list[int]]]:
    xs = draw(st.lists(st.integers(0, 30), max_size=40))
    cuts = draw(st.lists(st.integers(0, len(xs)), max_size=6))
    return xs, split_at(xs, cuts)


# -- the kernel against the pure twin and the model ------------------------------------


@settings(max_examples=400, deadline=None)
@given(specs=chains(), data=chunked(), merged=st.booleans())
def test_native_and_pure_match_the_element_wise_model(
    specs: list[OpSpec], data: tuple[list[int], list[list[int]]], merged: bool
) -> None:
    xs, chunks = data
    expected = model(specs, xs)
    pure = drive(build(ChainLogic, specs, merged), [list(c) for c in chunks])
    # With STREAMLIB_PURE set only the pure twin is checked (the other tests report the skip).
    native_cls = None if PURE_FORCED else compiled("_chain").NativeChainLogic
    native = pure if native_cls is None else drive(build(native_cls, specs, merged), [list(c) for c in chunks])

    for got in (pure, native):
        assert got.out == expected.out
        assert (got.error is None) == (expected.error is None)
        if expected.error is not None:
            assert got.error is not None
            assert_failure_matches(got.error, expected.error, raised_last=got is native)
        else:
            assert got.completed == expected.completed
    assert native.partial == pure.partial


@settings(max_examples=60, deadline=None)
@given(specs=chains(), xs=st.lists(st.integers(0, 30), max_size=40))
def test_state_carries_across_chunks(specs: list[OpSpec], xs: list[int]) -> None:
    """One chunk or one chunk per element: the same outputs and the same per-op state."""
    native_cls = compiled("_chain").NativeChainLogic
    specs = [s for s in specs if s.fail_on is None]
    whole, single = native_cls([s.op() for s in specs]), native_cls([s.op() for s in specs])
    pure = ChainLogic([s.op() for s in specs])
    a, b, c = drive(whole, [xs]), drive(single, [[x] for x in xs]), drive(pure, [[x] for x in xs])
    assert a.out == b.out == c.out == model(specs, xs).out
    if not pure.completed:  # after completion the ops before the take may differ (unused)
        assert single.state == pure.state


def test_counters_beyond_a_machine_word_stay_exact() -> None:
    native_cls = compiled("_chain").NativeChainLogic
    huge = 2**80
    ops = [(TAKE, None, huge, "take"), (DROP, None, huge, "drop"), (ZIP_WITH_INDEX, None, None, "zip")]
    for cls in (ChainLogic, native_cls):
        logic = cls(ops)
        logic.state[2] = huge
        assert logic.on_chunk([1, 2, 3]) == []
        assert logic.state == [huge - 3, huge - 3, huge]
        logic.state[1] = 1
        assert logic.on_chunk([4, 5]) == [(5, huge)]
        assert logic.state == [huge - 5, 0, huge + 1]


def test_filter_none_tests_truth_and_scan_none_adds() -> None:
    """``filter(None, xs)`` / ``accumulate(xs, None)`` semantics, as the pure twin."""
    native_cls = compiled("_chain").NativeChainLogic
    ops = [(FILTER, None, None, "filter"), (FILTER_NOT, None, None, "filter_not"), (SCAN, None, 10, "scan")]
    chunk = [0, 1, "", 2, None]
    for ops_ in ([ops[0], ops[2]], [ops[1]]):
        assert native_cls(ops_).on_chunk(list(chunk)) == ChainLogic(ops_).on_chunk(list(chunk))
    assert native_cls([ops[0], ops[2]]).on_chunk(list(chunk)) == [11, 13]
    assert native_cls([ops[1]]).on_chunk(list(chunk)) == [0, "", None]


def test_a_chunk_that_is_not_a_list_and_a_chunk_mutated_by_the_user_function() -> None:
    native_cls = compiled("_chain").NativeChainLogic
    assert native_cls([(MAP, str, None, "map")]).on_chunk((1, 2)) == ["1", "2"]  # type: ignore[arg-type]
    chunk = [1, 2, 3, 4]

    def shrink(x: int) -> int:
        chunk.clear()  # misbehaving, but must not crash the kernel
        return x

    assert native_cls([(MAP, shrink, None, "map")]).on_chunk(chunk) == [1]


def test_native_exception_keeps_the_user_frame_in_its_traceback() -> None:
    native_cls = compiled("_chain").NativeChainLogic

    def exploding_user_function(x: int) -> int:
        if x == 3:
            raise KeyError(x)
        return x

    logic = native_cls([(MAP, lambda x: x + 1, None, "map"), (FILTER, exploding_user_function, None, "filter")])
    with pytest.raises(KeyError) as info:
        logic.on_chunk([0, 1, 2, 3])
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "exploding_user_function" in frames
    assert info.value.__notes__ == ["in stage 'filter'"]
    assert logic.take_partial() == [1, 2]


def test_keyboard_interrupt_from_a_user_function_propagates_annotated() -> None:
    native_cls = compiled("_chain").NativeChainLogic

    def interrupt(x: int) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        native_cls([(MAP, interrupt, None, "map")]).on_chunk([1])
    assert info.value.__notes__ == ["in stage 'map'"]


# -- the fold kernel -------------------------------------------------------------------

numbers = st.one_of(
    st.integers(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**63 - 1, -(2**63), 2**62, True, False]),
    st.floats(allow_nan=False, allow_infinity=False),
)


def outcome_of(fold: Callable[..., Any], f: Any, chunk: list[Any], acc: Any) -> tuple[str, Any]:
    try:
        result = fold(f, chunk, acc)
    except Exception as error:  # noqa: BLE001 - compared across implementations
        return "error", (type(error), str(error))
    return type(result).__name__, repr(result)


@settings(max_examples=300, deadline=None)
@given(
    acc=numbers | st.just("s"),
    chunk=st.lists(numbers | st.just("s"), max_size=30),
    f=st.sampled_from([operator.add, lambda a, b: a + b, operator.sub, max]),
)
def test_fold_chunk_is_functools_reduce(acc: Any, chunk: list[Any], f: Any) -> None:
    fold_chunk = compiled("_fold").fold_chunk
    expected = outcome_of(reduce, f, chunk, acc)
    assert outcome_of(fold_chunk, f, list(chunk), acc) == expected


def test_fold_chunk_returns_the_accumulator_itself_for_an_empty_chunk_and_propagates_errors() -> None:
    fold_chunk = compiled("_fold").fold_chunk
    acc = object()
    assert fold_chunk(operator.add, [], acc) is acc
    assert fold_chunk(lambda a, b: a + [b], iter([1, 2]), []) == [1, 2]  # any iterable, as reduce

    def failing_fold(acc: int, x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return acc + x

    with pytest.raises(ValueError, match="two") as info:
        fold_chunk(failing_fold, [1, 2, 3], 0)
    assert "failing_fold" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]


# -- end to end through the DSL, with the switch set each way ---------------------------


@pytest.fixture(params=["native", "pure"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "native":
        compiled("_chain")
        monkeypatch.delenv("STREAMLIB_PURE", raising=False)
    else:
        monkeypatch.setenv("STREAMLIB_PURE", "1")
    switch.reset()
    yield request.param
    monkeypatch.undo()
    switch.reset()


def run_stream(specs: list[OpSpec], chunks: list[list[int]], max_chunk: int) -> tuple[list[Any], BaseException | None]:
    got: list[Any] = []
    src: Any = source_from_chunks(chunks)
    for spec in specs:
        src = spec.apply(src)

    async def main() -> BaseException | None:
        try:
            await src.to_mat(Sink.foreach(got.append), Keep.right).run(max_chunk=max_chunk)
        except Boom as error:
            return error
        return None

    return got, asyncio.run(main())


def test_the_switch_picks_the_class(implementation: str) -> None:
    cls = switch.chain_logic_class()
    if implementation == "native":
        assert native_enabled() and cls.__name__ == "NativeChainLogic"
        assert switch.fold_function() is not reduce
    else:
        assert not native_enabled() and cls is ChainLogic
        assert switch.fold_function() is reduce


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=chains(max_ops=5), data=chunked(), max_chunk=st.sampled_from([1, 3, 1024]))
def test_end_to_end_matches_the_model(
    implementation: str, specs: list[OpSpec], data: tuple[list[int], list[list[int]]], max_chunk: int
) -> None:
    xs, chunks = data
    expected = model(specs, xs)
    got, error = run_stream(specs, chunks, max_chunk)
    assert got == expected.out
    if expected.error is None:
        assert error is None
    else:
        assert error is not None
        assert_failure_matches(error, expected.error, raised_last=True, dsl_names=True)


def test_end_to_end_fold_sum(implementation: str) -> None:
    n = 50_000
    f, p = (lambda x: x * 3), (lambda x: x % 2 == 0)

    async def main() -> Any:
        return await Source.from_iterable(range(n)).map(f).filter(p).run_with(Sink.fold(0, operator.add))

    assert asyncio.run(main()) == sum(y for y in map(f, range(n)) if p(y))
