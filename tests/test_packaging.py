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
from typing import Any

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
    site = _copy_without(tmp_path, {"_cep", "_chain", "_fold", "_windows"})
    proc = _run_python(PIPELINE.format(site=str(site)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["(135, [2, 2, 1])", "False"]
    warnings = [line for line in proc.stderr.splitlines() if "|" in line]
    assert len(warnings) == 1, proc.stderr
    category, message = warnings[0].split(" | ", 1)
    assert category == "NativeExtensionWarning"
    for name in ("_cep", "_chain", "_fold", "_windows"):
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
    site = _copy_without(tmp_path, {"_cep", "_chain", "_fold", "_windows"})
    proc = _run_python(f"import sys; sys.path.insert(0, {str(site)!r}); import streamlib; import streamlib")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("NativeExtensionWarning") == 1, proc.stderr


def test_streamlib_pure_means_pure_python_on_purpose_and_does_not_warn(tmp_path: Path) -> None:
    site = _copy_without(tmp_path, {"_cep", "_chain", "_fold", "_windows"})
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


# --- release artifacts: sdist and manylinux wheel -----------------------------------------

APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
"""SHA-256 of the standard Apache License 2.0 text (www.apache.org/licenses/LICENSE-2.0.txt)."""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="manylinux wheels are built on Linux")


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def dist() -> dict[str, Path]:
    """The sdist and the repaired wheel from ``scripts/build_dist.py`` (``make wheel``),
    rebuilt unless dist/ is newer than every source file; a failed build fails loudly."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_dist.py"), "--if-stale"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMLIB_")},
    )
    if proc.returncode != 0:
        pytest.fail(f"building the release artifacts failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}",
                    pytrace=False)
    version = _pyproject()["project"]["version"]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (sdist,) = (ROOT / "dist").glob(f"streamlib-{version}.tar.gz")
    (wheel,) = (ROOT / "dist").glob(f"streamlib-{version}-{tag}-{tag}-*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_the_licence_file_is_the_standard_apache_2_text() -> None:
    import hashlib

    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_SHA256


def test_the_readme_opens_with_pip_install_then_exactly_the_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    intro, rest = readme.split("```sh\n", 1)
    assert "`pip install streamlib`" in intro
    first_block = rest.split("```", 1)[0].splitlines()
    assert [line.split("#")[0].split() for line in first_block] == [["make", "demo"], ["make", "test"]]


def test_cibuildwheel_builds_every_python_version_the_classifiers_name() -> None:
    project = _pyproject()
    classified = sorted(c.rsplit(" ", 1)[1] for c in project["project"]["classifiers"]
                        if c.startswith("Programming Language :: Python :: 3.") and c.count("::") == 2)
    built = sorted(f"3.{pattern[3:].rstrip('-*')}" for pattern in project["tool"]["cibuildwheel"]["build"])
    assert classified == built
    assert project["project"]["requires-python"] == f">={classified[0]}"


@linux_only
def test_the_wheel_is_manylinux_and_carries_the_licence_and_the_readme(dist: dict[str, Path]) -> None:
    import zipfile
    from email.parser import Parser

    wheel = dist["wheel"]
    assert "-manylinux" in wheel.name or ".manylinux" in wheel.name, wheel.name
    assert "linux_x86_64" not in wheel.name.replace("manylinux", "")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n.rsplit("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        licence = zf.read(f"{info}/licenses/LICENSE")
    assert licence == (ROOT / "LICENSE").read_bytes()
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert str(metadata.get_payload()).strip() == (ROOT / "README.md").read_text().strip()
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    assert all(u.startswith("https://github.com/streamlib/streamlib") for u in urls.values())
    compiled = [n for n in names if n.startswith("streamlib/_native/") and n.endswith(".so")]
    assert sorted(n.split("/")[-1].split(".")[0] for n in compiled) == ["_cep", "_chain", "_fold", "_windows"]
    assert not [n for n in names if n.startswith(("tests/", "docs/")) or n.endswith((".c", ".pyc"))]


@linux_only
def test_twine_check_accepts_the_sdist_and_the_wheel(dist: dict[str, Path]) -> None:
    twine = ROOT / "build" / "release-tools" / "bin" / "twine"
    proc = subprocess.run([str(twine), "check", "--strict", str(dist["sdist"]), str(dist["wheel"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


@linux_only
@pytest.mark.time_limit(600)
def test_the_wheel_installs_in_a_fresh_venv_and_runs_on_its_compiled_modules(
    dist: dict[str, Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(dist["wheel"])],
        capture_output=True, text=True, timeout=480,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    # -I and a cwd outside the checkout: only the installed wheel is importable.
    proc = _run_python((ROOT / "scripts" / "wheel_smoke.py").read_text(), python=str(python), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NativeExtensionWarning" not in proc.stderr
    report = json.loads(proc.stdout)
    site = venv.resolve()
    assert Path(report["file"]).resolve().is_relative_to(site)
    assert sorted(report["compiled"]) == ["_cep", "_chain", "_fold", "_windows"]
    assert all(Path(p).resolve().is_relative_to(site) and p.endswith(".so") for p in report["compiled"].values())
    assert report["version"] == report["metadata_version"] == _pyproject()["project"]["version"]
    assert report["windows"] == [["a", 0, 2], ["a", 10, 1], ["a", 30, 1], ["b", 0, 1], ["b", 10, 1]]


def _sdist_members(sdist: Path) -> tuple[str, set[str]]:
    import tarfile

    with tarfile.open(sdist) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
    top = names[0].split("/", 1)[0]
    return top, {n.split("/", 1)[1] for n in names}


SDIST_LEFT_OUT = {".gitignore"}
SDIST_LEFT_OUT_DIRS = (".ci/",)


@linux_only
def test_the_sdist_holds_every_tracked_file_and_no_build_products(dist: dict[str, Path]) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    expected = {f for f in tracked if f not in SDIST_LEFT_OUT and not f.startswith(SDIST_LEFT_OUT_DIRS)}
    _, members = _sdist_members(dist["sdist"])
    assert sorted(expected - members) == []
    assert "LICENSE" in members and "tests/conftest.py" in members and "docs/windows.md" in members
    products = [m for m in members if m.endswith((".so", ".pyd", ".c", ".html", ".pyc")) or "__pycache__" in m]
    assert products == []


def _collected(cwd: Path, tmp_path: Path) -> list[str]:
    """The node ids ``pytest --collect-only`` finds under ``cwd/tests``."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("STREAMLIB_")}, "STREAMLIB_PURE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return sorted(line for line in proc.stdout.splitlines() if "::" in line)


@linux_only
@pytest.mark.time_limit(600)
def test_the_whole_test_suite_collects_from_the_unpacked_sdist(dist: dict[str, Path], tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(dist["sdist"]) as tf:
        tf.extractall(tmp_path, filter="data")
    top, _ = _sdist_members(dist["sdist"])
    unpacked = tmp_path / top
    probe = subprocess.run(
        [sys.executable, "-c", "import streamlib; print(streamlib.__file__)"],
        cwd=unpacked, capture_output=True, text=True, timeout=60, env={**os.environ, "STREAMLIB_PURE": "1"},
    )
    assert Path(probe.stdout.strip()).resolve().is_relative_to(unpacked.resolve()), probe.stdout + probe.stderr
    from_sdist = _collected(unpacked, tmp_path)
    assert len(from_sdist) > 100
    assert from_sdist == _collected(ROOT, tmp_path)
