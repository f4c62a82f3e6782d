"""The DSL is generic in element types: mypy sees what flows through a pipeline."""

from __future__ import annotations

import pathlib
import re
from collections import defaultdict

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is a dev dependency; `make test` installs it")

SAMPLE = pathlib.Path(__file__).parent / "typing" / "generics_sample.py"

#: Samples checked under ``mypy --strict``: a line ending ``# R: T`` must reveal type ``T``, a line
#: ending ``# E: code`` must be an error with that code, and no other line may be an error.
STRICT_SAMPLES = ["key_state.py", "file_sources.py", "source_queue.py", "stream_join.py", "key_timers.py", "queryable_store.py", "cep_match.py", "tables.py", "global_table.py", "asof_join.py"]
_MARK = re.compile(r"#\s*([RE]):\s*(.+?)\s*$")
_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$")


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


@pytest.fixture(scope="module")
def strict_report() -> dict[tuple[str, int], list[tuple[str, str]]]:
    """mypy --strict over every strict sample at once: (file, line) -> [(kind, text)]."""
    folder = pathlib.Path(__file__).parent / "typing"
    out, err, _status = api.run(
        [*(str(folder / name) for name in STRICT_SAMPLES), "--strict", "--no-error-summary",
         "--hide-error-context", "--show-error-codes", "--no-incremental", "--no-pretty"]
    )
    report: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for line in out.splitlines():
        m = _LINE.match(line)
        if m is not None:
            report[(pathlib.Path(m["path"]).name, int(m["line"]))].append((m["kind"], m["text"]))
    assert report or not err, err
    return report


@pytest.mark.parametrize("name", STRICT_SAMPLES)
def test_strict_sample_reveals_its_types_and_rejects_misuse(
    name: str, strict_report: dict[tuple[str, int], list[tuple[str, str]]]
) -> None:
    source = (pathlib.Path(__file__).parent / "typing" / name).read_text().splitlines()
    expected: dict[int, tuple[str, str]] = {}
    for number, text in enumerate(source, 1):
        m = _MARK.search(text)
        if m is not None:
            expected[number] = (m[1], m[2])
    assert expected, f"{name} has no # R: or # E: marks"
    problems = []
    for number, (mark, want) in expected.items():
        got = strict_report.get((name, number), [])
        if mark == "R":
            revealed = [_plain(r) for kind, t in got if kind == "note" for r in re.findall(r'Revealed type is "([^"]+)"', t)]
            if revealed != [want]:
                problems.append(f"{name}:{number}: expected revealed {want!r}, got {revealed or got}")
        else:
            codes = [t.rsplit("[", 1)[-1].rstrip("]") for kind, t in got if kind == "error"]
            if want not in codes:
                problems.append(f"{name}:{number}: expected an error [{want}], got {got or 'none'}")
    for (file, number), entries in sorted(strict_report.items()):
        errors = [t for kind, t in entries if kind == "error"]
        if file == name and errors and expected.get(number, ("R",))[0] == "R":
            problems.append(f"{name}:{number}: unexpected error {errors}")
    assert problems == [], "\n".join(problems)
