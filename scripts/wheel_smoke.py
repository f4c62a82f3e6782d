"""Check an installed streamlib: compiled modules in use, no fallback warning, a pipeline runs.

    python -I scripts/wheel_smoke.py

Run it with the interpreter of the environment the wheel was installed into,
from outside the source tree (``-I`` keeps the current directory off
``sys.path``). It exits non-zero on the first failed check and otherwise
prints a JSON summary: where streamlib was imported from, its version, the
file of each compiled module and the pipeline's results. cibuildwheel runs it
as the test of every wheel it builds; tests/test_packaging.py runs it against
the wheel that ``make wheel`` builds.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import operator
import sys
import tempfile
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.metadata import version


def main() -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import streamlib
        import streamlib._native as native
        from streamlib import RocksDBStore, Sink, Source, TumblingWindows

    fallback = [str(w.message) for w in caught if issubclass(w.category, streamlib.NativeExtensionWarning)]
    if fallback:
        print(f"FAIL: the compiled modules are not in use: {fallback[0]}", file=sys.stderr)
        return 1
    if not streamlib.native_enabled():
        print("FAIL: streamlib.native_enabled() is False", file=sys.stderr)
        return 1
    compiled = {}
    for name in native._MODULES:
        module = importlib.import_module(f"streamlib._native.{name}")
        path = getattr(module, "__file__", "") or ""
        if not path.endswith(tuple(EXTENSION_SUFFIXES)):
            print(f"FAIL: streamlib._native.{name} is not a compiled module: {path}", file=sys.stderr)
            return 1
        compiled[name] = path

    async def pipeline(state_dir: str) -> tuple[int, list[tuple[str, int, int]]]:
        total = await Source.from_iterable(range(1000)).map(lambda x: x * 3).run_with(Sink.fold(0, operator.add))
        events = [("a", 0), ("b", 3), ("a", 7), ("a", 12), ("b", 15), ("a", 31)]
        store = RocksDBStore(state_dir)
        windows = await (
            Source.from_iterable(events)
            .checkpointed(store, every=2)
            .with_timestamps(1)
            .key_by(0)
            .window(TumblingWindows(10), store=store)
            .count()
            .map(lambda r: (r.key, r.start, r.value))
            .run_with(Sink.collect())
        )
        return total, sorted(windows)

    with tempfile.TemporaryDirectory() as state_dir:
        total, windows = asyncio.run(pipeline(state_dir))
    expected = [("a", 0, 2), ("a", 10, 1), ("a", 30, 1), ("b", 0, 1), ("b", 10, 1)]
    if total != 1_498_500 or windows != expected:
        print(f"FAIL: wrong results: total={total}, windows={windows}", file=sys.stderr)
        return 1
    print(json.dumps({
        "file": streamlib.__file__,
        "version": streamlib.__version__,
        "metadata_version": version("streamlib"),
        "compiled": compiled,
        "total": total,
        "windows": windows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
