"""Operators against plain-list models, over random inputs, chunkings and async boundaries.

Every operator here is checked the way fs2 and Akka check theirs: the same elements
are fed with random chunk boundaries (``source_from_chunks(split_at(xs, cuts))``),
a random ``max_chunk`` and random ``async_boundary()`` insertions, and the output
must equal a model written with plain Python iterators. The models are lazy
generators, so they also say what a downstream ``take`` must never pull (an empty
``reduce`` upstream of ``take(0)`` does not fail, a failing element after the
last one ``take`` wants is never reached).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, dropwhile, islice, takewhile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import EmptyStreamError, Keep, Sink, Source
from streamlib.testing import assert_no_running_graphs, source_from_chunks, split_at

SETTINGS = settings(max_examples=40, deadline=None)
NOTHING: Any = object()


# -- plain-list (eager) models, used for the exact-structure tests --------------------


def sliding_model(xs: list[Any], n: int, step: int) -> list[list[Any]]:
    """Scala's ``sliding``: a short last window only when it holds elements no earlier one had."""
    out: list[list[Any]] = []
    i = 0
    while i < len(xs):
        if i + n <= len(xs):
            out.append(xs[i : i + n])
        else:
            if i == 0 or i - step + n < len(xs):
                out.append(xs[i:])
            break
        i += step
    return out


def grouped_model(xs: list[Any], n: int) -> list[list[Any]]:
    return [xs[i : i + n] for i in range(0, len(xs), n)]


def intersperse_model(xs: list[Any], inject: Any, start: Any = NOTHING, end: Any = NOTHING) -> list[Any]:
    out: list[Any] = [] if start is NOTHING else [start]
    for i, x in enumerate(xs):
        if i:
            out.append(inject)
        out.append(x)
    return out if end is NOTHING else [*out, end]


# -- lazy models: one generator per operator ------------------------------------------


def _scan_gen(it: Iterator[int], zero: int) -> Iterator[int]:
    acc = zero
    yield acc
    for x in it:
        acc = acc + x
        yield acc


def _fold_gen(it: Iterator[int], zero: int) -> Iterator[int]:
    acc = zero
    for x in it:
        acc = acc + x
    yield acc


def _reduce_gen(it: Iterator[int]) -> Iterator[int]:
    acc: Any = NOTHING
    for x in it:
        acc = x if acc is NOTHING else acc + x
    if acc is NOTHING:
        raise EmptyStreamError("reduce: the stream was empty")
    yield acc


def _grouped_gen(it: Iterator[int], n: int) -> Iterator[int]:
    group: list[int] = []
    for x in it:
        group.append(x)
        if len(group) == n:
            yield encode(group)
            group = []
    if group:
        yield encode(group)


def _sliding_gen(it: Iterator[int], n: int, step: int) -> Iterator[int]:
    """``sliding_model``, emitting each full window as soon as its last element arrives."""
    seen: list[int] = []
    i = 0
    for x in it:
        seen.append(x)
        if len(seen) == i + n:
            yield encode(seen[i : i + n])
            i += step
    if i < len(seen) and (i == 0 or i - step + n < len(seen)):
        yield encode(seen[i:])


def _intersperse_gen(it: Iterator[int], inject: int, start: Any, end: Any) -> Iterator[int]:
    if start is not NOTHING:
        yield start
    first = True
    for x in it:
        if not first:
            yield inject
        first = False
        yield x
    if end is not NOTHING:
        yield end


def encode(window: list[int]) -> int:
    """Windows become ints again so that any operator may follow them in a composition."""
    return sum(window) * 10 + len(window)


@dataclass
class Op:
    """One operator: how to append it to a Source, and its lazy model."""

    label: str
    apply: Callable[[Any], Any]
    model: Callable[[Iterator[int]], Iterator[int]]

    def __repr__(self) -> str:
        return self.label


def _op_map() -> st.SearchStrategy[Op]:
    def map_(a: int) -> Op:
        return Op(f"map(x*{a}+1)", lambda s: s.map(lambda x: x * a + 1), lambda it: (x * a + 1 for x in it))

    return st.integers(-3, 3).map(map_)


def _op_filter() -> st.SearchStrategy[Op]:
    def filter_(m: int) -> Op:
        return Op(f"filter(x%{m}!=0)", lambda s: s.filter(lambda x: x % m != 0), lambda it: (x for x in it if x % m))

    return st.integers(2, 4).map(filter_)


