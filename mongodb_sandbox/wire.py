"""MongoDB wire protocol framing: OP_MSG both ways, legacy OP_QUERY in and OP_REPLY out.

Only what drivers send is parsed: OP_MSG with a body section and document sequences (which stay
as raw BSON, so inserted documents are stored exactly as the client encoded them), and the
OP_QUERY `hello`/`isMaster` some drivers still use for the first handshake.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from mongodb_sandbox import storage

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013
HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_CHECKSUM_PRESENT = 1
MORE_TO_COME = 1 << 1


class ProtocolError(Exception):
    """A message that cannot be parsed; the server answers with an error reply."""


@dataclass
class Request:
    request_id: int
    op_code: int
    body: dict[str, Any] = field(default_factory=dict)
    more_to_come: bool = False


def _cstring(data: memoryview, offset: int) -> tuple[str, int]:
    # Names here (namespaces, sequence identifiers) are short: search a bounded window.
    window = bytes(data[offset : offset + 1024])
    end = window.find(b"\x00")
    if end < 0:
        raise ProtocolError("unterminated string")
    return window[:end].decode("utf-8", errors="replace"), offset + end + 1


def _document_size(data: memoryview, offset: int) -> int:
    if offset + 4 > len(data):
        raise ProtocolError("truncated document")
    (size,) = _INT32.unpack_from(data, offset)
    if size < 5 or offset + size > len(data):
        raise ProtocolError("invalid document size")
    return size


def _decode(data: memoryview) -> dict[str, Any]:
    try:
        return storage.decode(bytes(data))
    except (bson.errors.InvalidBSON, ValueError, OverflowError) as error:
        raise ProtocolError(f"invalid BSON: {error}") from error


def parse(request_id: int, op_code: int, payload: memoryview) -> Request:
    """Parse a message payload (everything after the 16-byte header)."""
    if op_code == OP_MSG:
        return _parse_msg(request_id, payload)
    if op_code == OP_QUERY:
        return _parse_query(request_id, payload)
    raise ProtocolError(f"unsupported opcode {op_code}")


def _parse_msg(request_id: int, payload: memoryview) -> Request:
    if len(payload) < 5:
        raise ProtocolError("OP_MSG too short")
    (flags,) = _UINT32.unpack_from(payload, 0)
    end = len(payload) - (4 if flags & _CHECKSUM_PRESENT else 0)
    offset = 4
    body: dict[str, Any] | None = None
    sequences: dict[str, list[RawBSONDocument]] = {}
    while offset < end:
        kind = payload[offset]
        offset += 1
        if kind == 0:
            size = _document_size(payload, offset)
            body = _decode(payload[offset : offset + size])
            offset += size
        elif kind == 1:
            section_size = _document_size(payload, offset)
            section_end = offset + section_size
            identifier, cursor = _cstring(payload, offset + 4)
            documents = []
            while cursor < section_end:
                size = _document_size(payload, cursor)
                documents.append(
                    RawBSONDocument(bytes(payload[cursor : cursor + size]), storage.RAW_OPTIONS)
                )
                cursor += size
            sequences[identifier] = documents
            offset = section_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise ProtocolError("OP_MSG without a body section")
    body.update(sequences)
    return Request(request_id, OP_MSG, body, more_to_come=bool(flags & MORE_TO_COME))


def _parse_query(request_id: int, payload: memoryview) -> Request:
    namespace, offset = _cstring(payload, 4)
    offset += 8  # numberToSkip, numberToReturn
    size = _document_size(payload, offset)
    query = _decode(payload[offset : offset + size])
    if "$query" in query:
        query = dict(query["$query"])
    if not namespace.endswith(".$cmd"):
        raise ProtocolError("OP_QUERY is only supported for commands")
    query.setdefault("$db", namespace[: -len(".$cmd")])
    return Request(request_id, OP_QUERY, query)


def frame_reply(request: Request, reply: bytes, request_id: int) -> bytes:
    """Frame an encoded reply document as the answer to `request`."""
    if request.op_code == OP_QUERY:
        # responseFlags=8 (AwaitCapable), cursorID, startingFrom, numberReturned.
        prefix = struct.pack("<iqii", 8, 0, 0, 1)
        op_code = OP_REPLY
    else:
        prefix = b"\x00\x00\x00\x00\x00"
        op_code = OP_MSG
    length = HEADER.size + len(prefix) + len(reply)
    return HEADER.pack(length, request_id, request.request_id, op_code) + prefix + reply
