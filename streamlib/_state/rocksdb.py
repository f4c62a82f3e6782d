"""``RocksDBStore``: state on disk in RocksDB (through rocksdict, raw bytes mode).

Layout of one store directory:

* one column family per table (per stateful operator), keys and values are the
  operator's msgspec-encoded bytes;
* the default column family holds one row, ``streamlib:checkpoint``: the id and
  meta of the last committed checkpoint.

A checkpoint is one ``WriteBatch`` holding every table's pending writes and the
new checkpoint row, so after a crash (kill -9 included) the directory is exactly
the last checkpoint: RocksDB replays its write-ahead log on open and a batch is
applied whole or not at all. With ``sync=True`` (the default) the batch is also
fsynced, so a power loss cannot lose a committed checkpoint either.

The database opens lazily on first use and closes when the last run using it
ends (or on :meth:`close`). Only one process may have a directory open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import msgspec

from .store import BaseStore, Checkpoint, Writes

_CHECKPOINT_KEY = b"streamlib:checkpoint"


class _CheckpointRow(msgspec.Struct):
    id: int
    meta: dict[str, Any]


class RocksDBStore(BaseStore):
    """A :class:`StateStore` in a RocksDB directory; survives restarts and kill -9.

    ``sync=False`` skips the fsync at each checkpoint: a process crash still
    loses nothing committed, a power loss may lose the last checkpoints.

    >>> store = RocksDBStore("/var/lib/myapp/state")
    >>> Source.from_iterable(events).checkpointed(store, every=10_000)...
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.sync = sync
        self._db: Any = None
        self._cfs: dict[str, Any] = {}
        self._handles: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------

    def _open(self) -> Any:
        if self._db is not None:
            return self._db
        from rocksdict import Options, Rdict

        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        families: dict[str, Any] = {}
        if os.path.exists(os.path.join(self.path, "CURRENT")):
            for name in Rdict.list_cf(self.path, Options(raw_mode=True)):
                if name != "default":
                    families[name] = Options(raw_mode=True)
        try:
            db = Rdict(self.path, options=opts, column_families=families or None)
        except Exception as error:
            raise OSError(f"cannot open RocksDB state store at {self.path!r}: {error}") from error
        self._db = db
        for name in families:
            self._cfs[name] = db.get_column_family(name)
            self._handles[name] = db.get_column_family_handle(name)
        self._loaded = False
        return db

    def close(self) -> None:
        super().close()
        if self._db is None:
            return
        for cf in self._cfs.values():
            cf.close()
        self._cfs.clear()
        self._handles.clear()
        self._db.close()
        self._db = None
        self._loaded = False

    # -- backend ---------------------------------------------------------------

    def _cf(self, name: str) -> Any:
        cf = self._cfs.get(name)
        if cf is None:
            self._create_table(name)
            cf = self._cfs[name]
        return cf

    def _create_table(self, name: str) -> None:
        if name == "default":
            raise ValueError("'default' is reserved in a RocksDBStore; choose another table name")
        db = self._open()
        if name in self._cfs:
            return
        from rocksdict import Options

        cf = db.create_column_family(name, Options(raw_mode=True))
        self._cfs[name] = cf
        self._handles[name] = db.get_column_family_handle(name)

    def _existing_tables(self) -> list[str]:
        self._open()
        return list(self._cfs)

    def _get(self, table: str, key: bytes) -> bytes | None:
        value: bytes | None = self._cf(table).get(key)
        return value

    def _scan(self, table: str, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        from rocksdict import ReadOptions

        cf = self._cf(table)
        ro = ReadOptions()
        if hi is not None:
            ro.set_iterate_upper_bound(hi)
        it = cf.iter(ro)
        try:
            if lo:
                it.seek(lo)
            else:
                it.seek_to_first()
            while it.valid():
                yield it.key(), it.value()
                it.next()
        finally:
            del it

    def _commit(self, writes: dict[str, Writes], checkpoint: Checkpoint) -> None:
        from rocksdict import WriteBatch, WriteOptions

        db = self._open()
        wb = WriteBatch(raw_mode=True)
        for name, batch in writes.items():
            self._cf(name)
            handle = self._handles[name]
            for key, value in batch:
                if value is None:
                    wb.delete(key, handle)
                else:
                    wb.put(key, value, handle)
        wb.put(_CHECKPOINT_KEY, msgspec.msgpack.encode(_CheckpointRow(checkpoint.id, checkpoint.meta)))
        wo = WriteOptions()
        wo.sync = self.sync
        db.write(wb, wo)

    def _load_checkpoint(self) -> Checkpoint | None:
        raw = self._open().get(_CHECKPOINT_KEY)
        if raw is None:
            return None
        row = msgspec.msgpack.decode(raw, type=_CheckpointRow)
        return Checkpoint(row.id, row.meta)

    def __repr__(self) -> str:
        return f"RocksDBStore({self.path!r})"
