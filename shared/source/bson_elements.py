"""Reading fields out of raw BSON in place, without decoding what is not needed.

A change event's reader needs five small fields and the full document's bytes. Decoding the event
(even lazily, as ``RawBSONDocument`` does) builds Python objects for every field of every event;
this walks the bytes once and returns offsets, so the full document is sliced, never decoded.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from shared.errors import MirrorError

_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_INT64 = struct.Struct("<q")


class BsonType(IntEnum):
    """Element type bytes of the BSON specification (bsonspec.org) that this module reads."""

    DOUBLE = 0x01
    STRING = 0x02
    DOCUMENT = 0x03
    ARRAY = 0x04
    BINARY = 0x05
    UNDEFINED = 0x06
    OBJECT_ID = 0x07
    BOOLEAN = 0x08
    DATETIME = 0x09
    NULL = 0x0A
    REGEX = 0x0B
    DB_POINTER = 0x0C
    JAVASCRIPT = 0x0D
    SYMBOL = 0x0E
    JAVASCRIPT_WITH_SCOPE = 0x0F
    INT32 = 0x10
    TIMESTAMP = 0x11
    INT64 = 0x12
    DECIMAL128 = 0x13
    MIN_KEY = 0xFF
    MAX_KEY = 0x7F


_FIXED_SIZES = {
    BsonType.DOUBLE: 8,
    BsonType.UNDEFINED: 0,
    BsonType.OBJECT_ID: 12,
    BsonType.BOOLEAN: 1,
    BsonType.DATETIME: 8,
    BsonType.NULL: 0,
    BsonType.INT32: 4,
    BsonType.TIMESTAMP: 8,
    BsonType.INT64: 8,
    BsonType.DECIMAL128: 16,
    BsonType.MIN_KEY: 0,
    BsonType.MAX_KEY: 0,
}
# Values that are an int32 length and that many bytes (binary has one subtype byte more).
_COUNTED_EXTRA = {
    BsonType.STRING: 4,
    BsonType.JAVASCRIPT: 4,
    BsonType.SYMBOL: 4,
    BsonType.BINARY: 5,
}
# Values whose leading int32 is their whole size.
_SELF_SIZED = frozenset({BsonType.DOCUMENT, BsonType.ARRAY, BsonType.JAVASCRIPT_WITH_SCOPE})


class Element:
    """Where one element lies in a buffer: its type, where it starts (the type byte), where its
    value starts and ends."""

    __slots__ = ("buffer", "end", "kind", "start", "value")

    def __init__(self, buffer: bytes, kind: int, start: int, value: int, end: int) -> None:
        self.buffer = buffer
        self.kind = kind
        self.start = start
        self.value = value
        self.end = end

    def document(self) -> dict[str, Element]:
        """The fields of an embedded document (or array: names are the indexes)."""
        if self.kind not in (BsonType.DOCUMENT, BsonType.ARRAY):
            raise MirrorError(f"expected a BSON document, found type {self.kind:#04x}")
        return fields(self.buffer, self.value)

    def raw_document(self) -> bytes:
        """The embedded document's own bytes."""
        if self.kind != BsonType.DOCUMENT:
            raise MirrorError(f"expected a BSON document, found type {self.kind:#04x}")
        return self.buffer[self.value : self.end]

    def document_offsets(self) -> list[int]:
        """Where each document of an array of documents starts (a batch of events, say),
        without building an element per entry."""
        if self.kind != BsonType.ARRAY:
            raise MirrorError(f"expected a BSON array, found type {self.kind:#04x}")
        try:
            return _array_documents(self.buffer, self.value, self.end - 1)
        except (IndexError, ValueError, struct.error) as error:
            raise MirrorError(f"malformed BSON array at byte {self.value}: {error}") from None

    def as_single_field_document(self) -> bytes:
        """A document holding just this element, under its own name."""
        element = self.buffer[self.start : self.end]
        return _INT32.pack(len(element) + 5) + element + b"\x00"

    def string(self) -> str:
        if self.kind != BsonType.STRING:
            raise MirrorError(f"expected a BSON string, found type {self.kind:#04x}")
        try:
            return self.buffer[self.value + 4 : self.end - 1].decode()
        except UnicodeDecodeError as error:
            raise MirrorError(f"a BSON string at byte {self.value} is not UTF-8: {error}") from None

    def int32(self) -> int:
        if self.kind != BsonType.INT32:
            raise MirrorError(f"expected a BSON int32, found type {self.kind:#04x}")
        return int(_INT32.unpack_from(self.buffer, self.value)[0])

    def int64(self) -> int:
        if self.kind != BsonType.INT64:
            raise MirrorError(f"expected a BSON int64, found type {self.kind:#04x}")
        return int(_INT64.unpack_from(self.buffer, self.value)[0])

    def timestamp_seconds(self) -> int:
        """A timestamp's seconds (its high half; the low half is the increment)."""
        if self.kind != BsonType.TIMESTAMP:
            raise MirrorError(f"expected a BSON timestamp, found type {self.kind:#04x}")
        return int(_UINT32.unpack_from(self.buffer, self.value + 4)[0])


def fields(buffer: bytes, offset: int = 0) -> dict[str, Element]:
    """The top-level elements of the document at ``offset`` in ``buffer``, by name.

    Raises MirrorError when the bytes are not a well-framed document.
    """
    try:
        return _walk(buffer, offset)
    except (IndexError, ValueError, struct.error) as error:
        raise MirrorError(f"malformed BSON document at byte {offset}: {error}") from None


def _walk(buffer: bytes, offset: int) -> dict[str, Element]:
    size = _INT32.unpack_from(buffer, offset)[0]
    last = offset + size - 1  # the document's closing zero byte
    if size < 5 or last >= len(buffer) or buffer[last] != 0:
        raise ValueError("bad document length")
    found: dict[str, Element] = {}
    position = offset + 4
    while position < last:
        kind = buffer[position]
        name_end = buffer.index(0, position + 1, last)
        value = name_end + 1
        fixed = _FIXED_SIZES.get(kind)  # type: ignore[call-overload]
        if fixed is not None:
            end = value + fixed
        elif kind in _SELF_SIZED:
            end = value + _INT32.unpack_from(buffer, value)[0]
        elif kind in _COUNTED_EXTRA:
            end = value + _COUNTED_EXTRA[kind] + _INT32.unpack_from(buffer, value)[0]  # type: ignore[index]
        elif kind == BsonType.REGEX:
            end = buffer.index(0, buffer.index(0, value, last) + 1, last) + 1
        elif kind == BsonType.DB_POINTER:
            end = value + 4 + _INT32.unpack_from(buffer, value)[0] + 12
        else:
            raise ValueError(f"unknown element type {kind:#04x}")
        if end > last or end < value:
            raise ValueError("an element runs past its document")
        name = buffer[position + 1 : name_end].decode()
        found[name] = Element(buffer, kind, position, value, end)
        position = end
    if position != last:
        raise ValueError("elements overrun the document")
    return found


def _array_documents(buffer: bytes, start: int, last: int) -> list[int]:
    offsets: list[int] = []
    position = start + 4
    unpack = _INT32.unpack_from
    while position < last:
        if buffer[position] != BsonType.DOCUMENT:
            raise ValueError(f"an array entry of type {buffer[position]:#04x}, not a document")
        value = buffer.index(0, position + 1, last) + 1
        size = unpack(buffer, value)[0]
        if size < 5 or value + size > last:
            raise ValueError("an array entry runs past its array")
        offsets.append(value)
        position = value + size
    if position != last:
        raise ValueError("entries overrun the array")
    return offsets
