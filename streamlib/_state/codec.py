"""Encoding of state keys and values: msgspec MessagePack, never pickle.

Keys and values in a store are bytes. Operators keep native Python objects in
memory and encode them only when they write to a store (at checkpoints) or read
from it (restore, cache misses).

* Values: ``msgspec.msgpack`` with an optional target type. Without one,
  arrays decode as lists and maps as dicts; give ``acc_type=``/``state_type=``
  (any type msgspec understands: a ``Struct``, a dataclass, ``tuple[int, int]``)
  to get the original type back after a restore.
* Keys: MessagePack too. A decoded key is made hashable again (arrays become
  tuples), so a key restored from a store equals the key the key function
  returns. Byte order of encoded keys is the scan order of a table; it matches
  numeric order only for non-negative integers, which is all the operators rely
  on (they never range-scan by time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()
_any_decoder = msgspec.msgpack.Decoder()

#: Encode without the friendly error (for hot loops that handle errors themselves).
raw_encode = _encoder.encode


class StateEncodingError(TypeError):
    """A key or value cannot be written to a state store (not MessagePack-encodable)."""


def encode(obj: Any, what: str = "value") -> bytes:
    """``obj`` as MessagePack bytes; a clear :class:`StateEncodingError` when it cannot be."""
    try:
        return _encoder.encode(obj)
    except (TypeError, OverflowError) as error:
        raise StateEncodingError(
            f"cannot store {what} {obj!r:.200} of type {type(obj).__name__}: {error}. "
            "State is encoded with msgspec MessagePack (never pickle): use int, float, str, bytes, "
            "bool, None, lists, tuples, dicts, msgspec.Struct or dataclasses"
        ) from error


def freeze(obj: Any) -> Any:
    """Make a decoded key hashable again: lists become tuples (recursively)."""
    if type(obj) is list:
        return tuple(freeze(x) for x in obj)
    return obj


def decode_key(data: bytes) -> Any:
    return freeze(_any_decoder.decode(data))


def encode_key(key: Any) -> bytes:
    return encode(key, "key")


def value_decoder(type_: Any = None) -> Callable[[bytes], Any]:
    """A function decoding MessagePack bytes, into ``type_`` when given."""
    if type_ is None or type_ is Any:
        return _any_decoder.decode
    return msgspec.msgpack.Decoder(type_).decode
