"""Recovery: a checkpointed pipeline stopped anywhere resumes and gives the uninterrupted results.

* In-process: every window kind, both stores, a failure injected at a random
  element; the rerun resumes from the last checkpoint (hypothesis).
* Out of process: ``tests/_recovery_job.py`` killed with SIGKILL between two
  checkpoints (or cancelled cleanly), then restarted over the same directory.

Output is at-least-once: results emitted after the last checkpoint come again
after the restart, identical, so the runs are compared as sets of results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import (
    Checkpoint,
    CountWindows,
    HoppingWindows,
    Keep,
    MemoryStore,
    RocksDBStore,
    SessionWindows,
    Sink,
    SlidingWindows,
    Source,
    TumblingWindows,
)
from streamlib.testing import VirtualClock

JOB = Path(__file__).with_name("_recovery_job.py")

assigners = st.one_of(
    st.builds(TumblingWindows, st.integers(1, 60)),
    st.builds(HoppingWindows, st.just(40), st.sampled_from([10, 20, 40])),
    st.builds(SlidingWindows, st.integers(1, 50)),
    st.builds(SessionWindows, st.integers(1, 30)),
    st.builds(CountWindows, st.integers(1, 5)),
)


@st.composite
def _events(draw: Any) -> tuple[list[tuple[str, int, int]], int]:
    n = draw(st.integers(0, 80))
    bound = draw(st.integers(0, 30))
    ts = sorted(draw(st.lists(st.integers(0, 600), min_size=n, max_size=n)))
    delays = draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    events = [(draw(st.sampled_from("abc")), t, i) for i, t in enumerate(ts)]
    order = sorted(range(n), key=lambda i: (ts[i] + delays[i], i))
    return [events[i] for i in order], bound


@settings(max_examples=200, deadline=None)
@given(
    data=_events(),
    assigner=assigners,
    every=st.integers(1, 30),
    fail_at=st.integers(0, 90),
    kind=st.sampled_from(["memory", "rocksdb"]),
    max_chunk=st.sampled_from([1, 3, 7, 1024]),
)
async def test_windows_resume_after_a_failure_with_the_same_results(
    data: tuple[list[tuple[str, int, int]], int], assigner: Any, every: int, fail_at: int, kind: str, max_chunk: int
) -> None:
    events, bound = data
    with tempfile.TemporaryDirectory() as tmp:

        def blueprint(store: Any, armed: bool) -> Any:
            def maybe_fail(e: tuple[str, int, int]) -> tuple[str, int, int]:
                if armed and e[2] == fail_at:
                    raise RuntimeError("crash")
                return e

            return (
                Source.from_iterable(events)
                .checkpointed(store, every=every)
                .map(maybe_fail)
                .with_timestamps(lambda e: e[1], max_out_of_orderness=bound)
                .key_by(lambda e: e[0])
                .window(assigner)
                .collect(lambda e: e[2])
            )

        def as_set(results: list[Any]) -> set[tuple[Any, ...]]:
            return {(r.key, r.start, r.end, tuple(sorted(r.value))) for r in results}

        expected = as_set(await blueprint(MemoryStore(), False).run_with(Sink.collect()))

        store: Any = MemoryStore() if kind == "memory" else RocksDBStore(os.path.join(tmp, "db"))
        out: list[Any] = []
        first = blueprint(store, True).to_mat(Sink.foreach(out.append), lambda a, b: b).run(max_chunk=max_chunk)
        if fail_at < len(events):
            with pytest.raises(RuntimeError, match="crash"):
                await first
        else:
            await first
        await blueprint(store, False).to_mat(Sink.foreach(out.append), lambda a, b: b).run(max_chunk=max_chunk)
        assert as_set(out) == expected
        store.close()


async def test_checkpoints_by_processing_time_interval() -> None:
    clock = VirtualClock()
    store = MemoryStore()
    queue, done = (
        Source.queue(10)
        .checkpointed(store, interval=timedelta(seconds=5), replayable=False)
        .key_by(lambda x: x % 2)
        .stateful_map(lambda x, state: state.set((state.get(0) or 0) + x))
        .to_mat(Sink.ignore(), Keep.both)
        .run(clock=clock)
    )
    await queue.offer(1)
    await clock.advance(4)
    await queue.offer(2)
    assert store.last_checkpoint() is None
    await clock.advance(1)
    await queue.offer(3)  # the first chunk 5 s after the start ends with a barrier
    await clock.advance(0)
    assert store.last_checkpoint() == Checkpoint(1, {"position:checkpointed": 3})
    queue.complete()
    await clock.run(done)
    assert store.last_checkpoint() == Checkpoint(2, {"position:checkpointed": 3})  # the final one


async def test_a_replay_shorter_than_the_checkpoint_fails_clearly() -> None:
    store = MemoryStore()
    await Source.from_iterable(range(10)).checkpointed(store, every=4).run_with(Sink.ignore())
    with pytest.raises(RuntimeError, match="must replay the same elements"):
        await Source.from_iterable(range(5)).checkpointed(store, every=4).run_with(Sink.ignore())


def test_checkpointed_arguments() -> None:
    with pytest.raises(ValueError, match="every= \\(elements\\) or interval="):
        Source.empty().checkpointed(MemoryStore())
    with pytest.raises(ValueError, match="positive number of elements"):
        Source.empty().checkpointed(MemoryStore(), every=0)
    with pytest.raises(TypeError, match="state store"):
        Source.empty().checkpointed("dir", every=1)  # type: ignore[arg-type]


# -- kill -9 in a subprocess -----------------------------------------------------


def _job(store: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(JOB), str(store), str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> list[str]:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stdout.splitlines()


def _results(out: Path) -> list[tuple[Any, ...]]:
    return [tuple(json.loads(line)) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[Any, ...]]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    lines = _finish(_job(tmp / "db", tmp / "out.jsonl"))
    assert lines[-1] == "finished"
    results = _results(tmp / "out.jsonl")
    assert len(results) == len(set(results)) > 1000
    return set(results)


def test_kill_9_between_checkpoints_then_restart(tmp_path: Path, uninterrupted: set[tuple[Any, ...]]) -> None:
    store, out = tmp_path / "db", tmp_path / "out.jsonl"
    proc = _job(store, out, "--pause-at", "7500")
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line.strip() == "paused":
            break
    # Checkpoints every 2 048 events: the last one before event 7 500 is at 6 144, and windows
    # closed by the chunk after it were written out but are not covered by any checkpoint.
    assert seen[-2:] == ["checkpoint 3 6144", "paused"]
    before_kill = _results(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    lines = _finish(_job(store, out))
    assert lines[0] == "checkpoint 4 8192" and lines[-1] == "finished"
    results = _results(out)
    assert set(results) == uninterrupted
    # At-least-once: what was written after the last checkpoint was written again.
    duplicates = len(results) - len(set(results))
    assert 0 < duplicates < len(before_kill)


def test_a_clean_stop_then_restart(tmp_path: Path, uninterrupted: set[tuple[Any, ...]]) -> None:
    store, out = tmp_path / "db", tmp_path / "out.jsonl"
    lines = _finish(_job(store, out, "--stop-at", "7500"))
    # Cancelling takes effect at the run's next await, some chunks after event 7 500 (how many
    # depends on when the island yields): the last checkpoint is at or after 6 144, the last
    # one before the stop, and short of the end of the stream.
    assert lines[-1] == "finished"
    last = lines[-2].split()
    assert last[0] == "checkpoint" and int(last[2]) % 2048 == 0 and 6144 <= int(last[2]) < 20_000
    partial = _results(out)
    assert set(partial) < uninterrupted  # stopping is not the end of the stream: nothing flushed early
    _finish(_job(store, out))
    assert set(_results(out)) == uninterrupted
    # A finished run leaves a checkpoint at the end: running again replays nothing new.
    _finish(_job(store, out))
    assert set(_results(out)) == uninterrupted


# -- only a replayable source can be resumed by skipping ---------------------------------------


async def _ticks() -> Any:
    yield 1


async def _publish(emit: Any) -> None:
    await emit(1)


NOT_REPLAYABLE = {
    "queue": lambda: Source.queue(10),
    "tick": lambda: Source.tick(1.0, 1),
    "from_async_iterable": lambda: Source.from_async_iterable(_ticks),
    "from_publisher": lambda: Source.from_publisher(_publish),
    "from_iterable(generator)": lambda: Source.from_iterable(x for x in range(3)),
}


@pytest.mark.parametrize("name", list(NOT_REPLAYABLE))
def test_checkpointed_after_a_source_that_does_not_replay_fails_at_build_time(name: str) -> None:
    source = NOT_REPLAYABLE[name]()
    with pytest.raises(ValueError, match="not replayable") as info:
        source.checkpointed(MemoryStore(), every=1)
    message = str(info.value)
    assert "replayable=False" in message and "Source.from_iterable" in message


def test_replayable_sources_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("a\nb\n")
    from streamlib import FileSource
    from streamlib.testing import source_from_chunks

    for source in (
        Source.from_iterable([1, 2]),
        Source.from_iterable(range(3)),
        Source.from_iterator(lambda: iter([1, 2])),
        Source.single(1),
        Source.empty(),
        Source.repeat(1).take(3),
        Source.unfold(0, lambda s: (s + 1, s) if s < 3 else None),
        FileSource.lines(path),
        source_from_chunks([[1], [2, 3]]),
    ):
        source.map(lambda x: x).checkpointed(MemoryStore(), every=1)


async def test_a_live_source_resumes_its_state_without_skipping_new_elements() -> None:
    """A queue's elements are new on every run: the state continues, nothing is skipped."""
    store = MemoryStore()

    async def run(elements: list[int]) -> list[int]:
        queue, done = (
            Source.queue(10)
            .checkpointed(store, every=1, replayable=False)
            .key_by(lambda x: "total")
            .stateful_map(lambda x, state: state.set((state.get(0) or 0) + x) or state.get())
            .to_mat(Sink.collect(), Keep.both)
            .run()
        )
        for x in elements:
            await queue.offer(x)
        queue.complete()
        return await done  # type: ignore[no-any-return]

    assert await run([1, 2, 3]) == [1, 3, 6]
    assert await run([10, 20]) == [16, 36]  # before: the first 3 new elements were dropped


async def test_a_flow_with_checkpointed_attached_to_a_live_source_fails_when_it_runs() -> None:
    from streamlib import Flow

    resumable = Flow[int, int, None]().map(lambda x: x + 1).checkpointed(MemoryStore(), every=1)
    graph = Source.queue(10).via(resumable).to(Sink.ignore())  # building is fine: the check needs the source
    with pytest.raises(ValueError, match="'queue' is not replayable"):
        graph.run()
    assert await Source.from_iterable([1, 2]).via(resumable).run_with(Sink.collect()) == [2, 3]


async def test_replayable_true_vouches_for_a_custom_source() -> None:
    store = MemoryStore()

    async def numbers() -> Any:
        for i in range(5):
            yield i

    def blueprint() -> Source[int, None]:
        return Source.from_async_iterable(numbers).checkpointed(store, every=2, replayable=True)

    assert await blueprint().run_with(Sink.collect()) == [0, 1, 2, 3, 4]
    assert await blueprint().run_with(Sink.collect()) == []  # resumed at the end
