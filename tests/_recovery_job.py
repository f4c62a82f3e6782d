"""A checkpointed windowed pipeline run as a subprocess by tests/test_recovery.py.

    python tests/_recovery_job.py STORE_DIR OUT_FILE [--pause-at N | --stop-at N] [--events N]

Reads a deterministic, mildly out-of-order event sequence, numbers each key's
events with ``stateful_map`` (state in the store), sums the numbers per key in
1-second tumbling windows (state in the store) and appends each result to
OUT_FILE as a JSON line, flushed at once. Prints ``checkpoint <id> <position>``
after every committed checkpoint (one every 2 048 events: two chunks of 1 024).

``--pause-at N``: on reaching event N, print ``paused`` and block, waiting to be
killed (the test sends SIGKILL). ``--stop-at N``: on reaching event N, cancel the
run and exit normally (a clean stop without end of stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamlib import Commit, Keep, KeyState, RocksDBStore, Sink, Source, TumblingWindows  # noqa: E402

BOUND_MS = 50


def events(n: int) -> list[tuple[str, int, int]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        ts = i * 3 + rng.randint(0, BOUND_MS)  # disorder within the bound
        out.append((f"k{rng.randint(0, 19)}", ts, i))
    return out


def number(e: tuple[str, int, int], state: KeyState[str, int]) -> tuple[str, int, int]:
    n = (state.get(0) or 0) + 1
    state.set(n)
    return (e[0], e[1], n)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--pause-at", type=int)
    p.add_argument("--stop-at", type=int)
    args = p.parse_args()

    store = RocksDBStore(args.store)

    def report(c: Commit) -> None:
        print("checkpoint", c.checkpoint_id, c.meta.get("position:checkpointed"), flush=True)

    store.add_commit_hook(report)
    out = open(args.out, "a")
    running: list[Any] = []

    def hook(e: tuple[str, int, int]) -> tuple[str, int, int]:
        if e[2] == args.pause_at:
            print("paused", flush=True)
            time.sleep(3600)  # blocks the whole process until it is killed
        if e[2] == args.stop_at:
            running[0].cancel()
        return e

    def write(r: Any) -> None:
        out.write(json.dumps([r.key, r.start, r.end, r.value]) + "\n")
        out.flush()

    done, graph = (
        Source.from_iterable(events(args.events))
        .checkpointed(store, every=2_000)
        .map(hook)
        .key_by(lambda e: e[0])
        .stateful_map(number)
        .with_timestamps(lambda e: e[1], max_out_of_orderness=BOUND_MS)
        .key_by(lambda e: e[0])
        .window(TumblingWindows(1_000))
        .sum(lambda e: e[2])
        .to_mat(Sink.foreach(write), Keep.right)
        .run_graph()
    )
    running.append(graph)
    try:
        await done
    except asyncio.CancelledError:
        if args.stop_at is None:
            raise
    await graph.wait()
    print("finished", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
