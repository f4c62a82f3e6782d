"""Read-only queries of a named state table, decoded with the store codec.

A :class:`QueryableStore` reads one table (a stateful operator's ``name=``)
across the stores it is given: one store for a plain run, every open
partition's store for a Kafka app. It reads what the stores hold: the state of
the last committed checkpoint (operators write their tables only at
checkpoints), so a reader never sees state that a crash could take back.
Keys and values are MessagePack (``streamlib/_state/codec.py``); rows an
operator keeps for itself (keys starting with ``0xC1``) are never returned.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from .._state.codec import decode_key, encode_key, value_decoder
from .._state.store import StateStore

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_EXTRA = b"\xc1"


def _sort_key(key: Any) -> tuple[str, Any]:
    return (type(key).__name__, key)


class QueryableStore(Generic[K, V]):
    """Read-only view of table ``name`` in one or more state stores.

    ``get(key)``, ``range(lo, hi)`` and ``items()`` read key-value tables
    (``stateful_map``); ``fetch(key, time_from, time_to)`` reads a time-window
    table (``window``: rows keyed by ``(key, window start)``). ``value_type``
    decodes values into a type (a ``msgspec.Struct``, a dataclass), as the
    operator's ``state_type=``/``acc_type=`` does.

    >>> counts = QueryableStore(store, "counts")
    >>> counts.get("ann")
    3
    """

    def __init__(
        self,
        stores: StateStore | Sequence[StateStore] | Callable[[], Sequence[StateStore]],
        name: str,
        value_type: Any = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a store (table) name is a non-empty str, got {name!r}")
        if isinstance(stores, StateStore):
            fixed: Sequence[StateStore] = [stores]
            self._stores: Callable[[], Sequence[StateStore]] = lambda: fixed
        elif callable(stores):
            self._stores = stores
        else:
            listed = list(stores)
            self._stores = lambda: listed
        self.name = name
        self._decode = value_decoder(value_type)

    def _tables(self) -> Iterator[Any]:
        for store in self._stores():
            if self.name in store.table_names():  # never create a table by reading it
                yield store.table(self.name)

    def table_names(self) -> list[str]:
        """The tables the stores hold now (to say which names exist)."""
        return sorted({n for s in self._stores() for n in s.table_names()})

    def get(self, key: K) -> V | None:
        """The value of ``key``, or None when no store holds it."""
        raw = encode_key(key)
        for table in self._tables():
            value = table.get(raw)
            if value is not None:
                return self._decode(value)  # type: ignore[no-any-return]
        return None

    def items(self) -> list[tuple[K, V]]:
        """Every ``(key, value)``, sorted by key."""
        return self.range()

    def range(self, lo: K | None = None, hi: K | None = None) -> list[tuple[K, V]]:
        """``(key, value)`` with ``lo <= key < hi`` (either bound may be None), sorted by key.

        Reads every row of the table (encoded keys do not sort like the keys
        themselves), so it costs the table's size.
        """
        out: list[tuple[Any, Any]] = []
        decode = self._decode
        for table in self._tables():
            for k, v in table.scan():
                if k.startswith(_EXTRA):
                    continue
                key = decode_key(k)
                if (lo is not None and key < lo) or (hi is not None and not key < hi):
                    continue
                out.append((key, decode(v)))
        out.sort(key=lambda kv: _sort_key(kv[0]))
        return out

    def fetch(self, key: K, time_from: int, time_to: int) -> list[tuple[int, V]]:
        """Windows of ``key`` starting in ``[time_from, time_to]`` (epoch ms): ``(start, value)`` by start.

        For time-window tables (tumbling, hopping, sliding), whose rows are keyed
        by ``(key, window start)``; one prefix scan per store.
        """
        prefix = b"\x92" + encode_key(key)  # a MessagePack array of two: [key, start]
        out: list[tuple[int, Any]] = []
        decode = self._decode
        for table in self._tables():
            for k, v in table.scan(prefix=prefix):
                decoded = decode_key(k)
                if not (isinstance(decoded, tuple) and len(decoded) == 2 and decoded[0] == key):
                    continue
                start = decoded[1]
                if isinstance(start, int) and time_from <= start <= time_to:
                    out.append((start, decode(v)))
        out.sort(key=lambda sv: sv[0])
        return out

    def count(self) -> int:
        """Number of keys (operators' own rows excluded)."""
        return sum(1 for table in self._tables() for k, _v in table.scan() if not k.startswith(_EXTRA))

    def __repr__(self) -> str:
        return f"QueryableStore({self.name!r})"


def table_stats(store: StateStore) -> dict[str, tuple[int, int]]:
    """Per table, ``(rows, bytes)`` of the committed state; cheap for RocksDB (its estimates).

    RocksDB: ``rocksdb.estimate-num-keys`` and the live SST data plus memtables.
    MemoryStore: exact counts (reads every row). Other stores: rows by scanning, bytes 0.
    """
    out: dict[str, tuple[int, int]] = {}
    cfs = getattr(store, "_cfs", None)
    data = getattr(store, "_data", None)
    if cfs is not None:
        if getattr(store, "_db", None) is None:
            return out  # closed: nothing to report (never reopened for a metric)
        for name, cf in list(cfs.items()):
            rows = cf.property_int_value("rocksdb.estimate-num-keys") or 0
            size = (cf.property_int_value("rocksdb.estimate-live-data-size") or 0) + (
                cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
            )
            out[name] = (int(rows), int(size))
        return out
    if isinstance(data, dict):
        for name, table in list(data.items()):
            out[name] = (len(table), sum(len(k) + len(v) for k, v in table.items()))
        return out
    for name in store.table_names():
        out[name] = (store.table(name).count(), 0)
    return out
