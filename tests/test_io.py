"""Files, JSON-lines and CSV framing with bad-line routing, publisher and subscriber adapters."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlib import (
    BadRecord,
    BadRecordError,
    FileSink,
    FileSource,
    Framing,
    Keep,
    Sink,
    Source,
)
from streamlib.testing import source_from_chunks, split_at


class User(msgspec.Struct):
    id: int
    name: str
    score: float = 0.0


# -- files ----------------------------------------------------------------------------------


text_lines = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text_lines, st.integers(1, 64))
async def test_lines_round_trip(tmp_path: Path, lines: list[str], block: int) -> None:
    path = tmp_path / "roundtrip.txt"
    written = await Source.from_iterable(lines).run_with(FileSink.lines(path))
    assert written == len(lines)
    assert path.read_text(encoding="utf-8") == "".join(x + "\n" for x in lines)
    got = await FileSource.lines(path, block_bytes=block).run_with(Sink.collect())
    assert got == lines


async def test_lines_handles_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"a\r\nb\r\n\r\nlast")
    assert await FileSource.lines(path).run_with(Sink.collect()) == ["a", "b", "", "last"]


async def test_big_file_in_chunks_and_append(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    n = 50_000
    await Source.from_iterable(range(n)).map(str).run_with(FileSink.lines(path))
    await Source.from_iterable(["tail"]).run_with(FileSink.lines(path, append=True))
    got = await FileSource.lines(path).run_with(Sink.collect())
    assert got == [str(i) for i in range(n)] + ["tail"]


async def test_missing_file_and_bad_element_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        await FileSource.lines(tmp_path / "nope.txt").run_with(Sink.collect())
    with pytest.raises(TypeError, match=r"line 3 is int 7, expected str"):
        await Source.from_iterable(["a", "b", 7]).run_with(FileSink.lines(tmp_path / "out.txt"))


async def test_undecodable_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(UnicodeDecodeError) as info:
        await FileSource.lines(path).run_with(Sink.collect())
    assert any("latin.txt" in note for note in info.value.__notes__)


async def test_downstream_cancel_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "many.txt"
    path.write_text("".join(f"{i}\n" for i in range(100_000)))
    assert await FileSource.lines(path).take(3).run_with(Sink.collect()) == ["0", "1", "2"]


async def test_upstream_failure_fails_the_sink_future(tmp_path: Path) -> None:
    path = tmp_path / "partial.txt"
    done = Source.from_iterable(["a", "b", "0"]).map(lambda s: s if s != "0" else str(1 // 0)).run_with(
        FileSink.lines(path)
    )
    with pytest.raises(ZeroDivisionError):
        await done
    assert path.read_text() == "a\nb\n"


# -- JSON lines ------------------------------------------------------------------------------


def user_lines(users: list[tuple[int, str]], bad: set[int]) -> list[str]:
    out = []
    for i, (uid, name) in enumerate(users):
        if i in bad:
            out.append('{"id": "not a number", "name": 1}' if i % 2 else '{"id": 1,')
        else:
            out.append(msgspec.json.encode(User(uid, name)).decode())
    return out


users_st = st.lists(st.tuples(st.integers(0, 10**6), st.text(max_size=8)), max_size=40)


@settings(max_examples=30, deadline=None)
@given(users_st, st.data())
async def test_json_lines_skip_and_dead_letter_are_the_model(users: list[tuple[int, str]], data: Any) -> None:
    bad = data.draw(st.sets(st.integers(0, max(len(users) - 1, 0)), max_size=5)) if users else set()
    lines = user_lines(users, bad)
    cuts = data.draw(st.lists(st.integers(0, len(lines)), max_size=5))
    expected = [User(uid, name) for i, (uid, name) in enumerate(users) if i not in bad]

    skipped = await source_from_chunks(split_at(lines, cuts)).via(Framing.json_lines(User, on_error="skip")).run_with(
        Sink.collect()
    )
    assert skipped == expected

    dead: list[BadRecord] = []
    flow = Framing.json_lines(User, on_error=Sink.foreach(dead.append), origin="users.jsonl")
    got = await source_from_chunks(split_at(lines, cuts)).via(flow).run_with(Sink.collect())
    assert got == expected
    assert [d.line_number for d in dead] == sorted(i + 1 for i in bad)
    assert all(d.origin == "users.jsonl" and d.line == lines[d.line_number - 1] for d in dead)


async def test_json_lines_fail_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text('{"id": 1, "name": "a"}\n\n{"id": "x", "name": "b"}\n{"id": 3, "name": "c"}\n')
    got: list[User] = []
    done = FileSource.json_lines(path, User).to_mat(Sink.foreach(got.append), Keep.right).run()
    with pytest.raises(BadRecordError, match=r"users\.jsonl line 3: Expected `int`, got `str` - at `\$\.id`") as info:
        await done
    assert info.value.record.line_number == 3
    assert got == [User(1, "a")]  # what came before the bad line was delivered


async def test_json_lines_skip_logs_file_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": 1, "name": "a"}\nnot json\n')
    with caplog.at_level(logging.WARNING, logger="streamlib.io"):
        got = await FileSource.json_lines(path, User, on_error="skip").run_with(Sink.collect())
    assert got == [User(1, "a")]
    assert "events.jsonl line 2 skipped" in caplog.text


async def test_dead_letter_sink_value_is_materialized(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": 1, "name": "a"}\n{"id": 2}\n[1, 2]\n')
    dead_future, good = FileSource.json_lines(path, User, on_error=Sink.collect()).to_mat(
        Sink.collect(), Keep.both
    ).run()
    assert await good == [User(1, "a")]
    dead = await dead_future
    assert [(d.line_number, d.error) for d in dead] == [
        (2, "Object missing required field `name`"),
        (3, "Expected `object`, got `array`"),
    ]


async def test_json_round_trip_through_files(tmp_path: Path) -> None:
    users = [User(i, f"u{i}", i / 2) for i in range(100)]
    path = tmp_path / "out.jsonl"
    await Source.from_iterable(users).via(Framing.to_json_lines()).run_with(FileSink.lines(path))
    assert await FileSource.json_lines(path, User).run_with(Sink.collect()) == users
    untyped = await FileSource.json_lines(path).take(1).run_with(Sink.collect())
    assert untyped == [{"id": 0, "name": "u0", "score": 0.0}]


def test_on_error_is_checked() -> None:
    with pytest.raises(ValueError, match="on_error must be"):
        Framing.json_lines(User, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_error must be"):
        Framing.json_lines(User, on_error=Source.empty())  # type: ignore[arg-type]


# -- CSV -----------------------------------------------------------------------------------------


async def test_csv_typed_with_header_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text('id,name,score\n1,ann,2.5\n2,"b, with comma",\nx,bad,1\n3,short\n4,"open\n5,eve,1e3\n')
    dead: list[BadRecord] = []
    got = await FileSource.csv(path, User, on_error=Sink.foreach(dead.append)).run_with(Sink.collect())
    assert got == [User(1, "ann", 2.5), User(2, "b, with comma", 0.0), User(5, "eve", 1000.0)]
    assert [(d.line_number, d.error) for d in dead] == [
        (4, "Expected `int`, got `str` - at `$.id`"),
        (5, "expected 3 fields, got 2"),
        (6, "unexpected end of data"),
    ]
    assert all(d.origin.endswith("users.csv") for d in dead)


async def test_csv_fail_mode_and_untyped_rows(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("a;b\n1;2\n3\n")
    flow_rows = await FileSource.csv(path, header=False, delimiter=";", on_error="skip").run_with(Sink.collect())
    assert flow_rows == [["a", "b"], ["1", "2"], ["3"]]
    dicts = await FileSource.lines(path).take(2).via(Framing.csv(delimiter=";")).run_with(Sink.collect())
    assert dicts == [{"a": "1", "b": "2"}]
    with pytest.raises(BadRecordError, match=r"plain\.csv line 3: expected 2 fields, got 1"):
        await FileSource.csv(path, delimiter=";").run_with(Sink.collect())


async def test_csv_round_trip_with_named_columns(tmp_path: Path) -> None:
    users = [User(i, f"name {i}, \"quoted\"", i * 1.5) for i in range(20)]
    path = tmp_path / "users.csv"
    await Source.from_iterable(users).via(Framing.to_csv(User)).run_with(FileSink.lines(path))
    assert path.read_text().splitlines()[0] == "id,name,score"
    assert await FileSource.csv(path, User).run_with(Sink.collect()) == users
    no_header = await Source.from_iterable([{"id": 1, "name": "x"}]).via(
        Framing.to_csv(["id", "name"], header=False)
    ).run_with(Sink.collect())
    assert no_header == ["1,x"]
    assert await Source.from_iterable(["7,z,0.5"]).via(Framing.csv(User, header=False)).run_with(
        Sink.collect()
    ) == [User(7, "z", 0.5)]


# -- publishers and subscribers -------------------------------------------------------------------


async def test_from_publisher_push_style_backpressure_and_cancel() -> None:
    emitted: list[int] = []
    stopped = asyncio.Event()

    async def publish(emit: Any) -> None:
        try:
            for i in range(1_000_000):
                await emit(i)
                emitted.append(i)
        finally:
            stopped.set()

    got = await Source.from_publisher(publish).take(5).run_with(Sink.collect())
    assert got == [0, 1, 2, 3, 4]
    await stopped.wait()
    assert len(emitted) < 10_000  # emit waited for downstream, then raised on cancellation


async def test_from_publisher_async_iterable_and_factory_and_failure() -> None:
    async def gen() -> Any:
        for i in range(3):
            yield i

    assert await Source.from_publisher(gen).run_with(Sink.collect()) == [0, 1, 2]
    assert await Source.from_publisher(gen()).run_with(Sink.collect()) == [0, 1, 2]

    async def broken(emit: Any) -> None:
        await emit("a")
        raise ConnectionError("feed lost")

    with pytest.raises(ConnectionError, match="feed lost"):
        await Source.from_publisher(broken).run_with(Sink.collect())
    with pytest.raises(TypeError, match="from_publisher needs"):
        Source.from_publisher(42)


async def test_to_subscriber_object_and_callable() -> None:
    calls: list[Any] = []

    class Subscriber:
        async def on_next(self, x: int) -> None:
            await asyncio.sleep(0)
            calls.append(x)

        def on_complete(self) -> None:
            calls.append("done")

        async def on_error(self, e: BaseException) -> None:
            calls.append(type(e).__name__)

    await Source.from_iterable([1, 2, 3]).run_with(Sink.to_subscriber(Subscriber()))
    assert calls == [1, 2, 3, "done"]
    calls.clear()
    with pytest.raises(ZeroDivisionError):
        await Source.from_iterable([1, 0]).map(lambda x: 1 // x).run_with(Sink.to_subscriber(Subscriber()))
    assert calls == [1, "ZeroDivisionError"]

    seen: list[int] = []
    await Source.from_iterable(range(5)).run_with(Sink.to_subscriber(seen.append))
    assert seen == list(range(5))
    with pytest.raises(TypeError, match="to_subscriber needs"):
        Sink.to_subscriber(3)


async def test_subscriber_failure_cancels_upstream() -> None:
    async def on_next(x: int) -> None:
        if x == 3:
            raise RuntimeError("subscriber broke")

    with pytest.raises(RuntimeError, match="subscriber broke"):
        await Source.repeat(3).run_with(Sink.to_subscriber(on_next))
