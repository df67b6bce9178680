"""Inverse of the conversion: the BSON values of each row, for audits and tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from bson import Binary, Decimal128, ObjectId, json_util
from bson.codec_options import DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.json_util import RELAXED_JSON_OPTIONS, JSONOptions

from .id_text import parse_id_text
from .names import KEY_COLUMN, OVERFLOW_COLUMN
from .schema import FieldSpec, TableSchema
from .values import BINARY, DECIMAL, JSON, OBJECTID, TIMESTAMP, UUID

JSON_OPTIONS: JSONOptions = RELAXED_JSON_OPTIONS.with_options(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)


def load_json(text: str) -> Any:
    """A value from the relaxed Extended JSON this package writes (JSON columns, twins)."""
    return json_util.loads(text, json_options=JSON_OPTIONS)


def _decoder(spec: FieldSpec) -> Callable[[Any], Any]:
    if spec.kind == JSON:
        return load_json
    if spec.kind == DECIMAL:
        return Decimal128
    if spec.kind == OBJECTID:
        return ObjectId
    if spec.kind == UUID:
        return lambda text: Binary(uuid.UUID(text).bytes, 4)
    if spec.kind == BINARY:
        subtype = spec.binary_subtype or 0
        return lambda b: b if subtype == 0 else Binary(b, subtype)
    if spec.kind == TIMESTAMP:
        return lambda us: DatetimeMS(us // 1000)
    return lambda v: v


def recover_document(table: pa.Table, schema: TableSchema) -> list[dict[str, Any]]:
    """Each row's document: ``_id`` first, then every non-null field (null ≡ missing)."""
    cols: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols[name] = col.to_pylist()
    rows: list[dict[str, Any]] = [{KEY_COLUMN: parse_id_text(t)} for t in cols[KEY_COLUMN]]
    for spec in schema.fields.values():
        decode = _decoder(spec)
        main = cols.get(spec.column)
        twin = cols.get(spec.twin) if spec.has_twin else None
        for i, row in enumerate(rows):
            if main is not None and main[i] is not None:
                row[spec.field] = decode(main[i])
            elif twin is not None and twin[i] is not None:
                row[spec.field] = load_json(twin[i])
    overflow = cols.get(OVERFLOW_COLUMN)
    if overflow is not None:
        for row, text in zip(rows, overflow, strict=True):
            if text is not None:
                row.update(load_json(text))  # the fields without a column of their own
    return rows
