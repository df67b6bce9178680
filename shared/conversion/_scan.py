"""Vectorised top-level BSON walk: the fast path of :class:`BatchConverter`.

Most batches hold few document *shapes* (the sequence of top-level element types and keys).
For a shape proposed by walking one document in Python, every other document is checked
against it with numpy over the whole batch buffer at once: at each computed offset the type
byte, key and NUL must be there, each length prefix must stay inside the document, strings
and embedded documents must end in NUL, booleans must be 0/1, and the last element must end
exactly at the document's terminating NUL. A document that passes was walked exactly as a
BSON decoder would walk it, so every value's position and type are known without decoding
anything into Python; a document that fails is tried against the next shape, and after a few
shapes falls back to the per-document path in ``converter``. Nothing is trusted that was not
checked: there is no coercion (a double stays a double, NaN stays NaN).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import _libbson

DOUBLE, STRING, DOCUMENT, ARRAY, OBJECTID, BOOL, DATE, NULL, INT32, INT64, DECIMAL = (
    0x01,
    0x02,
    0x03,
    0x04,
    0x07,
    0x08,
    0x09,
    0x0A,
    0x10,
    0x12,
    0x13,
)
TIMESTAMP = 0x11
_FIXED = {DOUBLE: 8, OBJECTID: 12, BOOL: 1, DATE: 8, NULL: 0, INT32: 4, INT64: 8, DECIMAL: 16}
# Change events (shared/source/change_events.py) carry a timestamp too; rows never reach the
# converter's fast path with one, as it has no column kind for it.
EVENT_FIXED = {**_FIXED, TIMESTAMP: 8}
_PREFIXED = {STRING, DOCUMENT, ARRAY}
MAX_SHAPES = 8  # shapes tried per batch before the remaining documents take the slow path

Shape = tuple[tuple[int, bytes], ...]


@dataclass
class Field:
    """One top-level field of a group: its BSON type, and per row its value's bytes."""

    type: int
    start: np.ndarray  # value offset in the batch buffer (int64)
    size: np.ndarray | int  # value length in bytes (per row, or one for fixed-size types)


@dataclass
class Group:
    """Rows (ascending batch indices) that share one shape."""

    rows: np.ndarray
    keys: list[str]
    fields: dict[str, Field]


