from collections.abc import Callable, Hashable
from typing import Any

def update_fixed(
    chunk: list[Any],
    ts_of: Callable[[Any], int],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    size: int,
    step: int,
    offset: int,
    create: Callable[[Any], Any],
    add: Callable[[Any, Any], Any],
    accs: dict[tuple[Hashable, int], Any],
    closed_to: int,
    touched: set[tuple[Hashable, int]],
    created: list[tuple[Hashable, int]],
    late: list[tuple[Any, int, Hashable, int, int]],
) -> None:
    """Tumbling and hopping windows (see ``streamlib._time.kernels.update_fixed``)."""

def update_count(
    chunk: list[Any],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    n: int,
    create: Callable[[Any], Any],
    add: Callable[[Any, Any], Any],
    counts: dict[Hashable, list[Any]],
    touched: dict[Hashable, int],
    full: list[tuple[Hashable, int, Any]],
) -> None:
    """Count windows (see ``streamlib._time.kernels.update_count``)."""

def max_timestamp(ts_of: Callable[[Any], int], chunk: list[Any]) -> Any:
    """``max(map(ts_of, chunk))`` (see ``streamlib._time.kernels.max_timestamp``)."""
