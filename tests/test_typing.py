"""The DSL is generic in element types: mypy sees what flows through a pipeline."""

from __future__ import annotations

import pathlib
import re

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is a dev dependency; `make test` installs it")

SAMPLE = pathlib.Path(__file__).parent / "typing" / "generics_sample.py"


def test_element_types_flow_through_operators() -> None:
    out, err, _status = api.run([str(SAMPLE), "--no-error-summary", "--hide-error-context", "--no-incremental"])
    revealed = [_plain(t) for t in re.findall(r'Revealed type is "([^"]+)"', out)]
    assert revealed == [
        "Source[int, None]",
        "Source[str, None]",
        "Source[tuple[str, int], None]",
        "Source[int, None]",
        "Future[int]",
        "Future[None]",
    ], out + err
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert errors == [], out


def _plain(type_text: str) -> str:
    """Drop module prefixes, which differ between mypy versions."""
    return re.sub(r"\b[\w.]*\.(?=[A-Za-z_]\w*\b)", "", type_text)


def test_package_and_examples_typecheck() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    targets = [str(root / "streamlib")] + ([str(root / "examples")] if (root / "examples").exists() else [])
    out, err, status = api.run([*targets, "--config-file", str(root / "pyproject.toml"), "--no-incremental"])
    assert status == 0, out + err
