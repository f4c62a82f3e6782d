"""Every public operator has a docstring and a row in the README."""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

from streamlib import Flow, Sink, Source

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
DOCUMENTED = set(re.findall(r"`(?:[A-Za-z]+\.)?([a-z_][a-z0-9_]*)\(", README))

PLUMBING = {"via", "via_mat", "to", "to_mat", "run_with", "map_materialized_value", "describe", "identity"}


def _public_methods(cls: type) -> list[str]:
    return sorted(
        name
        for name, member in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(member) or hasattr(member, "__wrapped__") or isinstance(member, staticmethod))
    )


@pytest.mark.parametrize("cls", [Source, Flow, Sink], ids=lambda c: c.__name__)
def test_every_operator_has_a_docstring(cls: type) -> None:
    missing = [name for name in _public_methods(cls) if not (getattr(cls, name).__doc__ or "").strip()]
    assert missing == []


@pytest.mark.parametrize("cls", [Source, Flow, Sink], ids=lambda c: c.__name__)
def test_every_operator_is_in_the_readme(cls: type) -> None:
    missing = [name for name in _public_methods(cls) if name not in PLUMBING and name not in DOCUMENTED]
    assert missing == [], f"add a README row for: {missing}"