def _op_filter_not() -> st.SearchStrategy[Op]:
    def filter_not_(m: int) -> Op:
        return Op(
            f"filter_not(x%{m}==0)",
            lambda s: s.filter_not(lambda x: x % m == 0),
            lambda it: (x for x in it if x % m != 0),
        )

    return st.integers(2, 4).map(filter_not_)


def _op_map_concat() -> st.SearchStrategy[Op]:
    def map_concat_(k: int) -> Op:
        def f(x: int) -> list[int]:
            return [x + j for j in range(x % k)]

        return Op(f"map_concat(range(x%{k}))", lambda s: s.map_concat(f), lambda it: (y for x in it for y in f(x)))

    return st.integers(1, 4).map(map_concat_)


def _op_collect() -> st.SearchStrategy[Op]:
    def collect_(m: int) -> Op:
        def f(x: int) -> int | None:
            return x // 2 if x % m == 0 else None

        return Op(
            f"collect(x//2 if x%{m}==0)",
            lambda s: s.collect(f),
            lambda it: (y for y in map(f, it) if y is not None),
        )

    return st.integers(1, 3).map(collect_)


def _op_take() -> st.SearchStrategy[Op]:
    return st.integers(0, 12).map(lambda n: Op(f"take({n})", lambda s: s.take(n), lambda it: islice(it, n)))


def _op_take_while() -> st.SearchStrategy[Op]:
    def take_while_(t: int) -> Op:
        return Op(f"take_while(x<{t})", lambda s: s.take_while(lambda x: x < t), lambda it: takewhile(lambda x: x < t, it))

    return st.integers(-10, 25).map(take_while_)


def _op_drop() -> st.SearchStrategy[Op]:
    return st.integers(0, 12).map(lambda n: Op(f"drop({n})", lambda s: s.drop(n), lambda it: islice(it, n, None)))


def _op_drop_while() -> st.SearchStrategy[Op]:
    def drop_while_(t: int) -> Op:
        return Op(f"drop_while(x<{t})", lambda s: s.drop_while(lambda x: x < t), lambda it: dropwhile(lambda x: x < t, it))

    return st.integers(-10, 25).map(drop_while_)


def _op_scan() -> st.SearchStrategy[Op]:
    def scan_(z: int) -> Op:
        return Op(f"scan({z},+)", lambda s: s.scan(z, operator.add), lambda it: _scan_gen(it, z))

    return st.integers(-3, 3).map(scan_)


def _op_zip_with_index() -> st.SearchStrategy[Op]:
    return st.just(
        Op(
            "zip_with_index",
            lambda s: s.zip_with_index().map(lambda p: p[0] * 100 + p[1]),
            lambda it: (x * 100 + i for i, x in enumerate(it)),
        )
    )


def _op_fold() -> st.SearchStrategy[Op]:
    def fold_(z: int) -> Op:
        return Op(f"fold({z},+)", lambda s: s.fold(z, operator.add), lambda it: _fold_gen(it, z))

    return st.integers(-3, 3).map(fold_)


def _op_reduce() -> st.SearchStrategy[Op]:
    return st.just(Op("reduce(+)", lambda s: s.reduce(operator.add), _reduce_gen))


def _op_grouped() -> st.SearchStrategy[Op]:
    def grouped_(n: int) -> Op:
        return Op(
            f"grouped({n})",
            lambda s: s.grouped(n).map(encode),
            lambda it: _grouped_gen(it, n),
        )

    return st.integers(1, 4).map(grouped_)


def _op_sliding() -> st.SearchStrategy[Op]:
    def sliding_(n: int, step: int) -> Op:
        return Op(
            f"sliding({n},{step})",
            lambda s: s.sliding(n, step).map(encode),
            lambda it: _sliding_gen(it, n, step),
        )

    return st.builds(sliding_, st.integers(1, 4), st.integers(1, 4))


def _op_intersperse() -> st.SearchStrategy[Op]:
    def intersperse_(inject: int, start: Any, end: Any) -> Op:
        def apply(s: Any) -> Any:
            kwargs = {k: v for k, v in (("start", start), ("end", end)) if v is not NOTHING}
            return s.intersperse(inject, **kwargs)

        label = f"intersperse({inject}, start={'-' if start is NOTHING else start}, end={'-' if end is NOTHING else end})"
        return Op(label, apply, lambda it: _intersperse_gen(it, inject, start, end))

    optional = st.one_of(st.just(NOTHING), st.integers(-9, 9))
    return st.builds(intersperse_, st.integers(-1, 1), optional, optional)


