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

def update_sessions(
    chunk: list[Any],
    ts_of: Callable[[Any], int],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    gap: int,
    create: Callable[[Any], Any],
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any],
    sessions: dict[Hashable, list[Any]],
    closed_to: int,
    touched: set[Hashable],
    created: list[tuple[Hashable, int]],
    late: list[tuple[Any, int, Hashable, int, int]],
) -> None:
    """Session windows (see ``streamlib._time.kernels.update_sessions``)."""

class SessionCore:
    """Compiled twin of ``streamlib._time.kernels.SessionCore`` (same contract)."""

    def __init__(
        self,
        ts_of: Callable[[Any], int],
        key_of: Callable[[Any], Hashable],
        value_of: Callable[[Any], Any] | None,
        gap: int,
        create: Callable[[Any], Any],
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any],
        result: Callable[[Any], Any] | None,
        result_type: Callable[[Hashable, int, int, Any], Any],
        sessions: dict[Hashable, list[Any]],
    ) -> None: ...
    def schedule(self, at: Any, k: Hashable) -> None: ...
    def update(self, chunk: list[Any], closed_to: int, touched: set[Hashable] | None, late: list[Any]) -> None: ...
    def close(
        self,
        closed_to: Any,
        emit: bool,
        dirty: set[Hashable] | None,
        remove: Callable[[Hashable], Any],
        out: list[Any],
    ) -> None: ...
    def flush(self, dirty: set[Hashable] | None, out: list[Any]) -> None: ...
    def restore(self) -> None: ...

def update_sliding(
    chunk: list[Any],
    ts_of: Callable[[Any], int],
    key_of: Callable[[Any], Hashable],
    value_of: Callable[[Any], Any] | None,
    create: Callable[[Any], Any],
    records: dict[Hashable, list[list[Any]]],
    closed_to: int,
    touched: dict[Hashable, list[int]],
    late: list[tuple[Any, int, Hashable, int, int]],
    size: int,
) -> None:
    """Sliding windows (see ``streamlib._time.kernels.update_sliding``)."""

def fold_sliding(
    recs: list[list[Any]],
    starts: list[int],
    size: int,
    merge: Callable[[Any, Any], Any],
    result: Callable[[Any], Any] | None,
    result_type: Callable[[Hashable, int, int, Any], Any],
    k: Hashable,
    out: list[Any],
) -> None:
    """Sliding windows folded (see ``streamlib._time.kernels.fold_sliding``)."""

def expire_sliding(
    recs: list[list[Any]],
    k: Hashable,
    lo: int,
    closed_to: int,
    size: int,
    emit: bool,
    merge: Callable[[Any, Any], Any],
    result: Callable[[Any], Any] | None,
    result_type: Callable[[Hashable, int, int, Any], Any],
    out: list[Any],
) -> tuple[int, Any]:
    """Close a key's sliding windows (see ``streamlib._time.kernels.expire_sliding``)."""
