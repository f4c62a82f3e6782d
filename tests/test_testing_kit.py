"""The test kit itself: usable without any test framework, and ``settle`` runs what can run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from streamlib import Keep, Sink, Source
from streamlib.testing import TestSink, VirtualClock, settle

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ["pytest", "_pytest", "pytest_asyncio", "hypothesis"]


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in isolated mode (no cwd, no PYTHON* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIB_")}
    env["STREAMLIB_PURE"] = os.environ.get("STREAMLIB_PURE", "")
    return subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(code)],
        env=env, cwd=ROOT.parent, capture_output=True, text=True, timeout=120,
    )


def test_importing_the_test_kit_loads_no_test_framework() -> None:
    proc = _run_python(f"""
        import json, sys
        import streamlib.testing
        print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_test_kit_works_where_pytest_pytest_asyncio_and_hypothesis_cannot_be_imported() -> None:
    proc = _run_python(f"""
        import sys
        for name in {FRAMEWORKS!r}:
            sys.modules[name] = None  # any import of it raises ImportError

        import asyncio, json
        from streamlib import Keep, Sink, Source
        from streamlib.testing import (
            TestSink, TestSource, VirtualClock, assert_no_running_graphs, settle, source_from_chunks, split_at,
        )
        import streamlib.testing

        async def main() -> list[object]:
            clock = VirtualClock()
            ticks = Source.tick(60.0, "t").take(3).to_mat(Sink.collect(), Keep.right).run(clock=clock)
            ticked = await clock.run(ticks)

            src, sink = TestSource.probe().map(lambda x: x * 10).to_mat(TestSink.probe(), Keep.both).run()
            await src.send_next(1)
            sink.request(1)
            probed = await sink.expect_next()
            src.send_complete()
            await sink.expect_complete()

            chunked = await source_from_chunks(split_at([1, 2, 3, 4], [1, 3])).run_with(Sink.collect())
            await settle()
            await assert_no_running_graphs()
            try:
                async for _ in streamlib.testing.no_leaked_tasks():
                    pass
                fixture = "usable"
            except RuntimeError as exc:
                fixture = str(exc)
            return [ticked, clock.now(), probed, chunked, fixture]

        print(json.dumps(asyncio.run(main())))
    """)
    assert proc.returncode == 0, proc.stderr
    ticked, now, probed, chunked, fixture = json.loads(proc.stdout)
    assert (ticked, now, probed, chunked) == (["t", "t", "t"], 120.0, 10, [1, 2, 3, 4])
    assert "pytest-asyncio" in fixture


async def test_settle_returns_once_every_task_waits() -> None:
    """A chain of tasks that each yield many times all run to where they wait on something."""
    gate = asyncio.Event()
    reached: list[int] = []

    async def worker(i: int, rounds: int) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)
        reached.append(i)
        if i < 4:
            asyncio.get_running_loop().create_task(worker(i + 1, 300))
        await gate.wait()
        reached.append(-i)

    first = asyncio.create_task(worker(0, 300))
    await settle()
    assert reached == [0, 1, 2, 3, 4]  # 1,500 yields in all, then every task waits on the gate
    gate.set()
    await settle()
    assert sorted(reached[5:]) == [-4, -3, -2, -1, 0]
    await first


async def test_settle_returns_with_tasks_still_waiting_and_does_not_move_a_virtual_clock() -> None:
    clock = VirtualClock()
    forever = asyncio.Event()
    waiter = asyncio.create_task(forever.wait())
    sleeper = asyncio.create_task(clock.sleep(5.0))
    await settle()
    assert not waiter.done() and not sleeper.done() and clock.now() == 0.0
    await clock.advance(5.0)
    assert sleeper.done()
    forever.set()
    await waiter


async def test_settle_lets_a_stream_run_up_to_its_backpressure() -> None:
    pulled: list[int] = []

    def pull(x: int) -> int:
        pulled.append(x)
        return x

    sink = Source.from_iterable(range(5)).map(pull).run_with(TestSink.probe())
    await settle()
    assert pulled == [0, 1, 2, 3, 4] and sink.demand == 0
    sink.request(5)
    assert await sink.expect_next_n(5) == [0, 1, 2, 3, 4]
    await sink.expect_complete()


async def test_virtual_clock_settle_is_the_same_settle() -> None:
    rounds: list[int] = []

    async def spin() -> None:
        for i in range(500):
            await asyncio.sleep(0)
        rounds.append(i)

    task = asyncio.create_task(spin())
    await VirtualClock().settle()
    assert task.done() and rounds == [499]
    done = Source.single(1).to_mat(Sink.collect(), Keep.right).run()
    await settle()
    assert done.done() and done.result() == [1]
