"""``MemoryStore``: a state store in process memory, with the same checkpoint semantics as RocksDB.

Committed data lives as long as the store object; a pipeline restarted in the
same process with the same ``MemoryStore`` resumes from its last checkpoint,
which makes it the store of choice for tests. Values are bytes here too, so a
checkpoint is a snapshot that later changes to live objects cannot alter.
"""

from __future__ import annotations

from collections.abc import Iterator

from .store import BaseStore, Checkpoint, Writes


class MemoryStore(BaseStore):
    """A :class:`StateStore` held in memory.

    >>> store = MemoryStore()
    >>> t = store.table("counts"); t.put(b"a", b"1")
    >>> store.checkpoint(1, {"position": 10}); store.last_checkpoint()
    Checkpoint(id=1, meta={'position': 10})
    """

    def __init__(self) -> None:
        super().__init__()
        self._data: dict[str, dict[bytes, bytes]] = {}

    def _get(self, table: str, key: bytes) -> bytes | None:
        return self._data[table].get(key)

    def _scan(self, table: str, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        data = self._data[table]
        keys = sorted(k for k in data if k >= lo and (hi is None or k < hi))
        for k in keys:
            yield k, data[k]

    def _commit(self, writes: dict[str, Writes], checkpoint: Checkpoint) -> None:
        for name, batch in writes.items():
            data = self._data[name]
            for key, value in batch:
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value

    def _load_checkpoint(self) -> Checkpoint | None:
        return None

    def _create_table(self, name: str) -> None:
        self._data.setdefault(name, {})

    def _existing_tables(self) -> list[str]:
        return list(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(tables={sorted(self._data)})"
