"""Choosing which materialized value survives a composition."""

from __future__ import annotations

from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")


class Keep:
    """Combiners for ``via_mat`` / ``to_mat``: ``Keep.left``, ``right``, ``both``, ``none``.

    >>> queue, done = Source.queue(10).to_mat(Sink.ignore(), Keep.both).run()
    """

    @staticmethod
    def left(a: A, b: object) -> A:
        """Keep the upstream value."""
        return a

    @staticmethod
    def right(a: object, b: B) -> B:
        """Keep the downstream value."""
        return b

    @staticmethod
    def both(a: A, b: B) -> tuple[A, B]:
        """Keep both, as a pair."""
        return (a, b)

    @staticmethod
    def none(a: object, b: object) -> None:
        """Keep neither."""
        return None
