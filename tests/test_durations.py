"""Event-time durations: int milliseconds or timedelta everywhere, one check and one message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from streamlib import HoppingWindows, SessionWindows, SlidingWindows, Sink, Source, TumblingWindows
from streamlib.kafka import RecordTimeWatermarks

# Every event-time duration parameter of the public API: (what errors call it, a builder taking the value).
EVENT_TIME_PARAMETERS: list[tuple[str, Callable[[Any], Any]]] = [
    ("TumblingWindows(size)", lambda v: TumblingWindows(v)),
    ("TumblingWindows(offset)", lambda v: TumblingWindows(60_000, offset=v)),
    ("HoppingWindows(size)", lambda v: HoppingWindows(v, 1)),
    ("HoppingWindows(step)", lambda v: HoppingWindows(60_000, v)),
    ("HoppingWindows(offset)", lambda v: HoppingWindows(60_000, 60_000, offset=v)),
    ("SlidingWindows(size)", lambda v: SlidingWindows(v)),
    ("SessionWindows(gap)", lambda v: SessionWindows(v)),
    ("with_timestamps(max_out_of_orderness)", lambda v: Source.single(0).with_timestamps(0, max_out_of_orderness=v)),
    (
        "window(allowed_lateness)",
        lambda v: Source.single(0).with_timestamps(0).key_by(0).window(TumblingWindows(60_000), allowed_lateness=v),
    ),
    ("dedupe(within)", lambda v: Source.single(0).dedupe(lambda x: x, within=v)),
    ("RecordTimeWatermarks(out_of_orderness)", lambda v: RecordTimeWatermarks(out_of_orderness=v)),
]
NAMES = [name for name, _ in EVENT_TIME_PARAMETERS]


@pytest.mark.parametrize(("name", "build"), EVENT_TIME_PARAMETERS, ids=NAMES)
@pytest.mark.parametrize("value", [2.0, 2.5, "2s", None, True])
def test_an_event_time_duration_refuses_anything_but_int_ms_or_timedelta(
    name: str, build: Callable[[Any], Any], value: Any
) -> None:
    with pytest.raises(TypeError) as info:
        build(value)
    assert str(info.value).startswith(
        f"{name} is an event-time duration: int milliseconds or datetime.timedelta, got {value!r}"
    )


@pytest.mark.parametrize(("name", "build"), EVENT_TIME_PARAMETERS, ids=NAMES)
def test_an_event_time_duration_refuses_a_negative_value(name: str, build: Callable[[Any], Any]) -> None:
    for value in (-1, timedelta(milliseconds=-1)):
        with pytest.raises(ValueError, match=rf"^{name.replace('(', '[(]').replace(')', '[)]')} must be"):
            build(value)


def test_a_timedelta_is_the_same_duration_as_its_int_milliseconds() -> None:
    assert RecordTimeWatermarks(out_of_orderness=timedelta(seconds=5)) == RecordTimeWatermarks(out_of_orderness=5000)
    assert RecordTimeWatermarks(out_of_orderness=5000).out_of_orderness == 5000
    assert TumblingWindows(timedelta(minutes=1)) == TumblingWindows(60_000)
    assert SessionWindows(timedelta(milliseconds=250)) == SessionWindows(250)


def test_record_time_watermarks_idle_timeout_is_processing_time_seconds() -> None:
    assert RecordTimeWatermarks(idle_timeout=timedelta(milliseconds=1500)) == RecordTimeWatermarks(idle_timeout=1.5)
    with pytest.raises(ValueError, match=r"RecordTimeWatermarks\(idle_timeout\) must be positive"):
        RecordTimeWatermarks(idle_timeout=0)
    with pytest.raises(TypeError, match=r"RecordTimeWatermarks\(idle_timeout\) is a processing-time duration"):
        RecordTimeWatermarks(idle_timeout="5s")  # type: ignore[arg-type]