OPS: dict[str, Callable[[], st.SearchStrategy[Op]]] = {
    "map": _op_map,
    "filter": _op_filter,
    "filter_not": _op_filter_not,
    "map_concat": _op_map_concat,
    "collect": _op_collect,
    "take": _op_take,
    "take_while": _op_take_while,
    "drop": _op_drop,
    "drop_while": _op_drop_while,
    "scan": _op_scan,
    "zip_with_index": _op_zip_with_index,
    "fold": _op_fold,
    "reduce": _op_reduce,
    "grouped": _op_grouped,
    "sliding": _op_sliding,
    "intersperse": _op_intersperse,
}
#: Element-wise operators: the ones fused into one chain.
CHAIN_OPS = ("map", "filter", "filter_not", "map_concat", "collect", "take", "take_while", "drop", "drop_while", "scan", "zip_with_index")

any_op = st.one_of(*(make() for make in OPS.values()))
chain_op = st.one_of(*(OPS[name]() for name in CHAIN_OPS))


# -- inputs -----------------------------------------------------------------------------


@dataclass
class Input:
    xs: list[int]
    chunks: list[list[int]]
    max_chunk: int


@st.composite
def inputs(draw: st.DrawFn, max_size: int = 30) -> Input:
    xs = draw(st.lists(st.integers(-12, 12), max_size=max_size))
    cuts = draw(st.lists(st.integers(0, len(xs)), max_size=6))
    max_chunk = draw(st.sampled_from([1, 2, 3, 7, 1024]))
    return Input(xs, split_at(xs, cuts), max_chunk)


def boundaries(n: int) -> st.SearchStrategy[list[bool]]:
    """Where to put ``async_boundary()``: before each of ``n`` operators and at the end."""
    return st.lists(st.booleans(), min_size=n + 1, max_size=n + 1)


# -- running ----------------------------------------------------------------------------


def build(chunks: list[list[int]], ops: list[Op], bounds: list[bool]) -> Any:
    src: Any = source_from_chunks(chunks)
    for op, boundary in zip(ops, bounds):
        if boundary:
            src = src.async_boundary()
        src = op.apply(src)
    if bounds[len(ops)]:
        src = src.async_boundary()
    return src


def run(coro_fn: Callable[[], Any]) -> Any:
    """Run one example on a fresh loop and check it left nothing running."""

    async def main() -> Any:
        try:
            return await coro_fn()
        finally:
            await assert_no_running_graphs()

    return asyncio.run(main())


def model_outcome(ops: list[Op], xs: Iterable[int]) -> tuple[list[int], BaseException | None]:
    """What the lazy model delivers, and the error it ends with (None when it completes)."""
    it: Iterator[int] = iter(xs)
    for op in ops:
        it = op.model(it)
    out: list[int] = []
    try:
        for x in it:
            out.append(x)
    except Exception as error:  # noqa: BLE001 - the model's failure is the expected outcome
        return out, error
    return out, None


def stream_outcome(src: Any, max_chunk: int) -> tuple[list[int], BaseException | None]:
    got: list[int] = []

    async def go() -> BaseException | None:
        try:
            await src.to_mat(Sink.foreach(got.append), Keep.right).run(max_chunk=max_chunk)
        except Exception as error:  # noqa: BLE001 - compared with the model's
            return error
        return None

    return got, run(go)


def check_against_model(inp: Input, ops: list[Op], bounds: list[bool]) -> None:
    expected, expected_error = model_outcome(ops, inp.xs)
    got, error = stream_outcome(build(inp.chunks, ops, bounds), inp.max_chunk)
    assert got == expected
    assert type(error) is type(expected_error), (error, expected_error)


# -- each operator alone ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPS))
@SETTINGS
@given(data=st.data())
def test_operator_equals_model(name: str, data: st.DataObject) -> None:
    inp = data.draw(inputs())
    op = data.draw(OPS[name]())
    check_against_model(inp, [op], data.draw(boundaries(1)))


# -- random compositions -----------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(inp=inputs(), data=st.data())
def test_composition_equals_model(inp: Input, data: st.DataObject) -> None:
    ops = data.draw(st.lists(any_op, min_size=2, max_size=5))
    check_against_model(inp, ops, data.draw(boundaries(len(ops))))


@settings(max_examples=100, deadline=None)
@given(inp=inputs(), data=st.data())
def test_chain_composition_equals_model(inp: Input, data: st.DataObject) -> None:
    """Long runs of element-wise operators: all fused into one chain when no boundary splits them."""
    ops = data.draw(st.lists(chain_op, min_size=3, max_size=8))
    check_against_model(inp, ops, data.draw(st.one_of(st.just([False] * (len(ops) + 1)), boundaries(len(ops)))))


