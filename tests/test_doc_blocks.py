"""Every ```python block of README.md and docs/*.md runs as written, as a user pasting it would run it.

Each block is a complete program: it runs in a fresh interpreter (the one running the tests), in an
empty temporary directory, and must exit with 0 and print no traceback. Conventions, in the markdown:

* ``<!-- fragment -->`` on the line before a fence: the block is not a whole program (a signature, an
  excerpt) and is not run. Fragments are counted: keep them rare.
* ``<!-- output -->`` on the line before a fence: that block is what the closest ```python block above
  it prints; the run's stdout must contain its lines, in a row.
* A comment ``# prints X`` in a block (after a ``print(...)`` or on its own line): ``X`` must be one
  of the lines the block prints.
* A block that reads ``KAFKA_BOOTSTRAP_SERVERS`` needs a broker: it runs in
  ``tests/kafka/test_doc_blocks_kafka.py`` against the test broker, not here.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Fenced block languages allowed in the docs (an untagged fence hides what it is).
LANGUAGES = {"python", "sh", "mermaid", "text"}
#: At most this many ```python blocks may be fragments, over all the docs.
MAX_FRAGMENTS = 3
#: Seconds one block may run: generous, the test machine may have two busy cores.
TIMEOUT = 180

FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    path: pathlib.Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None  # "fragment", "output" or None: the HTML comment right before the fence

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def needs_kafka(self) -> bool:
        return "KAFKA_BOOTSTRAP_SERVERS" in self.code


def blocks_of(path: pathlib.Path) -> list[Block]:
    """The fenced blocks of ``path``, in order."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, language = i, m.group(1)
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.relative_to(ROOT)}:{start + 1}: code block never closed")
        i += 1
        prev = lines[start - 1].strip() if start > 0 else ""
        marker = re.fullmatch(r"<!--\s*(fragment|output)\s*-->", prev)
        out.append(Block(path, start + 1, language, "\n".join(body) + "\n", marker.group(1) if marker else None))
    return out


def all_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in blocks_of(path)]


PRINTS = re.compile(r"#\s*prints\s+(.+?)\s*$")


def programs() -> list[tuple[Block, list[str]]]:
    """Each runnable ```python block, with the outputs it is documented to print (each one or more lines)."""
    out: list[tuple[Block, list[str]]] = []
    for path in DOC_FILES:
        for block in blocks_of(path):
            if block.language == "python" and block.marker != "fragment":
                out.append((block, [m.group(1) for m in map(PRINTS.search, block.code.splitlines()) if m]))
            elif block.marker == "output":
                assert out and out[-1][0].path == path, f"{block.id}: <!-- output --> follows no python block"
                out[-1][1].append(block.code)
    return out


def run_block(block: Block, cwd: pathlib.Path, env: dict[str, str] | None = None) -> str:
    """Run ``block`` as a program in ``cwd``; fail naming the block unless it exits cleanly. Returns stdout."""
    script = cwd / "block.py"
    script.write_text(block.code)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    report = f"{block.id} failed:\n--- code\n{block.code}--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert "Traceback" not in proc.stderr, report
    return proc.stdout


def check_output(block: Block, stdout: str, expected: list[str]) -> None:
    """Each expected output is a run of whole lines of ``stdout`` (trailing spaces aside)."""
    got = [line.rstrip() for line in stdout.splitlines()]
    for text in expected:
        want = [line.rstrip() for line in text.strip("\n").splitlines()]
        found = any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))
        assert found, f"{block.id} should print:\n" + "\n".join(want) + "\nbut printed:\n" + "\n".join(got)


LOCAL = [(b, out) for b, out in programs() if not b.needs_kafka]


@pytest.mark.time_limit(TIMEOUT + 30)
@pytest.mark.parametrize(("block", "expected"), LOCAL, ids=[b.id for b, _ in LOCAL])
def test_block_runs_as_written(block: Block, expected: list[str], tmp_path: pathlib.Path) -> None:
    check_output(block, run_block(block, tmp_path), expected)


def test_fragments_are_rare() -> None:
    fragments = [b.id for b in all_blocks() if b.language == "python" and b.marker == "fragment"]
    assert len(fragments) <= MAX_FRAGMENTS, f"too many python blocks are not runnable programs: {fragments}"


def test_every_block_names_its_language() -> None:
    unknown = [f"{b.id} ({b.language or 'no language'})" for b in all_blocks() if b.language not in LANGUAGES]
    assert unknown == [], f"tag each fence with one of {sorted(LANGUAGES)}: {unknown}"


def test_markers_sit_on_python_blocks_as_meant() -> None:
    misplaced = [b.id for b in all_blocks() if b.marker == "fragment" and b.language != "python"]
    assert misplaced == [], f"<!-- fragment --> only marks ```python blocks: {misplaced}"


def test_the_docs_have_runnable_blocks() -> None:
    # The extraction itself: the README's blocks are found, and most are whole programs.
    readme = [b for b in blocks_of(ROOT / "README.md") if b.language == "python"]
    assert len(readme) >= 10
    assert sum(b.marker != "fragment" for b in readme) >= len(readme) - 1
