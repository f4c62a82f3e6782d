"""Supervision deciders, recover and recover_with_retries, against plain-list models."""

from __future__ import annotations

import logging
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Flow, Keep, Sink, Source, Supervision
from streamlib.testing import source_from_chunks, split_at

SETTINGS = settings(max_examples=40, deadline=None)


class Boom(Exception):
    pass


def failing(bad: set[int], f: Any) -> Any:
    """``f`` that raises Boom for the elements in ``bad``."""

    def g(*args: Any) -> Any:
        x = args[-1]
        if x in bad:
            raise Boom(x)
        return f(*args)

    return g


def data() -> Any:
    return st.lists(st.integers(0, 50), max_size=60).flatmap(
        lambda xs: st.tuples(
            st.just(xs),
            st.lists(st.integers(0, len(xs)), max_size=6),
            st.sets(st.integers(0, 50), max_size=10),
        )
    )


# -- resume: the list model minus the failing elements ---------------------------------


@SETTINGS
@given(data())
async def test_resume_map_is_model_minus_failures(case: Any) -> None:
    xs, cuts, bad = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .map(failing(bad, lambda x: x * 10))
        .with_supervision(Supervision.resume)
        .map(lambda y: y + 1)
        .run_with(Sink.collect())
    )
    assert got == [x * 10 + 1 for x in xs if x not in bad]


@SETTINGS
@given(data())
async def test_resume_filter_map_concat_collect(case: Any) -> None:
    xs, cuts, bad = case
    src = source_from_chunks(split_at(xs, cuts))
    got_filter = await src.filter(failing(bad, lambda x: x % 3)).with_supervision("resume").run_with(Sink.collect())
    assert got_filter == [x for x in xs if x not in bad and x % 3]
    got_not = await src.filter_not(failing(bad, lambda x: x % 3)).with_supervision("resume").run_with(Sink.collect())
    assert got_not == [x for x in xs if x not in bad and not x % 3]
    got_concat = await src.map_concat(failing(bad, lambda x: [x] * (x % 3))).with_supervision(
        Supervision.resume
    ).run_with(Sink.collect())
    assert got_concat == [y for x in xs if x not in bad for y in [x] * (x % 3)]
    got_collect = await src.collect(failing(bad, lambda x: x if x % 2 else None)).with_supervision(
        Supervision.resume
    ).run_with(Sink.collect())
    assert got_collect == [x for x in xs if x not in bad and x % 2]


@SETTINGS
@given(data())
async def test_resume_scan_and_fold_skip_failures(case: Any) -> None:
    xs, cuts, bad = case
    src = source_from_chunks(split_at(xs, cuts))
    add = failing(bad, operator.add)
    got_scan = await src.scan(0, add).with_supervision(Supervision.resume).run_with(Sink.collect())
    acc, model = 0, [0]
    for x in xs:
        if x not in bad:
            acc += x
            model.append(acc)
    assert got_scan == model
    got_fold = await src.fold(0, add).with_supervision(Supervision.resume).run_with(Sink.collect())
    assert got_fold == [sum(x for x in xs if x not in bad)]


# -- restart: state goes back to zero -----------------------------------------------------


@SETTINGS
@given(data())
async def test_restart_resets_scan_and_emits_zero(case: Any) -> None:
    xs, cuts, bad = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .scan(100, failing(bad, operator.add))
        .with_supervision(Supervision.restart)
        .run_with(Sink.collect())
    )
    acc, model = 100, [100]
    for x in xs:
        if x in bad:
            acc = 100
        else:
            acc += x
        model.append(acc)
    assert got == model


@SETTINGS
@given(data())
async def test_restart_resets_fold_and_reduce(case: Any) -> None:
    xs, cuts, bad = case
    src = source_from_chunks(split_at(xs, cuts))
    got_fold = await src.fold(0, failing(bad, operator.add)).with_supervision("restart").run_with(Sink.collect())
    acc = 0
    for x in xs:
        acc = 0 if x in bad else acc + x
    assert got_fold == [acc]

    red: Any = None
    for x in xs:
        if red is None:
            red = x  # the first element seeds reduce without calling f
        elif x in bad:
            red = None
        else:
            red += x
    reduced = src.reduce(failing(bad, operator.add)).with_supervision("restart").run_with(Sink.collect())
    if red is None:
        with pytest.raises(Exception, match="empty"):
            await reduced
    else:
        assert await reduced == [red]


