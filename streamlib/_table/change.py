"""What a table's change stream carries: :class:`Change`."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

K = TypeVar("K")
V = TypeVar("V")


class Change(msgspec.Struct, Generic[K, V], frozen=True):
    """One change of one key of a table: its value went from ``old`` to ``new``.

    ``old`` is None when the key was absent (an insert), ``new`` is None when
    it was deleted (a tombstone). ``timestamp`` is the event time of the update
    that caused the change (int ms), None when the table has no event time.
    Frozen and hashable when the values are.

    >>> Change("alice", old=None, new=3, timestamp=1000)   # alice inserted
    >>> Change("alice", old=3, new=None, timestamp=2000)   # alice deleted
    """

    key: K
    old: V | None
    new: V | None
    timestamp: int | None = None


class HistoryChange(Change[K, V], frozen=True):
    """Internal: an update of a versioned table older than the key's latest version.

    It changes the history, not the latest value, so ``to_stream()`` leaves it
    out; stream-table joins take it to answer lookups as of an earlier time.
    """
