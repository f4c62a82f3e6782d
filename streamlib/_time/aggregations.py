"""Aggregations for windows: how an accumulator starts, grows, merges and becomes a result.

An :class:`Aggregation` is four functions on an accumulator ``a``:

* ``create(v)``: the accumulator of a window's first value;
* ``add(a, v)``: ``a`` with one more value (may modify ``a`` and return it);
* ``merge(a, b)``: one accumulator for two windows' values (sessions merging,
  sliding windows folding); may modify ``a``, must not modify ``b``;
* ``result(a)``: the emitted value (None: ``a`` itself).

``v`` is ``value_of(element)``, or the element itself when ``value_of`` is
None. Accumulators are stored with msgspec MessagePack, so with a persistent
store they must be encodable; ``acc_type`` decodes them back to their type.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any


class Aggregation:
    __slots__ = ("name", "value_of", "create", "add", "merge", "result", "acc_type")

    def __init__(
        self,
        name: str,
        value_of: Callable[[Any], Any] | None,
        create: Callable[[Any], Any],
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any] | None,
        result: Callable[[Any], Any] | None = None,
        acc_type: Any = None,
    ) -> None:
        self.name = name
        self.value_of = value_of
        self.create = create
        self.add = add
        self.merge = merge
        self.result = result
        self.acc_type = acc_type

    def __repr__(self) -> str:
        return f"Aggregation({self.name})"


def _one(v: Any) -> int:
    return 1


def _plus_one(a: int, v: Any) -> int:
    return a + 1


def _identity(v: Any) -> Any:
    return v


def _mean_create(v: Any) -> list[Any]:
    return [v, 1]


def _mean_add(a: list[Any], v: Any) -> list[Any]:
    a[0] += v
    a[1] += 1
    return a


def _mean_merge(a: list[Any], b: list[Any]) -> list[Any]:
    a[0] += b[0]
    a[1] += b[1]
    return a


def _mean_result(a: list[Any]) -> float:
    return a[0] / a[1]


def _list_create(v: Any) -> list[Any]:
    return [v]


def _append(a: list[Any], v: Any) -> list[Any]:
    a.append(v)
    return a


def _extend(a: list[Any], b: list[Any]) -> list[Any]:
    a.extend(b)
    return a


def count() -> Aggregation:
    return Aggregation("count", None, _one, _plus_one, operator.add)


def sum_(value_of: Callable[[Any], Any]) -> Aggregation:
    return Aggregation("sum", value_of, _identity, operator.add, operator.add)


def min_(value_of: Callable[[Any], Any]) -> Aggregation:
    return Aggregation("min", value_of, _identity, min, min)


def max_(value_of: Callable[[Any], Any]) -> Aggregation:
    return Aggregation("max", value_of, _identity, max, max)


def mean(value_of: Callable[[Any], Any]) -> Aggregation:
    return Aggregation("mean", value_of, _mean_create, _mean_add, _mean_merge, _mean_result)


def collect(value_of: Callable[[Any], Any] | None) -> Aggregation:
    return Aggregation("collect", value_of, _list_create, _append, _extend, list)


def aggregate(
    initial: Any,
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any] | None = None,
    result: Callable[[Any], Any] | None = None,
    acc_type: Any = None,
) -> Aggregation:
    """A user aggregation; ``initial`` is a value (shallow-copied per window) or a factory."""
    if not callable(add):
        raise TypeError(f"aggregate(initial, add, ...) needs a function add(acc, element), got {add!r}")
    if merge is not None and not callable(merge):
        raise TypeError(f"aggregate(merge=) must be a function merge(acc1, acc2), got {merge!r}")
    fresh: Callable[[], Any] = initial if callable(initial) else (lambda: copy.copy(initial))

    def create(v: Any) -> Any:
        return add(fresh(), v)

    return Aggregation("aggregate", None, create, add, merge, result, acc_type)
