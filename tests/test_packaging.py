"""What a user gets from ``pip install streamlib``: import weight, the native-module warning,
and the release artifacts (sdist, manylinux wheel) built and installed as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE_DIR = ROOT / "streamlib" / "_native"


def _run_python(code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None,
                python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in isolated mode (no cwd, no PYTHON* variables)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIB_")}
    full_env.update(env or {})
    return subprocess.run(
        [python, "-I", "-c", textwrap.dedent(code)],
        env=full_env, cwd=cwd or ROOT.parent, capture_output=True, text=True, timeout=120,
    )


# --- import weight ------------------------------------------------------------------------

HEAVY = [
    "aiokafka", "kafka", "rocksdict", "hypothesis", "pytest", "_pytest", "pytest_asyncio",
    "streamlib.kafka", "streamlib.testing", "streamlib.testing._kafka_broker", "streamlib.testing.kafka",
]


def test_a_plain_import_of_streamlib_pulls_in_no_kafka_test_or_storage_machinery() -> None:
    proc = _run_python(f"""
        import json, sys
        import streamlib
        heavy = {HEAVY!r}
        loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
        print(json.dumps(loaded))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_kafka_broker_harness_is_imported_only_when_asked_for() -> None:
    proc = _run_python("""
        import json, sys
        import streamlib.testing
        before = "streamlib.testing._kafka_broker" in sys.modules
        from streamlib.testing.kafka import KafkaBroker
        print(json.dumps([before, "streamlib.testing._kafka_broker" in sys.modules, KafkaBroker.__name__]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [False, True, "KafkaBroker"]


# --- the warning when compiled modules are missing ----------------------------------------

def _compiled_files() -> list[Path]:
    from importlib.machinery import EXTENSION_SUFFIXES

    return sorted(p for p in NATIVE_DIR.iterdir() if any(p.name.endswith(s) for s in EXTENSION_SUFFIXES))


def _copy_without(tmp_path: Path, hidden: set[str]) -> Path:
    """A copy of the package in which the compiled modules named in ``hidden`` are missing."""
    from importlib.machinery import EXTENSION_SUFFIXES

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith((".c", ".html"))}
        for name in names:
            for suffix in EXTENSION_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in hidden:
                    skip.add(name)
        return skip

    site = tmp_path / "site"
    shutil.copytree(ROOT / "streamlib", site / "streamlib", ignore=ignore)
    return site


PIPELINE = """
    import asyncio, operator, sys, warnings
    sys.path.insert(0, {site!r})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import streamlib
        from streamlib import Sink, Source, TumblingWindows
        assert streamlib.__file__.startswith({site!r}), streamlib.__file__

        async def main() -> tuple[int, list[int]]:
            total = await Source.from_iterable(range(10)).map(lambda x: x * 3).run_with(Sink.fold(0, operator.add))
            windows = await (Source.from_iterable([("k", t) for t in (0, 5, 12, 19, 25)])
                             .with_timestamps(1).key_by(0).window(TumblingWindows(10)).count()
                             .map(lambda r: r.value).run_with(Sink.collect()))
            return total, windows

        result = asyncio.run(main())
    print(repr(result))
    print(streamlib.native_enabled())
    for w in caught:
        print(w.category.__name__, "|", w.message, file=sys.stderr)
"""


def test_missing_compiled_modules_warn_once_naming_them_why_and_how_to_build(tmp_path: Path) -> None:
    if not _compiled_files():
        pytest.skip("the compiled modules are not built in this checkout")
    site = _copy_without(tmp_path, {"_chain", "_fold", "_windows"})
    proc = _run_python(PIPELINE.format(site=str(site)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["(135, [2, 2, 1])", "False"]
    warnings = [line for line in proc.stderr.splitlines() if "|" in line]
    assert len(warnings) == 1, proc.stderr
    category, message = warnings[0].split(" | ", 1)
    assert category == "NativeExtensionWarning"
    for name in ("_chain", "_fold", "_windows"):
        assert f"streamlib._native.{name}" in message
    assert "No module named" in message  # why: the import error itself
    assert "pip install" in message and "make install" in message  # how to build them
    assert "STREAMLIB_PURE=1" in message  # how to choose pure Python on purpose


def test_the_warning_names_only_the_missing_module(tmp_path: Path) -> None:
    if not _compiled_files():
        pytest.skip("the compiled modules are not built in this checkout")
    site = _copy_without(tmp_path, {"_windows"})
    proc = _run_python(PIPELINE.format(site=str(site)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["(135, [2, 2, 1])", "True"]
    warnings = [line for line in proc.stderr.splitlines() if "|" in line]
    assert len(warnings) == 1, proc.stderr
    assert "streamlib._native._windows" in warnings[0]
    assert "_chain" not in warnings[0] and "_fold" not in warnings[0]


def test_the_warning_is_shown_by_default_filters(tmp_path: Path) -> None:
    site = _copy_without(tmp_path, {"_chain", "_fold", "_windows"})
    proc = _run_python(f"import sys; sys.path.insert(0, {str(site)!r}); import streamlib; import streamlib")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("NativeExtensionWarning") == 1, proc.stderr


def test_streamlib_pure_means_pure_python_on_purpose_and_does_not_warn(tmp_path: Path) -> None:
    site = _copy_without(tmp_path, {"_chain", "_fold", "_windows"})
    proc = _run_python(PIPELINE.format(site=str(site)), env={"STREAMLIB_PURE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["(135, [2, 2, 1])", "False"]
    assert proc.stderr == ""


def test_no_warning_when_the_compiled_modules_are_there(tmp_path: Path) -> None:
    if not _compiled_files():
        pytest.skip("the compiled modules are not built in this checkout")
    site = _copy_without(tmp_path, set())
    proc = _run_python(PIPELINE.format(site=str(site)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["(135, [2, 2, 1])", "True"]
    assert proc.stderr == ""


def test_every_pyx_is_a_module_the_package_checks_for() -> None:
    from streamlib import _native

    assert sorted(_native._MODULES) == sorted(p.stem for p in NATIVE_DIR.glob("*.pyx"))
