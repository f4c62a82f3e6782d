"""Choosing which materialized value survives a composition."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

A = TypeVar("A")
B = TypeVar("B")


def _left(a: A, b: Any) -> A:
    return a


def _right(a: Any, b: B) -> B:
    return b


def _both(a: A, b: B) -> tuple[A, B]:
    return (a, b)


def _none(a: Any, b: Any) -> None:
    return None


class Keep:
    """Combiners for ``via_mat`` / ``to_mat``: ``Keep.left``, ``right``, ``both``, ``none``.

    >>> queue, done = Source.queue(10).to_mat(Sink.ignore(), Keep.both).run()
    """

    left: Callable[[Any, Any], Any] = staticmethod(_left)
    right: Callable[[Any, Any], Any] = staticmethod(_right)
    both: Callable[[Any, Any], Any] = staticmethod(_both)
    none: Callable[[Any, Any], Any] = staticmethod(_none)
