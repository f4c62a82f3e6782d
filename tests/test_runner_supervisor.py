"""The worker supervisor of ``streamlib run --workers N`` with stand-in worker processes (no Kafka)."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from pathlib import Path

import pytest

from streamlib import RunSettings
from streamlib._runner._workers import Supervisor


class Scripted(Supervisor):
    """A supervisor whose workers run ``script`` (with the worker index as argument) instead of an app."""

    def __init__(self, script: str, workers: int, **settings: object) -> None:
        super().__init__("unused:app", [], RunSettings(**settings).validated(), workers)  # type: ignore[arg-type]
        self.script = script

    def command(self, index: int) -> list[str]:
        return [sys.executable, "-c", self.script, str(index)]


async def until(predicate: object, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.02)


async def test_a_crashing_worker_is_restarted_with_doubling_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamlib.runner")
    sup = Scripted("import sys; sys.exit(3)", 1, restart_backoff=0.05, restart_backoff_max=0.2)
    run = asyncio.ensure_future(sup.run())

    def crashes() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == "worker_crashed"]

    await until(lambda: len(crashes()) >= 5)
    sup.on_signal(signal.SIGTERM)
    assert await run == 0  # nothing was running when the stop came: nothing left to commit
    assert all(r.code == 3 for r in crashes())  # type: ignore[attr-defined]
    waits = [float(re.search(r"again in ([\d.]+)s", r.getMessage()).group(1)) for r in crashes()[:5]]  # type: ignore[union-attr]
    assert waits == [0.1, 0.1, 0.2, 0.2, 0.2]  # 0.05, 0.1, 0.2, 0.2, 0.2 rounded to one decimal


WAITS_FOR_SIGTERM = """
import pathlib, signal, sys, time
index = sys.argv[1]
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(int(pathlib.Path(DIR, "code").read_text())))
pathlib.Path(DIR, f"ready-{index}").write_text("")
while True:
    time.sleep(0.02)
"""


@pytest.mark.parametrize("code,expected", [(0, 0), (1, 1), (124, 124)])
async def test_a_signal_is_forwarded_to_every_worker_and_their_exits_decide_the_code(
    tmp_path: Path, code: int, expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamlib.runner")
    (tmp_path / "code").write_text(str(code))
    sup = Scripted(f"DIR = {str(tmp_path)!r}\n" + WAITS_FOR_SIGTERM, 3)
    run = asyncio.ensure_future(sup.run())
    await until(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(3)))
    sup.on_signal(signal.SIGTERM)
    assert await run == expected
    exits = sorted((r.worker_index, r.code) for r in caplog.records  # type: ignore[attr-defined]
                   if getattr(r, "event", None) == "worker_exited")
    assert exits == [(0, code), (1, code), (2, code)]
    assert not [r for r in caplog.records if getattr(r, "event", None) == "worker_crashed"]


async def test_a_second_signal_is_forwarded_and_gives_128_plus_the_signal(tmp_path: Path) -> None:
    script = f"DIR = {str(tmp_path)!r}\n" + """
import pathlib, signal, sys, time
seen = []
def on_term(s, f):
    seen.append(s)
    pathlib.Path(DIR, f"term-{len(seen)}-" + sys.argv[1]).write_text("")
    if len(seen) == 2:
        sys.exit(128 + s)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path(DIR, "ready-" + sys.argv[1]).write_text("")
while True:
    time.sleep(0.02)
"""
    sup = Scripted(script, 2)
    run = asyncio.ensure_future(sup.run())
    await until(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(2)))
    sup.on_signal(signal.SIGTERM)
    # The second one only once each worker handled the first (two pending signals would merge into one).
    await until(lambda: all((tmp_path / f"term-1-{i}").exists() for i in range(2)))
    sup.on_signal(signal.SIGTERM)
    assert await run == 128 + signal.SIGTERM
    assert sorted(sup.codes.values()) == [128 + signal.SIGTERM] * 2
