"""Keys, window results and per-key state are typed through the DSL: mypy sees them."""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is a dev dependency; `make test` installs it")

SAMPLE = """
from dataclasses import dataclass
from streamlib import Flow, Keep, KeyState, SessionWindows, Sink, Source, TumblingWindows

@dataclass
class Click:
    user: str
    ts: int
    n: int

clicks = Source.from_iterable([Click("a", 0, 1)]).with_timestamps(lambda c: c.ts)
reveal_type(clicks.key_by(lambda c: c.user).window(TumblingWindows(1000)).sum(lambda c: c.n))
reveal_type(clicks.key_by(lambda c: c.user).window(SessionWindows(1000)).count())
reveal_type(clicks.key_by(lambda c: c.user).window(TumblingWindows(1000)).collect(lambda c: c.ts))

def total(c: Click, state: KeyState[str, int]) -> tuple[str, int]:
    n = (state.get() or 0) + c.n
    state.set(n)
    return (c.user, n)

reveal_type(clicks.key_by(lambda c: c.user).stateful_map(total))
flow: Flow[Click, Click, None] = Flow()
reveal_type(flow.with_timestamps(lambda c: c.ts).key_by(lambda c: c.user).window(TumblingWindows(10)).max(lambda c: c.n))
reveal_type(clicks.dedupe(lambda c: c.user, within=1000))
reveal_type(clicks.key_by(lambda c: c.user).window(TumblingWindows(10), late=Sink.collect(), late_mat=Keep.right).count())
reveal_type(flow.key_by(lambda c: c.user).window(SessionWindows(10), timestamp=lambda c: c.ts, late=Sink.ignore(), late_mat=Keep.both).count())
"""


def test_window_results_and_state_are_typed(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "windows_sample.py"
    sample.write_text(textwrap.dedent(SAMPLE))
    out, err, _status = api.run([str(sample), "--no-error-summary", "--hide-error-context", "--no-incremental"])
    revealed = [_plain(t) for t in re.findall(r'Revealed type is "([^"]+)"', out)]
    assert revealed == [
        "Source[WindowResult[str, int], None]",
        "Source[WindowResult[str, int], None]",
        "Source[WindowResult[str, list[int]], None]",
        "Source[tuple[str, int], None]",
        "Flow[Click, WindowResult[str, int], None]",
        "Source[Click, None]",
        "Source[WindowResult[str, int], Future[list[LateRecord]]]",
        "Flow[Click, WindowResult[str, int], tuple[None, Future[None]]]",
    ], out + err
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert errors == [], out


def _plain(type_text: str) -> str:
    """Drop module prefixes, which differ between mypy versions."""
    return re.sub(r"\b[\w.]*\.(?=[A-Za-z_]\w*\b)", "", type_text)