def doc_offsets(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the concatenated documents in ``buf`` (sizes checked)."""
    starts = []
    pos, end = 0, len(buf)
    from_bytes = int.from_bytes
    while pos < end:
        size = from_bytes(buf[pos : pos + 4], "little")
        if size < 5 or pos + size > end or buf[pos + size - 1] != 0:
            raise ValueError(f"truncated or corrupt BSON document at byte {pos}")
        starts.append(pos)
        pos += size
    s = np.array(starts, dtype=np.int64)
    e = np.empty_like(s)
    e[:-1] = s[1:]
    if len(s):
        e[-1] = end
    return s, e


def _shape(buf: bytes, start: int, end: int, fixed: Mapping[int, int] = _FIXED) -> Shape | None:
    """The shape of one document if every top-level element has a fast-path type."""
    pos, last = start + 4, end - 1
    out: list[tuple[int, bytes]] = []
    seen: set[bytes] = set()
    while pos < last:
        t = buf[pos]
        k_end = buf.find(b"\x00", pos + 1, last)
        if k_end < 0:
            return None
        key = buf[pos + 1 : k_end]
        v = k_end + 1
        if t in fixed:
            size = fixed[t]
        elif t in _PREFIXED and v + 4 <= last:
            size = int.from_bytes(buf[v : v + 4], "little", signed=True) + (4 if t == STRING else 0)
        else:
            return None
        if size < 0 or v + size > last or key in seen:
            return None
        seen.add(key)
        out.append((t, key))
        pos = v + size
    return tuple(out) if pos == last else None


def _at(u8: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # Rows that failed a check are pointed at offset 0 before any gather, and rows still in
    # the running only at bytes inside their document; a shape's headers come from a document
    # of this buffer, so even offset 0 plus a header stays inside it.
    return u8[idx]


def _read(u8: np.ndarray, pos: np.ndarray, width: int, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(_at(u8, pos[:, None] + np.arange(width))).view(dtype).ravel()


def verify(
    u8: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    shape: Shape,
    fixed: Mapping[int, int] = _FIXED,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray | int]]]:
    """Which documents have ``shape`` exactly, and each element's value offset and size."""
    last = ends - 1
    ok = _read(u8, starts, 4, "<i4").astype(np.int64) == ends - starts
    pos = starts + 4
    spans: list[tuple[np.ndarray, np.ndarray | int]] = []
    for t, key in shape:
        header = np.frombuffer(bytes([t]) + key + b"\x00", np.uint8)
        ok &= pos + len(header) <= last
        pos = np.where(ok, pos, 0)
        ok &= (_at(u8, pos[:, None] + np.arange(len(header))) == header).all(axis=1)
        v = np.where(ok, pos + len(header), 0)
        size: np.ndarray | int
        if t in fixed:
            size = fixed[t]
            ok &= v + size <= last
            if t == BOOL:
                ok &= _at(u8, np.where(ok, v, 0)) <= 1
        else:
            ok &= v + 4 <= last
            v = np.where(ok, v, 0)
            n = _read(u8, v, 4, "<i4").astype(np.int64)
            size = n + 4 if t == STRING else n
            ok &= (n >= 1) if t == STRING else (n >= 5)
            ok &= v + size <= last
            ok &= _at(u8, np.where(ok, v + size - 1, 0)) == 0
        spans.append((v, size))
        pos = v + size
    ok &= pos == last
    return ok, spans


def find_groups(
    buf: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    fixed: Mapping[int, int] = _FIXED,
    accepts: Callable[[Shape], bool] | None = None,
) -> tuple[list[Group], np.ndarray]:
    """Rows grouped by verified shape, and the rows left for the per-document path.

    ``fixed`` gives the fixed-size element types the walk accepts; ``accepts`` whether a shape
    can take the fast path at all (by default: rows, whose ``_id`` must be an ObjectId or a
    string).
    """
    accepts = accepts or _id_supported
    u8 = np.frombuffer(buf, np.uint8)
    rest = np.arange(len(starts))
    groups: list[Group] = []
    slow: list[int] = []
    for _ in range(MAX_SHAPES):
        if not len(rest):
            break
        first = int(rest[0])
        shape = _shape(buf, int(starts[first]), int(ends[first]), fixed)
        keys = _keys(shape) if shape is not None else None
        if shape is None or keys is None or not accepts(shape):
            slow.append(first)
            rest = rest[1:]
            continue
        ok, spans = verify(u8, starts[rest], ends[rest], shape, fixed)
        if not ok[0]:
            slow.append(first)
            rest = rest[1:]
            continue
        fields = {
            k: Field(t, v[ok], size if isinstance(size, int) else size[ok])
            for k, (t, _), (v, size) in zip(keys, shape, spans, strict=True)
        }
        groups.append(Group(rest[ok], keys, fields))
        rest = rest[~ok]
    return groups, np.sort(np.concatenate([np.array(slow, dtype=np.int64), rest]))


def _keys(shape: Shape) -> list[str] | None:
    try:
        return [k.decode("utf-8") for _, k in shape]
    except UnicodeDecodeError:
        return None


def _id_supported(shape: Shape) -> bool:
    return any(k == b"_id" and t in (OBJECTID, STRING) for t, k in shape)


# --- Column builders from verified spans ------------------------------------------------------

_HEX = np.array([list(f"{i:02x}".encode()) for i in range(256)], dtype=np.uint8)


def gather(u8: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated bytes of each [start, start+length) and Arrow int32 offsets."""
    offsets = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    if total >= 2**31:
        raise ValueError("batch too large for one string column")
    idx = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1] - start, length)
    return u8[idx], offsets.astype(np.int32)


def strings(u8: np.ndarray, f: Field) -> pa.Array:
    data, offsets = gather(u8, f.start + 4, np.asarray(f.size) - 5)
    arr = pa.Array.from_buffers(
        pa.string(), len(f.start), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    arr.validate(full=True)  # UTF-8, as the decoder would insist
    return arr


def object_ids(u8: np.ndarray, f: Field) -> pa.Array:
    n = len(f.start)
    hexed = _HEX[u8[f.start[:, None] + np.arange(12)]].reshape(n * 24)
    offsets = np.arange(0, n * 24 + 1, 24, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(hexed)])


def numbers(u8: np.ndarray, f: Field) -> np.ndarray:
    if f.type == INT32:
        return _read(u8, f.start, 4, "<i4").astype(np.int64)
    if f.type == DOUBLE:
        return _read(u8, f.start, 8, "<f8")
    if f.type == BOOL:
        return u8[f.start].astype(np.bool_)
    return _read(u8, f.start, 8, "<i8")  # int64, date


def timestamp_seconds(u8: np.ndarray, f: Field) -> np.ndarray:
    """A timestamp's seconds: its high four bytes (the low four are the increment)."""
    return _read(u8, f.start + 4, 4, "<u4")


_DECIMAL_TEXT = re.compile(r'"\$numberDecimal" : "([^"]*)"')


def decimals(u8: np.ndarray, f: Field) -> pa.Array:
    """Exact Decimal128 text, rendered by libbson for the whole column in one call."""
    n = len(f.start)
    if not n:
        return pa.array([], pa.string())
    elements = np.empty((n, 19), dtype=np.uint8)
    elements[:, 0], elements[:, 1], elements[:, 2] = DECIMAL, ord("v"), 0
    elements[:, 3:] = u8[f.start[:, None] + np.arange(16)]
    texts = _DECIMAL_TEXT.findall(_libbson.render_document(elements.tobytes()))
    if len(texts) != n:
        raise ValueError("Decimal128 rendering mismatch")
    return pa.array(texts, pa.string())


def json_array(buf: bytes, f: Field, rows: np.ndarray | None = None) -> pa.Array:
    """Relaxed Extended JSON of each value (of the selected rows), rendered from its bytes."""
    start, size = f.start, f.size
    if rows is not None:
        start = start[rows]
        size = size if isinstance(size, int) else size[rows]
    begin = start.tolist()
    end = (start + size).tolist()
    return _libbson.to_json_array(
        [buf[a:b] for a, b in zip(begin, end, strict=True)], bytes([f.type]) + b"v\x00"
    )