# -- exact structure of the operators whose elements are not ints ---------------------------------


def collect_run(src: Any, max_chunk: int) -> Any:
    return run(lambda: src.to_mat(Sink.collect(), Keep.right).run(max_chunk=max_chunk))


@SETTINGS
@given(inp=inputs(), n=st.integers(1, 5), step=st.integers(1, 5), boundary=st.booleans())
def test_sliding_windows_exact(inp: Input, n: int, step: int, boundary: bool) -> None:
    src = source_from_chunks(inp.chunks)
    src = src.async_boundary() if boundary else src
    assert collect_run(src.sliding(n, step), inp.max_chunk) == sliding_model(inp.xs, n, step)


@SETTINGS
@given(xs=st.lists(st.integers(), max_size=20), n=st.integers(1, 5), step=st.integers(1, 5))
def test_lazy_window_models_agree_with_the_list_models(xs: list[int], n: int, step: int) -> None:
    assert list(_sliding_gen(iter(xs), n, step)) == [encode(w) for w in sliding_model(xs, n, step)]
    assert list(_grouped_gen(iter(xs), n)) == [encode(w) for w in grouped_model(xs, n)]


def test_sliding_model_is_scalas() -> None:
    # Values from Scala 2.13: (0 until k).sliding(n, step).toList
    assert sliding_model(list(range(6)), 3, 2) == [[0, 1, 2], [2, 3, 4], [4, 5]]
    assert sliding_model(list(range(5)), 3, 2) == [[0, 1, 2], [2, 3, 4]]
    assert sliding_model(list(range(7)), 2, 3) == [[0, 1], [3, 4], [6]]
    assert sliding_model(list(range(6)), 2, 3) == [[0, 1], [3, 4]]
    assert sliding_model([1], 3, 1) == [[1]]
    assert sliding_model([], 3, 1) == []


@SETTINGS
@given(inp=inputs(), n=st.integers(1, 5), boundary=st.booleans())
def test_grouped_exact(inp: Input, n: int, boundary: bool) -> None:
    src = source_from_chunks(inp.chunks)
    src = src.async_boundary() if boundary else src
    assert collect_run(src.grouped(n), inp.max_chunk) == grouped_model(inp.xs, n)


@SETTINGS
@given(inp=inputs(), boundary=st.booleans())
def test_zip_with_index_exact(inp: Input, boundary: bool) -> None:
    src = source_from_chunks(inp.chunks)
    src = src.async_boundary() if boundary else src
    assert collect_run(src.zip_with_index(), inp.max_chunk) == [(x, i) for i, x in enumerate(inp.xs)]


@SETTINGS
@given(
    inp=inputs(),
    start=st.one_of(st.just(NOTHING), st.text(max_size=2)),
    end=st.one_of(st.just(NOTHING), st.text(max_size=2)),
)
def test_intersperse_exact(inp: Input, start: Any, end: Any) -> None:
    kwargs = {k: v for k, v in (("start", start), ("end", end)) if v is not NOTHING}
    src: Any = source_from_chunks(inp.chunks)
    src = src.intersperse(",", **kwargs)
    assert collect_run(src, inp.max_chunk) == intersperse_model(inp.xs, ",", start, end)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, []), ({"start": "["}, ["["]), ({"end": "]"}, ["]"]), ({"start": "[", "end": "]"}, ["[", "]"])],
)
def test_intersperse_on_an_empty_stream(kwargs: dict[str, str], expected: list[str]) -> None:
    assert collect_run(Source.empty().intersperse(",", **kwargs), 1024) == expected


def test_scan_zero_survives_take_zero_downstream_only() -> None:
    """``take(0)`` passes nothing, yet a scan after it still emits its zero (as with a boundary)."""
    xs = Source.from_iterable([1, 2, 3])
    assert collect_run(xs.scan(0, operator.add).take(0), 1024) == []
    assert collect_run(xs.take(0).scan(7, operator.add), 1024) == [7]
    assert collect_run(xs.take(0).async_boundary().scan(7, operator.add), 1024) == [7]


def test_reduce_of_an_empty_stream_fails_but_not_under_take_zero() -> None:
    with pytest.raises(EmptyStreamError):
        collect_run(Source.empty().reduce(operator.add), 1024)
    assert collect_run(Source.empty().reduce(operator.add).take(0), 1024) == []


