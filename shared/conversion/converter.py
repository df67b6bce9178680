"""Raw BSON batches → Arrow tables in the landing-zone layout.

Per batch, each document's top level is decoded once by PyMongo's C decoder with embedded
documents left raw; each column is then built from a Python list in one step, checking
types per column (a set of the batch's value types), not per value, in the common case.
Everything rendered as JSON (embedded documents, arrays, exotic types, twin values,
Decimal128 text) goes to libbson in one call per column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import bson
import pyarrow as pa
import pyarrow.compute as pc
from bson import Binary
from bson.raw_bson import RawBSONDocument, _inflate_bson

from . import _libbson
from .id_text import id_text
from .names import KEY_COLUMN
from .schema import FieldSpec, TableSchema
from .values import (
    ACCEPTS,
    ARROW_TYPES,
    BINARY,
    DECIMAL,
    DECODE_OPTIONS,
    JSON,
    MAX_MS,
    MIN_MS,
    OBJECTID,
    TIMESTAMP,
    UUID,
    fits,
    kind_of,
)

RawDocs = bytes | bytearray | memoryview | Sequence[bytes | RawBSONDocument]

_NONE = type(None)
_DECIMAL_PREFIX = len('{ "$numberDecimal" : "')
_DECIMAL_SUFFIX = len('" }')


def split_documents(raw_docs: RawDocs) -> list[bytes]:
    """One ``bytes`` per document, from a concatenated buffer or a sequence of documents."""
    if isinstance(raw_docs, bytes | bytearray | memoryview):
        buf = bytes(raw_docs)
        out = []
        pos, end = 0, len(buf)
        while pos < end:
            size = int.from_bytes(buf[pos : pos + 4], "little")
            if size < 5 or pos + size > end or buf[pos + size - 1] != 0:
                raise ValueError(f"truncated or corrupt BSON document at byte {pos}")
            out.append(buf[pos : pos + size])
            pos += size
        return out
    return [bytes(d.raw) if isinstance(d, RawBSONDocument) else bytes(d) for d in raw_docs]


def _json_element(value: Any) -> bytes:
    if type(value) is RawBSONDocument:
        return _libbson.element(b"\x03", bytes(value.raw))
    # bson.encode picks the BSON type from the decoded value; slice off the wrapper document.
    return bson.encode({"v": value})[4:-1]


def json_texts(values: Iterable[Any]) -> list[str]:
    """Relaxed Extended JSON of each value (as decoded with ``DECODE_OPTIONS``)."""
    return _libbson.to_json_texts([_json_element(v) for v in values])


def _json_column(values: list[Any]) -> list[str | None]:
    present = [v for v in values if v is not None]
    if not present:
        return [None] * len(values)
    texts = iter(json_texts(present))
    return [None if v is None else next(texts) for v in values]


def _decimal_column(values: list[Any]) -> list[str | None]:
    # libbson prints Decimal128 far faster than Decimal128.__str__; same IEEE 754 text.
    present = [v for v in values if v is not None]
    elements = [_libbson.element(b"\x13", v.bid) for v in present]
    texts = iter(_libbson.to_json_texts(elements))
    return [None if v is None else next(texts)[_DECIMAL_PREFIX:-_DECIMAL_SUFFIX] for v in values]


def _uuid_text(b: Binary) -> str:
    h = bytes(b).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_array(kind: str, values: list[Any]) -> pa.Array:
    """Arrow array of a column kind from values that all fit it (or are None)."""
    if kind == JSON:
        return pa.array(_json_column(values), pa.string())
    if kind == DECIMAL:
        return pa.array(_decimal_column(values), pa.string())
    if kind == OBJECTID:
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    if kind == UUID:
        return pa.array([None if v is None else _uuid_text(v) for v in values], pa.string())
    if kind == BINARY:
        return pa.array([None if v is None else bytes(v) for v in values], pa.binary())
    if kind == TIMESTAMP:
        ms = pa.array([None if v is None else int(v) for v in values], pa.int64())
        return pc.multiply_checked(ms, 1000).cast(ARROW_TYPES[TIMESTAMP])
    return pa.array(values, ARROW_TYPES[kind])


def _all_fit(spec: FieldSpec, values: list[Any]) -> bool:
    if not set(map(type, values)) <= ACCEPTS[spec.kind]:
        return False
    if spec.kind == TIMESTAMP:
        ms = [int(v) for v in values if v is not None]
        return not ms or (MIN_MS <= min(ms) and max(ms) <= MAX_MS)
    return True


class BatchConverter:
    """Converts batches of raw documents, growing ``schema``; keeps no rows between calls."""

    def __init__(self, schema: TableSchema | None = None) -> None:
        self.schema = schema if schema is not None else TableSchema()

    def convert(self, raw_docs: RawDocs, marker: int = 4) -> pa.Table:
        """Every document as one row, all with the same row marker (4 = upsert)."""
        docs = split_documents(raw_docs)
        return self._convert(docs, pa.array([marker] * len(docs), pa.int32()))

    def convert_rows(self, raw_docs: RawDocs, markers: Sequence[int]) -> pa.Table:
        """One row per document with its own marker (4 upsert with the full document,
        2 delete with a document holding only ``_id``)."""
        docs = split_documents(raw_docs)
        if len(docs) != len(markers):
            raise ValueError(f"{len(docs)} documents but {len(markers)} row markers")
        return self._convert(docs, pa.array(markers, pa.int32()))

    def _convert(self, raws: list[bytes], markers: pa.Array) -> pa.Table:
        docs = [_inflate_bson(r, DECODE_OPTIONS) for r in raws]
        ids = []
        for d in docs:
            if KEY_COLUMN not in d:
                raise ValueError("a document without _id cannot be mirrored (no key)")
            ids.append(d[KEY_COLUMN])
        arrays: dict[str, pa.Array] = {KEY_COLUMN: pa.array(map(id_text, ids), pa.string())}
        # Fields in order of first appearance across the batch.
        for field in dict.fromkeys(chain.from_iterable(docs)):
            if field == KEY_COLUMN:
                continue
            values = [d.get(field) for d in docs]
            spec = self.schema.get(field)
            if spec is None:
                first = next((v for v in values if v is not None), None)
                if first is None:
                    continue  # null everywhere: same as missing until a typed value appears
                spec = self.schema.add_field(field, *kind_of(first))
            if _all_fit(spec, values):
                arrays[spec.column] = build_array(spec.kind, values)
                continue
            misfit = [v is not None and not fits(v, spec.kind, spec.binary_subtype) for v in values]
            main = [None if bad else v for v, bad in zip(values, misfit, strict=True)]
            twin = [v if bad else None for v, bad in zip(values, misfit, strict=True)]
            arrays[spec.column] = build_array(spec.kind, main)
            if any(misfit):
                spec = self.schema.add_twin(field)
                arrays[spec.twin] = build_array(JSON, twin)
        n = len(docs)
        columns = [arrays[KEY_COLUMN]]
        for name, arrow_type in self.schema.column_types().items():
            arr = arrays.get(name)
            columns.append(arr if arr is not None else pa.nulls(n, arrow_type))
        columns.append(markers)
        return pa.Table.from_arrays(columns, schema=self.schema.arrow_schema())


def key_only(document_key: bytes | RawBSONDocument | dict[str, Any]) -> bytes:
    """BSON of ``{_id: ...}`` alone, for a delete row (marker 2): every other column NULL."""
    if isinstance(document_key, bytes | RawBSONDocument):
        raw = document_key.raw if isinstance(document_key, RawBSONDocument) else document_key
        doc = _inflate_bson(raw, DECODE_OPTIONS)
    else:
        doc = document_key
    return bson.encode({KEY_COLUMN: doc[KEY_COLUMN]})
