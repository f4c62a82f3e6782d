from collections.abc import Callable, Iterable
from typing import Any, TypeVar

A = TypeVar("A")
T = TypeVar("T")

def fold_chunk(f: Callable[[A, T], A], chunk: Iterable[T], acc: A) -> A:
    """``functools.reduce(f, chunk, acc)``, compiled (for a list ``chunk``)."""
