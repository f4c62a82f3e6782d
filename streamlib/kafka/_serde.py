"""Serdes: turning record keys and values into bytes and back, with msgspec.

A serde is any object with ``serialize(value) -> bytes | None`` and
``deserialize(data: bytes | None) -> value``. A null payload (a Kafka
tombstone) deserializes to None and None serializes to a null payload, whatever
the serde. Typed serdes validate while decoding: ``JsonSerde(Order)`` rejects a
payload that is not an ``Order``, and that rejection is a deserialization error
reported with the record's topic, partition and offset (see ``_decode.py``).
"""

from __future__ import annotations

import struct
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import msgspec

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class Serde(Protocol[T]):
    """Converts values of one type to bytes and back."""

    def serialize(self, value: T | None) -> bytes | None: ...

    def deserialize(self, data: bytes | None) -> T | None: ...


class BytesSerde:
    """Bytes unchanged (the default for keys and values)."""

    __slots__ = ()

    def serialize(self, value: bytes | None) -> bytes | None:
        if value is None or type(value) is bytes:
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"BytesSerde serializes bytes, got {type(value).__name__}")

    def deserialize(self, data: bytes | None) -> bytes | None:
        return data

    def __repr__(self) -> str:
        return "BytesSerde()"


class StrSerde:
    """Text in an encoding (UTF-8 by default)."""

    __slots__ = ("encoding",)

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def serialize(self, value: str | None) -> bytes | None:
        return None if value is None else value.encode(self.encoding)

    def deserialize(self, data: bytes | None) -> str | None:
        return None if data is None else data.decode(self.encoding)

    def __repr__(self) -> str:
        return f"StrSerde({self.encoding!r})"


class IntSerde:
    """Signed big-endian integers of ``size`` bytes (8, like Kafka's LongSerializer; or 4, 2)."""

    __slots__ = ("size", "_struct")

    _FORMATS = {2: ">h", 4: ">i", 8: ">q"}

    def __init__(self, size: int = 8) -> None:
        if size not in self._FORMATS:
            raise ValueError(f"IntSerde size must be 2, 4 or 8 bytes, got {size}")
        self.size = size
        self._struct = struct.Struct(self._FORMATS[size])

    def serialize(self, value: int | None) -> bytes | None:
        return None if value is None else self._struct.pack(value)

    def deserialize(self, data: bytes | None) -> int | None:
        if data is None:
            return None
        if len(data) != self.size:
            raise ValueError(f"IntSerde expects {self.size} bytes, got {len(data)}")
        return int(self._struct.unpack(data)[0])

    def __repr__(self) -> str:
        return f"IntSerde({self.size})"


class JsonSerde(Generic[T]):
    """JSON via msgspec; ``JsonSerde(MyStruct)`` decodes and validates into ``MyStruct``.

    >>> serde = JsonSerde(Order)
    >>> serde.deserialize(serde.serialize(Order(id=1)))
    Order(id=1)
    """

    __slots__ = ("type", "_encoder", "_decoder")

    def __init__(self, type: Any = Any) -> None:  # noqa: A002 - mirrors msgspec's argument name
        self.type = type
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(type)

    def serialize(self, value: T | None) -> bytes | None:
        return None if value is None else self._encoder.encode(value)

    def deserialize(self, data: bytes | None) -> T | None:
        return None if data is None else self._decoder.decode(data)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"JsonSerde({_type_name(self.type)})"


class MsgPackSerde(Generic[T]):
    """MessagePack via msgspec; ``MsgPackSerde(MyStruct)`` decodes and validates into ``MyStruct``."""

    __slots__ = ("type", "_encoder", "_decoder")

    def __init__(self, type: Any = Any) -> None:  # noqa: A002
        self.type = type
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type)

    def serialize(self, value: T | None) -> bytes | None:
        return None if value is None else self._encoder.encode(value)

    def deserialize(self, data: bytes | None) -> T | None:
        return None if data is None else self._decoder.decode(data)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"MsgPackSerde({_type_name(self.type)})"


def _type_name(tp: Any) -> str:
    return "Any" if tp is Any else getattr(tp, "__name__", repr(tp))


#: The serde used when none is given: bytes unchanged.
BYTES: BytesSerde = BytesSerde()


def check_serde(serde: object, what: str) -> Serde[Any]:
    """``serde`` if it has serialize/deserialize, else a TypeError naming ``what``."""
    if not (callable(getattr(serde, "serialize", None)) and callable(getattr(serde, "deserialize", None))):
        raise TypeError(f"{what} must be a serde (with serialize and deserialize), got {serde!r}")
    return serde  # type: ignore[return-value]