@SETTINGS
@given(data())
async def test_restart_drop_while_drops_again(case: Any) -> None:
    xs, cuts, bad = case
    got = await (
        source_from_chunks(split_at(xs, cuts))
        .drop_while(failing(bad, lambda x: x < 25))
        .with_supervision(Supervision.restart)
        .run_with(Sink.collect())
    )
    dropping, model = True, []
    for x in xs:
        if dropping:
            if x in bad:
                continue  # dropped, and dropping starts over (it already is)
            if x < 25:
                continue
            dropping = False
        model.append(x)
    assert got == model


@SETTINGS
@given(data())
async def test_stop_keeps_elements_before_failure(case: Any) -> None:
    xs, cuts, bad = case
    got: list[int] = []
    done = source_from_chunks(split_at(xs, cuts)).map(failing(bad, lambda x: x)).with_supervision(
        Supervision.stop
    ).run_with(Sink.foreach(got.append))
    first_bad = next((i for i, x in enumerate(xs) if x in bad), None)
    if first_bad is None:
        await done
        assert got == xs
    else:
        with pytest.raises(Boom) as info:
            await done
        assert got == xs[:first_bad]
        assert "in stage 'map'" in info.value.__notes__


# -- the decider, the last stage only, logging ------------------------------------


async def test_decider_chooses_per_exception() -> None:
    def decider(e: Exception) -> Any:
        return "resume" if isinstance(e, ZeroDivisionError) else "stop"

    flow = Flow.map(lambda x: 10 // x if x != 3 else int("x")).with_supervision(decider)
    assert await Source.from_iterable([1, 0, 2]).via(flow).run_with(Sink.collect()) == [10, 5]
    with pytest.raises(ValueError):
        await Source.from_iterable([1, 0, 3]).via(flow).run_with(Sink.collect())


async def test_only_the_last_stage_is_supervised() -> None:
    src = Source.from_iterable([1, 0, 2]).map(lambda x: 10 // x).map(str).with_supervision(Supervision.resume)
    with pytest.raises(ZeroDivisionError):
        await src.run_with(Sink.collect())


async def test_resume_logs_stage_name_and_element(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamlib.supervision"):
        got = await Source.from_iterable([1, 0]).map(lambda x: 1 // x).with_supervision("resume").run_with(
            Sink.collect()
        )
    assert got == [1]
    (record,) = caplog.records
    assert "stage 'map'" in record.getMessage() and "ZeroDivisionError" in record.getMessage()
    assert "element 0" in record.getMessage()


async def test_bad_directive_is_a_clear_error() -> None:
    src = Source.single(0).map(lambda x: 1 // x).with_supervision(lambda e: "ignore")  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="decider of stage 'map' returned 'ignore'"):
        await src.run_with(Sink.collect())
    with pytest.raises(ValueError, match="unknown supervision directive"):
        Flow.map(str).with_supervision("skip")  # type: ignore[arg-type]


def test_unsupervisable_stage_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="stage 'grouped'"):
        Flow.grouped(2).with_supervision(Supervision.resume)
    with pytest.raises(TypeError, match="stage 'from_iterable'"):
        Source.from_iterable([1]).with_supervision(Supervision.resume)


async def test_take_while_resume_and_completion() -> None:
    got = await Source.from_iterable([3, 0, 4, 1, 5]).take_while(lambda x: 10 // x < 5).with_supervision(
        Supervision.resume
    ).run_with(Sink.collect())
    assert got == [3, 4]


async def test_blueprint_reused_and_describe_shows_decider() -> None:
    flow = Flow.map(lambda x: 1 // x).with_supervision(Supervision.resume)
    for _ in range(2):
        assert await Source.from_iterable([0, 1]).via(flow).run_with(Sink.collect()) == [1]
    assert "map [resume]" in flow.describe()


# -- per-run default -----------------------------------------------------------------


async def test_run_default_supervision_applies_to_stages_without_their_own() -> None:
    graph = (
        Source.from_iterable([1, 0, 2, 5])
        .map(lambda x: 10 // x)
        .filter(lambda y: 1 // (y - 2) >= 0)  # fails for 2 (from 5)
        .scan(0, operator.add)
        .to_mat(Sink.collect(), Keep.right)
    )
    assert await graph.run(supervision=Supervision.resume) == [0, 10, 15]
    with pytest.raises(ZeroDivisionError):
        await graph.run()


async def test_own_decider_wins_over_run_default() -> None:
    graph = Source.from_iterable([1, 0]).map(lambda x: 1 // x).with_supervision("stop").to_mat(
        Sink.collect(), Keep.right
    )
    with pytest.raises(ZeroDivisionError):
        await graph.run(supervision=Supervision.resume)


# -- recover ---------------------------------------------------------------------------


async def test_recover_emits_last_element_and_completes() -> None:
    got = await Source.from_iterable([2, 1, 0, 5]).map(lambda x: 2 // x).recover(lambda e: -1).run_with(
        Sink.collect()
    )
    assert got == [1, 2, -1]
    assert await Source.from_iterable([1, 2]).recover(lambda e: -1).run_with(Sink.collect()) == [1, 2]


async def test_recover_returning_none_propagates() -> None:
    src = Source.failed(KeyError("k")).recover(lambda e: None if isinstance(e, KeyError) else 0)
    with pytest.raises(KeyError):
        await src.run_with(Sink.collect())


MARK = -999


def then_fail(*xs: int) -> Source[int, None]:
    """Emits ``xs``, then fails with Boom."""
    return Source.from_iterable([*xs, MARK]).map(_raise_on(MARK))


async def test_recover_with_retries_switches_sources_until_attempts_used() -> None:
    calls: list[str] = []

    def replacement(e: Exception) -> Source[int, Any]:
        calls.append(type(e).__name__)
        return then_fail(len(calls) * 10) if len(calls) < 3 else Source.from_iterable([99])

    got = await then_fail(1).recover_with_retries(3, replacement).run_with(Sink.collect())
    assert got == [1, 10, 20, 99]
    assert calls == ["Boom", "Boom", "Boom"]

    calls.clear()
    with pytest.raises(Boom):
        await then_fail(1).recover_with_retries(2, replacement).run_with(Sink.collect())
    assert len(calls) == 2

    calls.clear()
    got = await then_fail(1).recover_with_retries(-1, replacement).run_with(Sink.collect())
    assert got == [1, 10, 20, 99]


async def test_recover_with_retries_zero_and_none() -> None:
    with pytest.raises(Boom):
        await Source.failed(Boom()).recover_with_retries(0, lambda e: Source.single(1)).run_with(Sink.collect())
    with pytest.raises(Boom):
        await Source.failed(Boom()).recover_with_retries(5, lambda e: None).run_with(Sink.collect())
    with pytest.raises(TypeError, match="must return a Source"):
        await Source.failed(Boom()).recover_with_retries(5, lambda e: [1]).run_with(Sink.collect())  # type: ignore[arg-type, return-value]


async def test_recover_with_retries_cancelled_downstream_stops_replacement() -> None:
    got = await Source.failed(Boom()).recover_with_retries(1, lambda e: Source.repeat(7)).take(3).run_with(
        Sink.collect()
    )
    assert got == [7, 7, 7]


def _raise_on(marker: int) -> Any:
    def f(x: int) -> int:
        if x == marker:
            raise Boom()
        return x

    return f


# -- map_async -------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(data(), st.booleans())
async def test_resume_map_async_drops_failed_calls(case: Any, ordered: bool) -> None:
    xs, cuts, bad = case

    async def f(x: int) -> int:
        if x in bad:
            raise Boom(x)
        return x * 2

    src = source_from_chunks(split_at(xs, cuts))
    stage = src.map_async(3, f) if ordered else src.map_async_unordered(3, f)
    got = await stage.with_supervision(Supervision.resume).run_with(Sink.collect())
    model = [x * 2 for x in xs if x not in bad]
    assert (got if ordered else sorted(got)) == (model if ordered else sorted(model))


async def test_map_async_stop_and_run_default() -> None:
    async def f(x: int) -> int:
        return 10 // x

    with pytest.raises(ZeroDivisionError):
        await Source.from_iterable([1, 0]).map_async(2, f).with_supervision("stop").run_with(Sink.collect())
    graph = Source.from_iterable([5, 0, 2]).map_async(2, f).to_mat(Sink.collect(), Keep.right)
    assert await graph.run(supervision="resume") == [2, 5]
