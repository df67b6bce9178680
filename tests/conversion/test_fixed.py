"""One test per BSON type: column type, stored value, and recovery."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any

import bson
import pyarrow as pa
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef

from shared.conversion import ROW_MARKER, BatchConverter, RowMarker, key_only, recover_document

from .helpers import DECODE, doc_norm

OID = ObjectId("65a1b2c3d4e5f60718293a4b")


def convert(value: Any) -> tuple[pa.Table, BatchConverter]:
    conv = BatchConverter()
    return conv.convert([bson.encode({"_id": OID, "v": value})]), conv


def roundtrip(value: Any) -> None:
    raw = bson.encode({"_id": OID, "v": value})
    conv = BatchConverter()
    table = conv.convert([raw])
    [row] = recover_document(table, conv.schema)
    assert row["_id"] == OID
    assert doc_norm(row) == doc_norm(bson.decode(raw, DECODE))


@pytest.mark.parametrize(
    ("value", "arrow_type", "stored"),
    [
        (1.5, pa.float64(), 1.5),
        (math.inf, pa.float64(), math.inf),
        (-math.inf, pa.float64(), -math.inf),
        (7, pa.int64(), 7),
        (Int64(2**63 - 1), pa.int64(), 2**63 - 1),
        (Int64(-(2**63)), pa.int64(), -(2**63)),
        (Int64(2**53 + 1), pa.int64(), 2**53 + 1),
        (True, pa.bool_(), True),
        ("héllo", pa.string(), "héllo"),
        (Decimal128("9.99"), pa.string(), "9.99"),
        (Decimal128("NaN"), pa.string(), "NaN"),
        (Decimal128("Infinity"), pa.string(), "Infinity"),
        (Decimal128("-0"), pa.string(), "-0"),
        (Decimal128("1E+6144"), pa.string(), str(Decimal128("1E+6144"))),
        (OID, pa.string(), str(OID)),
        (Binary(uuid.UUID(int=1).bytes, 4), pa.string(), str(uuid.UUID(int=1))),
        (b"\x00\x01", pa.binary(), b"\x00\x01"),
        (Binary(b"\x01", 128), pa.binary(), b"\x01"),
        (Binary(b"0123456789abcdef", 3), pa.binary(), b"0123456789abcdef"),
        ({"a": 1}, pa.string(), '{ "a" : 1 }'),
        ([1, "x"], pa.string(), '[ 1, "x" ]'),
    ],
)
def test_fixed_mapping(value: Any, arrow_type: pa.DataType, stored: Any) -> None:
    table, _ = convert(value)
    assert table.schema.field("v").type == arrow_type
    assert table.column("v").to_pylist() == [stored]
    roundtrip(value)


def test_nan_kept() -> None:
    table, _ = convert(math.nan)
    assert table.column("v").null_count == 0
    assert math.isnan(table.column("v")[0].as_py())
    roundtrip(math.nan)


FIRST_DAY_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@pytest.mark.parametrize("ms", [0, -(10**13), 10**13, FIRST_DAY_MS, LAST_MS])
def test_dates_in_timestamp_range(ms: int) -> None:
    table, _ = convert(DatetimeMS(ms))
    assert table.schema.field("v").type == pa.timestamp("us", tz="UTC")
    assert table.column("v").cast(pa.int64()).to_pylist() == [ms * 1000]
    # Common readers take every date the column holds (issue #16 item 20).
    moment = table.column("v").to_pylist()[0]
    assert moment == dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    assert table.to_pandas()["v"][0].to_pydatetime() == moment
    roundtrip(DatetimeMS(ms))


@pytest.mark.parametrize(
    "ms",
    [LAST_MS + 1, FIRST_DAY_MS - 1, 9 * 10**15, -9 * 10**15, 2**63 - 1, -(2**63), 10**16],
    ids=["year 10000", "year 0", "year 287,000", "year -283,000", "max", "min", "10^16"],
)
def test_dates_beyond_years_1_to_9999_go_to_twin(ms: int) -> None:
    conv = BatchConverter()
    table = conv.convert(
        [bson.encode({"_id": 1, "v": DatetimeMS(0)}), bson.encode({"_id": 2, "v": DatetimeMS(ms)})]
    )
    assert table.column("v").to_pylist()[1] is None
    assert table.column("v__json").to_pylist()[1] == f'{{ "$date" : {{ "$numberLong" : "{ms}" }} }}'
    assert recover_document(table, conv.schema)[1]["v"] == DatetimeMS(ms)
    # Python and pandas read the table (a year-10000 timestamp would make them raise).
    assert table.column("v").to_pylist()[0] is not None
    assert table.to_pandas()["v"].isna().tolist() == [False, True]


@pytest.mark.parametrize(
    ("ms", "date_json"),
    [
        (0, '"1970-01-01T00:00:00Z"'),
        (253402300799999, '"9999-12-31T23:59:59.999Z"'),
        (253402300800000, '{ "$numberLong" : "253402300800000" }'),
        (253402300800001, '{ "$numberLong" : "253402300800001" }'),
        (-1, '{ "$numberLong" : "-1" }'),
    ],
)
def test_nested_dates_are_iso_text_only_for_years_1970_to_9999(ms: int, date_json: str) -> None:
    table, _ = convert({"d": DatetimeMS(ms)})
    assert table.column("v").to_pylist() == [f'{{ "d" : {{ "$date" : {date_json} }} }}']
    roundtrip({"d": DatetimeMS(ms)})


@pytest.mark.parametrize(
    "value",
    [
        Regex("^a.*b$", "imsx"),
        Code("function() { return x; }"),
        Code("return y", {"y": 1}),
        Timestamp(1_700_000_000, 7),
        MinKey(),
        MaxKey(),
        DBRef("coll", OID, "db"),
    ],
)
def test_extended_json_types(value: Any) -> None:
    table, _ = convert(value)
    assert table.schema.field("v").type == pa.string()
    assert table.column("v")[0].as_py().startswith("{")
    roundtrip(value)


def test_deep_nesting_and_large_document() -> None:
    deep: Any = 1
    for _ in range(98):
        deep = {"d": deep}
    roundtrip(deep)
    big = "x" * (16 * 1024 * 1024 - 200)
    roundtrip(big)


def test_field_names() -> None:
    conv = BatchConverter()
    doc = {
        "_id": 1,
        "": 1,
        "a.b": 2,
        "$x": 3,
        "A": 4,
        "a": 5,
        ROW_MARKER: 6,
        "c__json": 7,
        "_ID": 8,
    }
    table = conv.convert([bson.encode(doc)])
    assert table.column_names == [
        "_id",
        "_empty_",
        "a_b",
        "_x",
        "A",
        "a_2",
        "__rowMarker___",
        "c__json_",
        "_ID_",
        ROW_MARKER,
    ]
    folded = [n.casefold() for n in table.column_names]
    assert len(set(folded)) == len(folded)
    [row] = recover_document(table, conv.schema)
    assert doc_norm(row) == doc_norm(doc)


def test_mixed_types_use_twin_and_never_change_type() -> None:
    conv = BatchConverter()
    t1 = conv.convert([bson.encode({"_id": 1, "n": 1})])
    t2 = conv.convert([bson.encode({"_id": 2, "n": 2.5}), bson.encode({"_id": 3, "n": "x"})])
    assert t1.schema.field("n").type == t2.schema.field("n").type == pa.int64()
    assert t2.column("n__json").to_pylist() == ["2.5", '"x"']
    assert t2.column_names[-1] == ROW_MARKER


def test_delete_rows_and_markers() -> None:
    conv = BatchConverter()
    full = bson.encode({"_id": OID, "a": 1, "b": "x"})
    markers = [RowMarker.UPSERT, RowMarker.DELETE]
    table = conv.convert_rows([full, key_only(full)], markers=markers)
    assert table.column(ROW_MARKER).to_pylist() == markers
    assert table.column("_id").to_pylist() == [str(OID), str(OID)]
    assert table.column("a").to_pylist() == [1, None]
    assert all(f.nullable for f in table.schema)


def test_concatenated_buffer_equals_sequence() -> None:
    raws = [bson.encode({"_id": i, "v": i}) for i in range(5)]
    assert BatchConverter().convert(b"".join(raws)).equals(BatchConverter().convert(raws))
