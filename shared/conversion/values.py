"""Per-type value rules: which column kind a BSON value founds, and its Arrow type.

Values arrive as PyMongo decodes them with :data:`DECODE_OPTIONS` (embedded documents left
as ``RawBSONDocument`` so they are rendered to JSON by libbson without a Python round trip).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from bson import Binary, Decimal128, Int64, ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument

# Dates stay integer milliseconds: no datetime range limits, no time-zone interpretation.
DECODE_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument,
    datetime_conversion=DatetimeConversion.DATETIME_MS,
)

INT64 = "int64"
FLOAT64 = "float64"
BOOL = "bool"
STRING = "string"
TIMESTAMP = "timestamp"
DECIMAL = "decimal"
OBJECTID = "objectid"
UUID = "uuid"
BINARY = "binary"
JSON = "json"

ARROW_TYPES: dict[str, pa.DataType] = {
    INT64: pa.int64(),
    FLOAT64: pa.float64(),
    BOOL: pa.bool_(),
    STRING: pa.string(),
    TIMESTAMP: pa.timestamp("us", tz="UTC"),
    DECIMAL: pa.string(),
    OBJECTID: pa.string(),
    UUID: pa.string(),
    BINARY: pa.binary(),
    JSON: pa.string(),
}

# Exact Python types (as decoded) each kind takes without per-value checks.
_SIMPLE_KINDS: dict[type, str] = {
    int: INT64,
    Int64: INT64,
    float: FLOAT64,
    bool: BOOL,
    str: STRING,
    DatetimeMS: TIMESTAMP,
    Decimal128: DECIMAL,
    ObjectId: OBJECTID,
    RawBSONDocument: JSON,
    list: JSON,
}
ACCEPTS: dict[str, frozenset[type]] = {
    kind: frozenset(t for t, k in _SIMPLE_KINDS.items() if k == kind) | {type(None)}
    for kind in ARROW_TYPES
}

# The dates the timestamp column holds, in BSON's int64 milliseconds: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999Z. timestamp[us] itself reaches ±292,000 years, but the readers of the
# table do not: Spark's TimestampType (Fabric's lakehouse, Delta) is documented for
# [0001-01-01T00:00:00Z, 9999-12-31T23:59:59.999999Z], T-SQL's datetime2 (the SQL analytics
# endpoint) for years 1 to 9999, and pyarrow's to_pylist and to_pandas fail on any other year
# (Python's datetime stops at 9999). A date outside goes to the twin column, losslessly.
MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def kind_of(value: Any) -> tuple[str, int | None]:
    """Column kind a non-null value founds, with the binary subtype for ``binary``."""
    t = type(value)
    kind = _SIMPLE_KINDS.get(t)
    if kind is not None:
        return kind, None
    if t is bytes:
        return BINARY, 0
    if t is Binary:
        if value.subtype == 4 and len(value) == 16:
            return UUID, None
        return BINARY, value.subtype
    # Regex, Code, Timestamp, MinKey, MaxKey, DBRef/DBPointer: self-describing Extended JSON.
    return JSON, None


def fits(value: Any, kind: str, subtype: int | None) -> bool:
    """Whether a non-null value is stored in a column of this kind (else it goes to the twin)."""
    got, got_subtype = kind_of(value)
    if got != kind or got_subtype != subtype:
        return False
    if kind == TIMESTAMP:
        return MIN_MS <= int(value) <= MAX_MS
    return True
