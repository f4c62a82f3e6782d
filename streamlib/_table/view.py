"""Local reads of a running table: :class:`TableView`.

A table's stage materializes a view over its live state (the dict the stage
updates), so reads see every change the stage has applied, with no copy and no
store access. A derived table's view (``map_values``, ``filter``, a join)
computes its values from the views it derives from when read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from .state import TableState

K = TypeVar("K")
V = TypeVar("V")


class TableView(Generic[K, V]):
    """Reads of a running table's current contents, from the process that runs it.

    Get one as the materialized value of the table's stream:
    ``table.to_stream_mat(Keep.right)`` (or ``Keep.both`` to keep the
    upstream value too). Reads are plain dict lookups on the table's live state;
    after the run ends the view keeps the final contents.

    >>> changes, view = table.to_stream_mat(Keep.right).to_mat(Sink.collect(), Keep.both).run()
    >>> view.get("alice")          # the latest value, None when absent
    >>> view.as_of("alice", ts)    # versioned tables: the value at event time ts
    """

    def get(self, key: K, default: V | None = None) -> V | None:
        """The latest value of ``key``, or ``default`` when the table has no row for it."""
        raise NotImplementedError

    def as_of(self, key: K, timestamp: int) -> V | None:
        """The value ``key`` had at event time ``timestamp`` (a table made with ``history=``)."""
        raise NotImplementedError

    def items(self) -> Iterator[tuple[K, V]]:
        """``(key, value)`` of every row, in no particular order."""
        raise NotImplementedError

    def to_dict(self) -> dict[K, V]:
        """A copy of the current contents."""
        return dict(self.items())

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"


class StateView(TableView[K, V]):
    """The view of a table's own state."""

    def __init__(self, name: str, versioned: bool) -> None:
        self.name = name
        self.versioned = versioned
        self.state: TableState | None = None  # set when the stage's logic starts

    def get(self, key: K, default: V | None = None) -> V | None:
        st = self.state
        value = None if st is None else st.get(key)
        return default if value is None else value

    def as_of(self, key: K, timestamp: int) -> V | None:
        if not self.versioned:
            raise ValueError(
                f"{self.name}: as_of needs a versioned table; make it with history=timedelta(...) "
                "(to_table(history=...), Table.from_source(..., history=...))"
            )
        st = self.state
        return None if st is None else st.as_of(key, timestamp)  # type: ignore[no-any-return]

    def items(self) -> Iterator[tuple[K, V]]:
        st = self.state
        return iter(()) if st is None else iter(list(st.items()))

    def __len__(self) -> int:
        return 0 if self.state is None else len(self.state)


class MappedView(TableView[K, V]):
    """``map_values(f)`` of a parent view."""

    def __init__(self, parent: TableView[K, Any], f: Callable[[Any], V]) -> None:
        self.parent = parent
        self.f = f

    def get(self, key: K, default: V | None = None) -> V | None:
        value = self.parent.get(key)
        return default if value is None else self.f(value)

    def as_of(self, key: K, timestamp: int) -> V | None:
        value = self.parent.as_of(key, timestamp)
        return None if value is None else self.f(value)

    def items(self) -> Iterator[tuple[K, V]]:
        f = self.f
        return ((k, f(v)) for k, v in self.parent.items())

    def __len__(self) -> int:
        return len(self.parent)


class FilteredView(TableView[K, V]):
    """``filter(p)`` of a parent view."""

    def __init__(self, parent: TableView[K, V], p: Callable[[V], object]) -> None:
        self.parent = parent
        self.p = p

    def get(self, key: K, default: V | None = None) -> V | None:
        value = self.parent.get(key)
        return value if value is not None and self.p(value) else default

    def as_of(self, key: K, timestamp: int) -> V | None:
        value = self.parent.as_of(key, timestamp)
        return value if value is not None and self.p(value) else None

    def items(self) -> Iterator[tuple[K, V]]:
        p = self.p
        return ((k, v) for k, v in self.parent.items() if p(v))
