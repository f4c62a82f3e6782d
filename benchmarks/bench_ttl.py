"""State TTL: store rows over an endless stream of ever-new keys, with and without ``ttl``.

Element ``i`` has event time ``i`` ms and key ``u{i // touches}`` (each key is
seen ``touches`` times, then never again, like users who do not come back).
``key_by(...).stateful_map(count)`` keeps a count per key behind
``checkpointed(RocksDBStore, every=...)``; one run has ``ttl=--ttl-ms`` (event
time), the other none. Every ``--sample`` elements the script counts the rows of
the operator's table (committed and pending). Without TTL the rows grow with the
keys ever seen; with TTL they stay flat at about two rows (value and TTL timer)
per key seen within the last ``ttl`` of event time, plus two. The two runs'
throughputs are reported side by side.

    python benchmarks/bench_ttl.py [--events 1000000] [--ttl-ms 10000] [--json]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Result, parser, report  # noqa: E402

from streamlib import KeyState, RocksDBStore, Sink, Source  # noqa: E402


def count(i: int, state: KeyState[int, int]) -> int:
    state.set(state.get(0) + 1)
    return i


async def run(events: int, touches: int, ttl_ms: int | None, every: int, sample: int) -> tuple[float, list[int]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = RocksDBStore(os.path.join(tmp, "db"), sync=False)
        rows: list[int] = []

        def observe(i: int) -> None:
            if i % sample == sample - 1:
                rows.append(store.table("counts").count())

        keyed = (
            Source.from_iterable(range(events))
            .checkpointed(store, every=every)
            .with_timestamps(lambda i: i)
            .key_by(lambda i: i // touches)
        )
        if ttl_ms is None:
            flow = keyed.stateful_map(count, name="counts")
        else:
            flow = keyed.stateful_map(count, ttl=ttl_ms, name="counts")
        start = time.perf_counter()
        await flow.run_with(Sink.foreach(observe))
        seconds = time.perf_counter() - start
        store.close()
        return seconds, rows


async def main() -> None:
    p = parser("store rows over ever-new keys, with and without state TTL")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--touches", type=int, default=4, help="elements per key")
    p.add_argument("--ttl-ms", type=int, default=10_000, help="TTL in event-time ms (one element per ms)")
    p.add_argument("--every", type=int, default=20_000, help="checkpoint every N elements")
    p.add_argument("--sample", type=int, default=100_000, help="count store rows every N elements")
    args = p.parse_args()
    with_ttl = await run(args.events, args.touches, args.ttl_ms, args.every, args.sample)
    without = await run(args.events, args.touches, None, args.every, args.sample)
    if not args.json:
        print(f"\nstore rows of the stateful_map table, {args.touches} elements per key, "
              f"ttl {args.ttl_ms} ms of event time, checkpoint every {args.every:,}")
        print(f"{'elements':>12}  {'ttl':>10}  {'no ttl':>10}")
        for k, (a, b) in enumerate(zip(with_ttl[1], without[1])):
            print(f"{(k + 1) * args.sample:>12,}  {a:>10,}  {b:>10,}")
    extra: dict[str, Any] = {}
    rows = [
        Result("stateful_map ttl", args.events, with_ttl[0],
               {**extra, "final rows": with_ttl[1][-1] if with_ttl[1] else 0, "max rows": max(with_ttl[1], default=0)}),
        Result("stateful_map no ttl", args.events, without[0],
               {"final rows": without[1][-1] if without[1] else 0, "max rows": max(without[1], default=0)}),
    ]
    report("state TTL over ever-new keys (RocksDBStore, checkpointed)", rows, baseline_name="stateful_map no ttl",
           as_json=args.json)


if __name__ == "__main__":
    asyncio.run(main())
