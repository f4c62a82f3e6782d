"""State stores and checkpoints: the ``StateStore`` protocol, ``MemoryStore``, ``RocksDBStore``.

* ``store.py``: the protocol (tables, atomic checkpoints, commit hooks) and the
  pending-writes layer shared by both stores.
* ``memory.py`` / ``rocksdb.py``: the two stores.
* ``codec.py``: msgspec MessagePack keys and values (pickle is never used).
* ``checkpoint.py``: barriers and the per-run coordinator committing complete
  checkpoints; the ``checkpointed`` barrier source.
* ``operator_state.py``: an operator's dict of live state, mirrored to its table.
"""

from .codec import StateEncodingError
from .memory import MemoryStore
from .rocksdb import RocksDBStore
from .store import Checkpoint, Commit, StateStore, Table

__all__ = ["Checkpoint", "Commit", "MemoryStore", "RocksDBStore", "StateEncodingError", "StateStore", "Table"]
