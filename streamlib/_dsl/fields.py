"""Extractors given by name: ``key_by("user")``, ``with_timestamps("ts")``, ``.sum("amount")``.

Where the keyed and windowed DSL takes a function of the element (the key, the
event time, the aggregated value), it also takes a *field*:

* a ``str`` name: ``e[name]`` when the element is a mapping
  (``collections.abc.Mapping``: dicts, ...), else the attribute
  ``getattr(e, name)`` (objects, dataclasses, msgspec Structs, namedtuples).
  Decided per element type, at the first element of that type;
* an ``int`` index: ``e[i]`` (tuples, lists, or mappings with int keys);
* ``operator.attrgetter(name)`` / ``operator.itemgetter(key)``: say which one
  explicitly.

A field costs no Python function call per element: the compiled window
kernels read it with one C-level attribute or item lookup, and a plain
function (a lambda) stays available for anything else. A field that is not
there raises the lookup's own error (``AttributeError``, ``KeyError``,
``IndexError``), from the stage that read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any


class Field:
    """``e[name]`` for mappings, ``getattr(e, name)`` otherwise (per element type)."""

    __slots__ = ("name", "modes")

    def __init__(self, name: str) -> None:
        self.name = name
        #: element type -> True when the name is looked up as an item.
        self.modes: dict[type, bool] = {}

    def uses_item(self, t: type) -> bool:
        """Whether elements of type ``t`` are read as ``e[name]`` (remembered per type)."""
        mode = self.modes.get(t)
        if mode is None:
            mode = self.modes[t] = issubclass(t, Mapping)
        return mode

    def __call__(self, e: Any) -> Any:
        return e[self.name] if self.uses_item(type(e)) else getattr(e, self.name)

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


def extractor(spec: Any, what: str) -> Callable[[Any], Any]:
    """The function ``spec`` stands for: a function as is, a ``str`` a :class:`Field`, an ``int`` an itemgetter.

    ``what`` names the argument in the error for anything else.
    """
    if isinstance(spec, str):
        if not spec:
            raise ValueError(f"{what}: a field name must not be empty")
        return Field(spec)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return itemgetter(spec)
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    raise TypeError(
        f"{what} needs a function of the element, a field name (str: attribute, or key of a mapping) "
        f"or an index (int), got {spec!r}"
    )
