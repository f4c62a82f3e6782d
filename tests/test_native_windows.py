"""The compiled window kernels against their pure-Python twins, and fields as extractors.

Random events cut into random chunks go through ``streamlib._native._windows``
and ``streamlib._time.kernels.PURE`` side by side, chunk by chunk with a rising
``closed_to``; after every chunk the state and the output containers must be
identical (same values, same types, same order). The session core also goes
through closes, a reload from its state and the end of the stream; the sliding
kernels fold and close random records. Whole session and sliding operators
(late records, updates, checkpoints) run with each set of kernels and must emit
the same items in the same order and leave the same rows in the store. Every built-in aggregation and
every extractor form (function, field name on mappings and on objects, index,
attrgetter, itemgetter) is drawn, and a user function may raise at a random
element: same exception, same state before it. Then windows run end to end with
the switch set each way.

The compiled module is required unless ``STREAMLIB_PURE`` is set: ``make test``
always builds it, so a missing one is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import copy
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamlib._native as switch
from streamlib import (
    CountWindows,
    HoppingWindows,
    Keep,
    MemoryStore,
    SessionWindows,
    Sink,
    SlidingWindows,
    Source,
    TumblingWindows,
)
from streamlib._dsl.fields import Field, extractor
from streamlib._time import aggregations as aggs
from streamlib._time.kernels import PURE
from streamlib.testing import source_from_chunks, split_at

PURE_FORCED = os.environ.get("STREAMLIB_PURE", "") not in ("", "0")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def compiled() -> ModuleType:
    """The compiled module, or a failure (a skip only when pure Python is forced)."""
    if PURE_FORCED:
        pytest.skip("STREAMLIB_PURE is set: the compiled kernels are not in use")
    try:
        from streamlib._native import _windows
    except ImportError as error:
        pytest.fail(f"compiled module streamlib._native._windows is missing ({error}); build it with `make test`")
    return _windows


@dataclass
class Ev:
    ts: Any
    key: Any
    value: Any


class Boom(Exception):
    pass


# -- element shapes and extractor forms ---------------------------------------------------


def as_shape(raw: tuple[Any, Any, Any], shape: str) -> Any:
    ts, k, v = raw
    if shape == "tuple":
        return (ts, k, v)
    if shape == "dict":
        return {"ts": ts, "key": k, "value": v}
    return Ev(ts, k, v)


def extractors(shape: str, form: str) -> tuple[Callable[[Any], Any], ...]:
    """(ts_of, key_of, value_of) for elements of ``shape`` written in ``form``."""
    names = ("ts", "key", "value")
    if shape == "tuple":
        if form == "lambda":
            return (lambda e: e[0], lambda e: e[1], lambda e: e[2])
        if form == "getter":
            return tuple(operator.itemgetter(i) for i in range(3))
        return tuple(extractor(i, "test") for i in range(3))  # ints: indexes
    if form == "lambda":
        if shape == "dict":
            return (lambda e: e["ts"], lambda e: e["key"], lambda e: e["value"])
        return (lambda e: e.ts, lambda e: e.key, lambda e: e.value)
    if form == "getter":
        getter = operator.itemgetter if shape == "dict" else operator.attrgetter
        return tuple(getter(n) for n in names)
    return tuple(extractor(n, "test") for n in names)  # names: Field


def failing(f: Callable[[Any], Any], at: int) -> Callable[[Any], Any]:
    """``f``, raising ``Boom`` on its call number ``at`` (counted per instance)."""
    calls = [0]

    def g(e: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            raise Boom(f"call {at}")
        return f(e)

    return g


AGGREGATIONS: dict[str, Callable[[Callable[[Any], Any]], aggs.Aggregation]] = {
    "count": lambda v: aggs.count(),
    "sum": aggs.sum_,
    "min": aggs.min_,
    "max": aggs.max_,
    "mean": aggs.mean,
    "collect": aggs.collect,
    "aggregate": lambda v: aggs.aggregate(list, lambda a, e: a + [e], merge=lambda a, b: a + b),
}

keys = st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3))
plain_ts = st.integers(-50, 400)
odd_ts = st.one_of(plain_ts, st.just(2**70), st.just(-(2**70)), st.floats(-50, 400, allow_nan=False))
values = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))


@st.composite
def fixed_case(draw: Any) -> dict[str, Any]:
    size = draw(st.integers(1, 60))
    hopping = draw(st.booleans())
    step = draw(st.integers(1, size)) if hopping else size
    n = draw(st.integers(0, 120))
    raw = draw(st.lists(st.tuples(draw(st.sampled_from([plain_ts, odd_ts])), keys, values), min_size=n, max_size=n))
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    closed = sorted(draw(st.lists(st.integers(-100, 450), min_size=10, max_size=10)))
    if draw(st.booleans()):
        closed[0] = -(2**63) - draw(st.integers(0, 10))  # no watermark yet, with allowed lateness
    return {
        "size": size,
        "step": step,
        "offset": draw(st.integers(0, step - 1)),
        "raw": raw,
        "cuts": cuts,
        "closed": closed,
        "shape": draw(st.sampled_from(["tuple", "dict", "object"])),
        "form": draw(st.sampled_from(["lambda", "getter", "field"])),
        "agg": draw(st.sampled_from(sorted(AGGREGATIONS))),
        "fail": draw(st.sampled_from([None, "ts", "key", "value"])),
        "fail_at": draw(st.integers(1, max(1, n))),
    }


def run_fixed(kernel: Callable[..., None], case: dict[str, Any]) -> tuple[list[Any], BaseException | None]:
    """Apply the case chunk by chunk; the snapshots of state and outputs after each chunk, and the error."""
    elements = [as_shape(r, case["shape"]) for r in case["raw"]]
    ts_of, key_of, value_of = extractors(case["shape"], case["form"])
    fns = {"ts": ts_of, "key": key_of, "value": value_of}
    if case["fail"] is not None:
        fns[case["fail"]] = failing(fns[case["fail"]], case["fail_at"])
    agg = AGGREGATIONS[case["agg"]](fns["value"])
    accs: dict[Any, Any] = {}
    snapshots: list[Any] = []
    for i, chunk in enumerate(split_at(elements, case["cuts"])):
        touched: set[Any] = set()
        created: list[Any] = []
        late: list[Any] = []
        try:
            kernel(
                chunk, fns["ts"], fns["key"], agg.value_of, case["size"], case["step"], case["offset"],
                agg.create, agg.add, accs, case["closed"][min(i, 9)], touched, created, late,
            )  # fmt: skip
        except Boom as error:
            snapshots.append(snapshot(accs, touched, created, late))
            return snapshots, error
        snapshots.append(snapshot(accs, touched, created, late))
    return snapshots, None


def snapshot(*things: Any) -> Any:
    """A deep copy that keeps types and orders visible to ``==`` (typed, ordered items)."""
    return [typed(copy.deepcopy(t)) for t in things]


def typed(x: Any) -> Any:
    if isinstance(x, dict):
        return [(typed(k), typed(v)) for k, v in x.items()]
    if isinstance(x, set):
        return sorted((repr(typed(k)) for k in x))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [typed(i) for i in x])
    if isinstance(x, Ev):
        return ("Ev", typed(x.ts), typed(x.key), typed(x.value))
    return (type(x).__name__, x)


@SETTINGS
@given(case=fixed_case())
def test_update_fixed_twins(case: dict[str, Any]) -> None:
    native = compiled().update_fixed
    want, want_error = run_fixed(PURE["update_fixed"], case)
    got, got_error = run_fixed(native, case)
    assert got == want
    assert repr(got_error) == repr(want_error)


@st.composite
def session_case(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 120))
    raw = draw(st.lists(st.tuples(draw(st.sampled_from([plain_ts, plain_ts, odd_ts])), keys, values), min_size=n,
                        max_size=n))  # fmt: skip
    steps = draw(st.lists(st.integers(0, 60), min_size=12, max_size=12))
    closed = [-(2**63) - draw(st.integers(0, 10))] if draw(st.booleans()) else []
    for step in steps:  # rising, from no watermark to past every timestamp
        closed.append((closed[-1] if closed and closed[-1] > -100 else -100) + step)
    return {
        "gap": draw(st.integers(1, 40)),
        "raw": raw,
        "cuts": draw(st.lists(st.integers(0, n), max_size=10)),
        "closed": closed,
        "shape": draw(st.sampled_from(["tuple", "dict", "object"])),
        "form": draw(st.sampled_from(["lambda", "getter", "field"])),
        "agg": draw(st.sampled_from(sorted(AGGREGATIONS))),
        "fail": draw(st.sampled_from([None, None, "ts", "key", "value", "merge", "result"])),
        "fail_at": draw(st.integers(1, max(1, n))),
        "emit": draw(st.booleans()),
        "tracking": draw(st.booleans()),
        "reload_at": draw(st.integers(0, 12)),
    }


def _session_functions(case: dict[str, Any]) -> tuple[dict[str, Any], aggs.Aggregation]:
    ts_of, key_of, value_of = extractors(case["shape"], case["form"])
    fns: dict[str, Any] = {"ts": ts_of, "key": key_of, "value": value_of}
    if case["fail"] in ("ts", "key", "value"):
        fns[case["fail"]] = failing(fns[case["fail"]], case["fail_at"])
    agg = AGGREGATIONS[case["agg"]](fns["value"])
    fns["merge"], fns["result"] = agg.merge, agg.result
    if case["fail"] == "merge":
        fns["merge"] = failing2(agg.merge, 1 + case["fail_at"] % 3)  # type: ignore[arg-type]
    if case["fail"] == "result":
        fns["result"] = failing(agg.result or (lambda a: a), 1 + case["fail_at"] % 5)
    return fns, agg


def failing2(f: Callable[[Any, Any], Any], at: int) -> Callable[[Any, Any], Any]:
    """``f`` of two arguments, raising ``Boom`` on its call number ``at``."""
    calls = [0]

    def g(a: Any, b: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            raise Boom(f"merge call {at}")
        return f(a, b)

    return g


def run_sessions(kernel: Callable[..., None], case: dict[str, Any]) -> tuple[list[Any], BaseException | None]:
    """``update_sessions`` chunk by chunk; snapshots of state and outputs after each chunk, and the error."""
    elements = [as_shape(r, case["shape"]) for r in case["raw"]]
    fns, agg = _session_functions(case)
    sessions: dict[Any, Any] = {}
    snapshots: list[Any] = []
    for i, chunk in enumerate(split_at(elements, case["cuts"])):
        touched: set[Any] = set()
        created: list[Any] = []
        late: list[Any] = []
        try:
            kernel(
                chunk, fns["ts"], fns["key"], agg.value_of, case["gap"], agg.create, agg.add, fns["merge"],
                sessions, case["closed"][min(i, len(case["closed"]) - 1)], touched, created, late,
            )  # fmt: skip
        except Boom as error:
            snapshots.append(snapshot(sessions, touched, created, late))
            return snapshots, error
        snapshots.append(snapshot(sessions, touched, created, late))
    return snapshots, None


@SETTINGS
@given(case=session_case())
def test_update_sessions_twins(case: dict[str, Any]) -> None:
    native = compiled().update_sessions
    want, want_error = run_sessions(PURE["update_sessions"], case)
    got, got_error = run_sessions(native, case)
    assert got == want
    assert repr(got_error) == repr(want_error)


def run_session_core(core_class: Any, case: dict[str, Any]) -> tuple[list[Any], BaseException | None]:
    """A ``SessionCore`` through chunks, closes, a reload from its state, and the end of the stream.

    After each step: the state, the keys touched and marked dirty, late elements,
    results (as typed tuples) and the keys forgotten.
    """
    elements = [as_shape(r, case["shape"]) for r in case["raw"]]
    fns, agg = _session_functions(case)

    def make_core(sessions: dict[Any, Any]) -> Any:
        return core_class(
            fns["ts"], fns["key"], agg.value_of, case["gap"], agg.create, agg.add, fns["merge"], fns["result"],
            lambda k, s, e, v: ("result", k, s, e, v), sessions,
        )  # fmt: skip

    sessions: dict[Any, Any] = {}
    core = make_core(sessions)
    snapshots: list[Any] = []
    removed: list[Any] = []
    dirty: set[Any] | None = set() if case["tracking"] else None
    closed = case["closed"]
    for i, chunk in enumerate(split_at(elements, case["cuts"])):
        c = closed[min(i, len(closed) - 1)]
        touched: set[Any] = set()
        late: list[Any] = []
        out: list[Any] = []
        try:
            if i == case["reload_at"]:  # a restart: a new core over a copy of the state
                sessions = copy.deepcopy(sessions)
                core = make_core(sessions)
                core.restore()
            core.update(chunk, c, touched, late)
            core.close(c, case["emit"], dirty, removed.append, out)
        except Boom as error:
            snapshots.append(snapshot(sessions, touched, late, out, dirty, removed))
            return snapshots, error
        snapshots.append(snapshot(sessions, touched, late, out, dirty, removed))
    out = []
    try:
        core.close(closed[-1] + 30, case["emit"], dirty, removed.append, out)
        snapshots.append(snapshot(sessions, out, dirty, removed))
        core.flush(dirty, out)
    except Boom as error:
        snapshots.append(snapshot(sessions, out, dirty, removed))
        return snapshots, error
    snapshots.append(snapshot(sessions, out, dirty, removed))
    return snapshots, None


@SETTINGS
@given(case=session_case())
def test_session_core_twins(case: dict[str, Any]) -> None:
    native = compiled().SessionCore
    want, want_error = run_session_core(PURE["SessionCore"], case)
    got, got_error = run_session_core(native, case)
    assert got == want
    assert repr(got_error) == repr(want_error)


@st.composite
def sliding_case(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 120))
    raw = draw(st.lists(st.tuples(draw(st.sampled_from([plain_ts, plain_ts, odd_ts])), keys, values), min_size=n,
                        max_size=n))  # fmt: skip
    closed = sorted(draw(st.lists(st.integers(-100, 450), min_size=10, max_size=10)))
    if draw(st.booleans()):
        closed[0] = -(2**63) - draw(st.integers(0, 10))
    return {
        "size": draw(st.integers(1, 60)),
        "raw": raw,
        "cuts": draw(st.lists(st.integers(0, n), max_size=8)),
        "closed": closed,
        "shape": draw(st.sampled_from(["tuple", "dict", "object"])),
        "form": draw(st.sampled_from(["lambda", "getter", "field"])),
        "agg": draw(st.sampled_from(sorted(AGGREGATIONS))),
        "fail": draw(st.sampled_from([None, "ts", "key", "value"])),
        "fail_at": draw(st.integers(1, max(1, n))),
    }


def run_sliding(kernel: Callable[..., None], case: dict[str, Any]) -> tuple[list[Any], BaseException | None]:
    elements = [as_shape(r, case["shape"]) for r in case["raw"]]
    ts_of, key_of, value_of = extractors(case["shape"], case["form"])
    fns = {"ts": ts_of, "key": key_of, "value": value_of}
    if case["fail"] is not None:
        fns[case["fail"]] = failing(fns[case["fail"]], case["fail_at"])
    agg = AGGREGATIONS[case["agg"]](fns["value"])
    records: dict[Any, Any] = {}
    snapshots: list[Any] = []
    for i, chunk in enumerate(split_at(elements, case["cuts"])):
        touched: dict[Any, list[Any]] = {}
        late: list[Any] = []
        try:
            kernel(
                chunk, fns["ts"], fns["key"], agg.value_of, agg.create, records, case["closed"][min(i, 9)],
                touched, late, case["size"],
            )  # fmt: skip
        except Boom as error:
            snapshots.append(snapshot(records, touched, late))
            return snapshots, error
        snapshots.append(snapshot(records, touched, late))
    return snapshots, None


@SETTINGS
@given(case=sliding_case())
def test_update_sliding_twins(case: dict[str, Any]) -> None:
    native = compiled().update_sliding
    want, want_error = run_sliding(PURE["update_sliding"], case)
    got, got_error = run_sliding(native, case)
    assert got == want
    assert repr(got_error) == repr(want_error)


acc_values = st.one_of(
    st.integers(-5, 5), st.integers(-5, 5), st.floats(-5, 5, allow_nan=False), st.booleans(),
    st.sampled_from([2**39, -(2**39), 2**45, 2**70]),
)  # fmt: skip


@st.composite
def sliding_records_case(draw: Any) -> dict[str, Any]:
    dense = draw(st.booleans())  # many records in few windows: long folds and running sums
    spread = st.integers(0, 100) if dense else st.one_of(st.integers(-50, 300), st.sampled_from([2**62, -(2**62)]))
    times = sorted(draw(st.lists(spread, min_size=5 if dense else 0, max_size=40)))
    agg_name = draw(st.sampled_from(sorted(AGGREGATIONS)))
    agg = AGGREGATIONS[agg_name](lambda e: e)
    kind = draw(st.sampled_from([st.integers(-5, 5), st.integers(-5, 5), acc_values]))  # exact ints: running sums
    vals = draw(st.lists(kind, min_size=len(times), max_size=len(times)))
    if dense:
        lo, closed_to = draw(st.integers(-20, 60)), draw(st.integers(60, 200))
    else:
        lo, closed_to = sorted(draw(st.lists(st.integers(-100, 400), min_size=2, max_size=2)))
    if draw(st.booleans()):
        lo = -(2**63) - draw(st.integers(0, 5))
    if draw(st.integers(0, 5)) == 0:
        closed_to = 2**63
    return {
        "agg": agg_name,
        "records": [[t, agg.create(v)] for t, v in zip(times, vals)],
        "size": draw(st.integers(1, 60)),
        "lo": lo,
        "closed_to": closed_to,
        "emit": draw(st.booleans()),
        "starts": sorted(draw(st.sets(st.integers(-120, 320), max_size=12))),
        "fail": draw(st.sampled_from([None, None, "merge", "result"])),
        "fail_at": draw(st.integers(1, 6)),
    }


def sliding_functions(case: dict[str, Any]) -> tuple[Any, Any]:
    agg = AGGREGATIONS[case["agg"]](lambda e: e)
    merge, result = agg.merge, agg.result
    if case["fail"] == "merge":
        merge = failing2(agg.merge, case["fail_at"])  # type: ignore[arg-type]
    if case["fail"] == "result":
        result = failing(agg.result or (lambda a: a), case["fail_at"])
    return merge, result


def run_expire_sliding(kernel: Callable[..., Any], case: dict[str, Any]) -> tuple[Any, str]:
    recs = copy.deepcopy(case["records"])
    merge, result = sliding_functions(case)
    out: list[Any] = []
    try:
        got = kernel(
            recs, "k", case["lo"], case["closed_to"], case["size"], case["emit"], merge, result,
            lambda k, s, e, v: ("result", k, s, e, v), out,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - the twins must fail alike
        return snapshot(recs, out), repr(error)
    return snapshot(recs, out, got), ""


def run_fold_sliding(kernel: Callable[..., Any], case: dict[str, Any]) -> tuple[Any, str]:
    recs = copy.deepcopy(case["records"])
    merge, result = sliding_functions(case)
    out: list[Any] = []
    try:
        kernel(recs, case["starts"], case["size"], merge, result, lambda k, s, e, v: ("result", k, s, e, v), "k", out)
    except Exception as error:  # noqa: BLE001 - the twins must fail alike (an empty window: IndexError)
        return snapshot(recs, out), repr(error)
    return snapshot(recs, out), ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=sliding_records_case())
def test_expire_sliding_twins(case: dict[str, Any]) -> None:
    native = compiled().expire_sliding
    assert run_expire_sliding(native, case) == run_expire_sliding(PURE["expire_sliding"], case)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=sliding_records_case())
def test_fold_sliding_twins(case: dict[str, Any]) -> None:
    native = compiled().fold_sliding
    assert run_fold_sliding(native, case) == run_fold_sliding(PURE["fold_sliding"], case)


@st.composite
def count_case(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 100))
    return {
        "n": draw(st.integers(1, 7)),
        "raw": draw(st.lists(st.tuples(st.just(0), keys, values), min_size=n, max_size=n)),
        "cuts": draw(st.lists(st.integers(0, n), max_size=8)),
        "shape": draw(st.sampled_from(["tuple", "dict", "object"])),
        "form": draw(st.sampled_from(["lambda", "getter", "field"])),
        "agg": draw(st.sampled_from(sorted(AGGREGATIONS))),
        "fail": draw(st.sampled_from([None, "key", "value"])),
        "fail_at": draw(st.integers(1, max(1, n))),
    }


def run_count(kernel: Callable[..., None], case: dict[str, Any]) -> tuple[list[Any], BaseException | None]:
    elements = [as_shape(r, case["shape"]) for r in case["raw"]]
    _, key_of, value_of = extractors(case["shape"], case["form"])
    fns = {"key": key_of, "value": value_of}
    if case["fail"] is not None:
        fns[case["fail"]] = failing(fns[case["fail"]], case["fail_at"])
    agg = AGGREGATIONS[case["agg"]](fns["value"])
    counts: dict[Any, Any] = {}
    snapshots: list[Any] = []
    for chunk in split_at(elements, case["cuts"]):
        touched: dict[Any, int] = {}
        full: list[Any] = []
        try:
            kernel(chunk, fns["key"], agg.value_of, case["n"], agg.create, agg.add, counts, touched, full)
        except Boom as error:
            snapshots.append(snapshot(counts, touched, full))
            return snapshots, error
        snapshots.append(snapshot(counts, touched, full))
    return snapshots, None


@SETTINGS
@given(case=count_case())
def test_update_count_twins(case: dict[str, Any]) -> None:
    native = compiled().update_count
    want, want_error = run_count(PURE["update_count"], case)
    got, got_error = run_count(native, case)
    assert got == want
    assert repr(got_error) == repr(want_error)


@SETTINGS
@given(
    raw=st.lists(st.tuples(odd_ts, keys, values), min_size=1, max_size=60),
    shape=st.sampled_from(["tuple", "dict", "object"]),
    form=st.sampled_from(["lambda", "getter", "field"]),
)
def test_max_timestamp_twins(raw: list[Any], shape: str, form: str) -> None:
    native = compiled().max_timestamp
    chunk = [as_shape(r, shape) for r in raw]
    ts_of = extractors(shape, form)[0]
    want = PURE["max_timestamp"](ts_of, chunk)
    got = native(ts_of, chunk)
    assert (type(got), got) == (type(want), want)


def test_max_timestamp_errors_are_the_pure_ones() -> None:
    native = compiled().max_timestamp
    for ts_of, chunk in (
        (operator.itemgetter(0), []),  # max() of nothing
        (Field("ts"), [{"ts": 1}, {"t": 2}]),  # KeyError
        (Field("ts"), [Ev(1, 0, 0), (2,)]),  # AttributeError
        (operator.itemgetter(0), [(1,), ("x",)]),  # str > int
    ):
        with pytest.raises(Exception) as want:
            PURE["max_timestamp"](ts_of, chunk)
        with pytest.raises(want.type) as got:
            native(ts_of, chunk)
        assert str(got.value) == str(want.value)


def test_a_field_is_decided_per_element_type() -> None:
    f = Field("ts")
    mixed = [{"ts": 3}, Ev(5, "a", 1), {"ts": 4}, Ev(1, "a", 1)]
    assert [f(e) for e in mixed] == [3, 5, 4, 1]
    assert f.modes == {dict: True, Ev: False}
    if not PURE_FORCED:
        assert compiled().max_timestamp(Field("ts"), mixed) == 5


def test_extractor_forms_and_errors() -> None:
    assert isinstance(extractor("ts", "x"), Field)
    assert extractor(2, "x")((7, 8, 9)) == 9
    f = lambda e: e  # noqa: E731
    assert extractor(f, "x") is f
    with pytest.raises(TypeError, match=r"key_by\(f\) needs a function of the element, a field name"):
        extractor(1.5, "key_by(f)")
    with pytest.raises(TypeError, match="got True"):
        extractor(True, "sum(value)")
    with pytest.raises(ValueError, match="must not be empty"):
        extractor("", "sum(value)")


# -- end to end, with the switch each way ---------------------------------------------------


def model_tumbling(raw: list[tuple[int, Any, Any]], size: int) -> dict[tuple[Any, int], Any]:
    out: dict[tuple[Any, int], Any] = {}
    for ts, k, v in raw:
        w = (k, ts - ts % size)
        out[w] = out.get(w, 0) + v
    return out


@pytest.fixture(params=["native", "pure"])
def mode(request: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    if request.param == "native":
        compiled()
        monkeypatch.delenv("STREAMLIB_PURE", raising=False)
    else:
        monkeypatch.setenv("STREAMLIB_PURE", "1")
    switch.reset()
    yield request.param
    switch.reset()


def test_the_switch_picks_the_kernels(mode: str) -> None:
    pure = PURE["update_fixed"]
    picked = switch.window_kernel("update_fixed", pure)
    assert (picked is pure) == (mode == "pure")
    for name in ("update_sessions", "SessionCore", "update_sliding", "fold_sliding", "expire_sliding"):
        assert (switch.window_kernel(name, PURE[name]) is PURE[name]) == (mode == "pure")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    raw=st.lists(st.tuples(st.integers(0, 300), st.sampled_from(["a", "b", "c"]), st.integers(-3, 3)), max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    shape=st.sampled_from(["tuple", "dict", "object"]),
    form=st.sampled_from(["lambda", "getter", "field"]),
)
def test_tumbling_sum_end_to_end(mode: str, raw: list[Any], cuts: list[int], shape: str, form: str) -> None:
    raw = sorted(raw)  # in order: nothing is late
    elements = [as_shape(r, shape) for r in raw]
    ts_of, key_of, value_of = extractors(shape, form)
    if form == "field" and shape != "tuple":
        ts_of, key_of, value_of = "ts", "key", "value"  # type: ignore[assignment]

    async def go() -> Any:
        src = source_from_chunks(split_at(elements, cuts))
        return await src.with_timestamps(ts_of).key_by(key_of).window(TumblingWindows(50)).sum(value_of).run_with(
            Sink.collect()
        )

    results = asyncio.run(go())
    assert {(r.key, r.start): r.value for r in results} == model_tumbling(raw, 50)
    assert all(r.end == r.start + 50 for r in results)


async def test_hopping_and_count_windows_with_fields(mode: str) -> None:
    events: list[dict[str, Any]] = [{"ts": i * 7, "user": f"u{i % 3}", "amount": i} for i in range(40)]
    hop = await (
        Source.from_iterable(events)
        .with_timestamps("ts")
        .key_by("user")
        .window(HoppingWindows(30, 10))
        .mean("amount")
        .run_with(Sink.collect())
    )
    want: dict[tuple[str, int], list[int]] = {}
    for e in events:
        for s in range(e["ts"] - e["ts"] % 10 - 20, e["ts"] + 1, 10):
            if s <= e["ts"] < s + 30:
                want.setdefault((e["user"], s), []).append(e["amount"])
    assert {(r.key, r.start): r.value for r in hop} == {w: sum(v) / len(v) for w, v in want.items()}
    counted = await Source.from_iterable(events).key_by("user").window(CountWindows(4)).max("amount").run_with(
        Sink.collect()
    )
    assert sorted((r.key, r.start, r.value) for r in counted) == sorted(
        (u, i * 4, max(am[i * 4 : i * 4 + 4]))
        for u in ("u0", "u1", "u2")
        for am in [[e["amount"] for e in events if e["user"] == u]]
        for i in range((len(am) + 3) // 4)
    )


async def test_a_failing_key_field_fails_the_stream(mode: str) -> None:
    events = [{"ts": 1, "user": "a"}, {"ts": 2}]
    with pytest.raises(KeyError) as info:
        await Source.from_iterable(events).with_timestamps("ts").key_by("user").window(TumblingWindows(10)).count().run_with(
            Sink.collect()
        )
    assert "in stage 'window.tumbling.count'" in info.value.__notes__


def _with_kernels(pure: bool) -> None:
    if pure:
        os.environ["STREAMLIB_PURE"] = "1"
    else:
        os.environ.pop("STREAMLIB_PURE", None)
    switch.reset()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["a", "b", "c", 7]), st.integers(-3, 3)), max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=12),
    kind=st.sampled_from(["session", "sliding"]),
    length=st.integers(1, 40),
    bound=st.integers(0, 60),
    lateness=st.integers(0, 20),
    emit=st.sampled_from(["final", "updates"]),
    agg=st.sampled_from(["count", "sum", "mean", "collect", "max"]),
    checkpoint_every=st.one_of(st.none(), st.integers(1, 20)),
)
def test_session_and_sliding_operators_give_the_same_output_with_either_kernels(
    raw: list[Any],
    cuts: list[int],
    kind: str,
    length: int,
    bound: int,
    lateness: int,
    emit: Any,
    agg: str,
    checkpoint_every: int | None,
) -> None:
    """Whole window operators (late records, updates, checkpoints to a store): the same items in the same order."""
    compiled()

    def run(pure: bool) -> Any:
        _with_kernels(pure)
        store = MemoryStore() if checkpoint_every is not None else None

        async def go() -> Any:
            src: Any = source_from_chunks(split_at(raw, cuts))
            if store is not None:
                src = src.checkpointed(store, every=checkpoint_every)
            windowed = (
                src.with_timestamps(0, max_out_of_orderness=bound)
                .key_by(1)
                .window(
                    SessionWindows(length) if kind == "session" else SlidingWindows(length),
                    store=store, allowed_lateness=lateness, late="emit", emit=emit,
                )
            )  # fmt: skip
            blueprint = windowed.count() if agg == "count" else getattr(windowed, agg)(2)
            return await blueprint.to_mat(Sink.collect(), Keep.right).run()

        out = asyncio.run(go())
        rows = None if store is None else sorted((t, sorted(store.table(t).scan())) for t in store.table_names())
        return [typed(msgspec_fields(x)) for x in out], rows

    before = os.environ.get("STREAMLIB_PURE")
    try:
        assert run(False) == run(True)
    finally:
        if before is None:
            os.environ.pop("STREAMLIB_PURE", None)
        else:
            os.environ["STREAMLIB_PURE"] = before
        switch.reset()


def msgspec_fields(x: Any) -> Any:
    """A result or late record as (type name, its fields), so ``typed`` sees the value types."""
    return (type(x).__name__, [getattr(x, f) for f in x.__struct_fields__])
