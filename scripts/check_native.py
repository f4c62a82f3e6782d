"""Report which streamlib Cython modules have no up-to-date compiled build.

Run after installing: every ``streamlib/_native/<name>.pyx`` should have a
``streamlib/_native/<name>.<ext-suffix>`` beside it that is newer than the
.pyx.  Missing or stale ones are listed in one warning line (the package then
runs them as pure Python).  The exit status is 0 unless ``--strict`` is given.
Nothing is imported, so this works while the package itself is broken.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

NATIVE_DIR = Path(__file__).resolve().parent.parent / "streamlib" / "_native"


def missing_modules() -> list[str]:
    missing = []
    for pyx in sorted(NATIVE_DIR.glob("*.pyx")):
        built = [NATIVE_DIR / (pyx.stem + suffix) for suffix in EXTENSION_SUFFIXES]
        fresh = [p for p in built if p.exists() and p.stat().st_mtime >= pyx.stat().st_mtime]
        if not fresh:
            missing.append(pyx.stem)
    return missing


def main(argv: list[str]) -> int:
    missing = missing_modules()
    if missing:
        print(
            f"WARNING: streamlib: native extensions not built ({', '.join(missing)}); "
            "using the pure-Python fallback (run '.venv/bin/pip install -v -e .' to see why)",
            file=sys.stderr,
        )
        return 1 if "--strict" in argv else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
