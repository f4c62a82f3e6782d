from collections.abc import Callable
from typing import Any

def feed_linear(logic: Any, tss: list[int], evs: list[Any], out: list[Any]) -> None:
    """Compiled twin of ``streamlib.cep._linear.feed_linear``."""

def close_due(logic: Any, upto: int, out: list[Any], confirm: bool = True) -> None:
    """Compiled twin of ``streamlib.cep._due.close_due``."""

def stamp(ts_of: Callable[[Any], Any], chunk: list[Any], name: str) -> tuple[list[int], int, bool]:
    """Compiled twin of ``streamlib.cep._kernels.stamp``."""
