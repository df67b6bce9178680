"""Comparison helpers: BSON values up to the documented equivalences."""

from __future__ import annotations

import math
from typing import Any

import bson
import pyarrow as pa
from bson import Binary, Int64, Regex
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

DECODE: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)


def norm(value: Any) -> Any:
    """Comparable form: int32≡int64, RawBSONDocument≡dict, bytes≡Binary subtype 0, NaN≡NaN."""
    t = type(value)
    if isinstance(value, RawBSONDocument):
        return norm(bson.decode(value.raw, DECODE))
    if t is dict:
        return ("doc", [(k, norm(v)) for k, v in value.items()])
    if t is list:
        return ("arr", [norm(v) for v in value])
    if t is int or t is Int64:
        return ("int", int(value))
    if t is float:
        return ("float", "nan" if math.isnan(value) else value.hex())
    if t is bytes:
        return ("bin", 0, value)
    if t is Binary:
        return ("bin", value.subtype, bytes(value))
    if t is Regex:
        return ("regex", value.pattern, int(value.flags))
    return (t.__name__, repr(value))


def doc_norm(doc: dict[str, Any]) -> Any:
    """A top-level document: null fields dropped (null ≡ missing), _id excluded."""
    return {k: norm(v) for k, v in doc.items() if v is not None and k != "_id"}


def same_table(left: pa.Table, right: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN and -0.0 told from 0.0.

    ``pa.Table.equals`` has it the other way round on both counts, so a table holding a NaN
    never equals itself and a sign lost from a zero goes unnoticed. Timestamps are compared as
    their integers: Python's datetime cannot hold all of them.
    """
    if left.schema != right.schema:
        return False
    # The converter's columns are flat (nested values are JSON text), so only top-level types.
    plain = pa.schema(
        [
            field.with_type(pa.int64()) if pa.types.is_timestamp(field.type) else field
            for field in left.schema
        ]
    )
    return norm(left.cast(plain).to_pylist()) == norm(right.cast(plain).to_pylist())