# -- failures at random positions ------------------------------------------------------------------


class Boom(Exception):
    """Raised by the failing map, carrying the position it failed at."""


class FailingMap:
    """A map function raising on the ``at``-th element it sees (one instance per run)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen = 0
        self.raised: list[Boom] = []

    def __call__(self, x: int) -> int:
        if self.seen == self.at:
            error = Boom(self.at)
            self.raised.append(error)
            raise error
        self.seen += 1
        return x


def failure_op(f: FailingMap) -> Op:
    def model(it: Iterator[int]) -> Iterator[int]:
        for k, x in enumerate(it):
            if k == f.at:
                raise Boom(f.at)
            yield x

    return Op(f"map(fail at #{f.at})", lambda s: s.map(f), model)


@pytest.mark.parametrize("boundary_after", [False, True])
@settings(max_examples=120, deadline=None)
@given(inp=inputs(), data=st.data())
def test_failure_at_random_position(inp: Input, data: st.DataObject, boundary_after: bool) -> None:
    """Elements before the failing one are delivered, none after, the exact error fails the stream."""
    before = data.draw(st.lists(chain_op, max_size=3))
    after = data.draw(st.lists(chain_op, max_size=3))
    at = data.draw(st.integers(0, max(len(inp.xs) - 1, 0)))
    bounds_before = data.draw(boundaries(len(before)))

    expected, expected_error = model_outcome([*before, failure_op(FailingMap(at)), *after], inp.xs)

    f = FailingMap(at)
    ops = [*before, failure_op(f), *after]
    bounds = [*bounds_before, *([False] * (len(after) + 1))]
    if boundary_after:
        bounds[len(before) + 1] = True
    got, error = stream_outcome(build(inp.chunks, ops, bounds), inp.max_chunk)

    assert got == expected
    if expected_error is None:
        assert error is None
    else:
        assert f.raised and error is f.raised[0]
        assert "in stage 'map'" in error.__notes__


def test_failure_before_a_take_that_is_satisfied_is_never_reached() -> None:
    """``map`` raising on the 3rd element of a chunk does not fail ``take(2)`` fused after it."""
    f = FailingMap(2)
    got, error = stream_outcome(source_from_chunks([[1, 2, 3, 4]]).map(f).take(2), 1024)
    assert (got, error) == ([1, 2], None)


def test_failure_beyond_a_satisfied_take_across_fused_stages() -> None:
    """Same as above with a non-chain stage (intersperse) between the map and the take."""
    f = FailingMap(2)
    got, error = stream_outcome(source_from_chunks([[1, 2, 3, 4]]).map(f).intersperse(0).take(3), 1024)
    assert (got, error) == ([1, 0, 2], None)


def test_start_elements_of_two_fused_stages_come_downstream_first() -> None:
    """Like nested generators: the downstream stage's start element comes before anything from upstream."""
    src = Source.empty().intersperse("-", start="a").map(str.upper).intersperse("-", start="b")
    assert collect_run(src, 1024) == ["b", "A"]


def test_start_elements_across_an_async_boundary_come_downstream_first() -> None:
    src = Source.empty().intersperse("-", start="a").async_boundary().map(str.upper).intersperse("-", start="b")
    assert collect_run(src, 1024) == ["b", "A"]
    src2 = Source.from_iterable([1]).scan(0, operator.add).async_boundary().scan(10, operator.add)
    assert collect_run(src2, 1024) == [10, 10, 11]


def test_take_completing_at_the_end_of_the_stream_finishes_later_stages_once() -> None:
    src = Source.empty().fold(0, operator.add).take(1).fold(100, operator.add)
    assert collect_run(src, 1024) == [100]


def test_failure_on_a_start_element_delivers_what_came_before() -> None:
    """scan's zero fails the map; the later scan had already emitted its own zero."""
    f = FailingMap(0)
    got, error = stream_outcome(Source.empty().scan(0, operator.add).map(f).scan(5, operator.add), 1024)
    assert got == [5]
    assert f.raised and error is f.raised[0]


def test_failure_on_a_start_element_fails_the_stream() -> None:
    f = FailingMap(0)
    got, error = stream_outcome(Source.empty().scan(0, operator.add).map(f), 1024)
    assert got == []
    assert f.raised and error is f.raised[0]


def test_take_zero_after_a_failing_start_element_never_reaches_it() -> None:
    got, error = stream_outcome(Source.from_iterable([1]).scan(0, operator.add).map(FailingMap(0)).take(0), 1024)
    assert (got, error) == ([], None)
