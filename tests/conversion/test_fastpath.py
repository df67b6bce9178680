"""The vectorised fast path (``_scan``) against the per-document path: same table, same schema."""

from __future__ import annotations

import math
from typing import Any

import bson
import pyarrow as pa
import pytest
from bson import Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.conversion import BatchConverter, TableSchema, _scan, recover_document

from .helpers import doc_norm, norm, same_table
from .test_properties import (
    dates,
    decimals,
    doubles,
    field_names,
    id_values,
    int32,
    int64,
    keys,
    oids,
)
from .test_properties import texts as text_values

# Only types the fast path walks, so most generated documents take it.
fast_scalars = st.one_of(
    st.none(), st.booleans(), int32, int64, doubles, text_values, oids, dates, decimals
)
fast_values = st.recursive(
    fast_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=6,
)
fast_documents = st.dictionaries(field_names, fast_values, max_size=5)


def _both(batches: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast, slow = BatchConverter(), BatchConverter()
    fast_tables = [fast.convert(b) for b in batches]
    with monkeypatch.context() as m:
        m.setattr(_scan, "MAX_SHAPES", 0)  # every document takes the per-document path
        slow_tables = [slow.convert(b) for b in batches]
    return (fast_tables, fast.schema), (slow_tables, slow.schema)


def _encode(rows: list[tuple[Any, dict[str, Any]]]) -> bytes:
    return b"".join(bson.encode({"_id": i, **d}) for i, d in rows)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.one_of(oids, text_values, id_values), fast_documents), max_size=6),
        min_size=1,
        max_size=4,
    )
)
@example([[(1, {"a": math.nan, "b": -0.0}), (2, {"a": -math.nan, "b": 0.0})]])
@example([[(1, {"a": DatetimeMS(-62_135_596_800_001)})]])  # before year 1: no Python datetime
def test_fast_path_equals_per_document_path(
    batches: list[list[tuple[Any, dict[str, Any]]]],
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        (fast_tables, fast_schema), (slow_tables, slow_schema) = _both(
            [_encode(rows) for rows in batches], mp
        )
    assert fast_schema.to_json() == slow_schema.to_json()
    for f, s in zip(fast_tables, slow_tables, strict=True):
        assert f.schema == s.schema
        assert same_table(f, s), (f.to_pylist(), s.to_pylist())


def test_table_comparison_holds_nan_equal_and_tells_signed_zeros_apart() -> None:
    def table(value: float) -> pa.Table:
        return pa.table({"x": [value, 1.0]})

    assert same_table(table(math.nan), table(math.nan))
    assert not same_table(table(-0.0), table(0.0))
    assert not same_table(table(math.nan), table(1.0))
    assert not same_table(table(1.0), pa.table({"x": pa.array([1.0, 1.0], pa.float32())}))


def _orders(n: int) -> bytes:
    return b"".join(
        bson.encode(
            {
                "_id": ObjectId(),
                "n": Int64(i),
                "x": float(i) / 3,
                "when": DatetimeMS(1_700_000_000_000 + i),
                "price": Decimal128(f"{i}.50"),
                "tags": ["a", i],
                "addr": {"city": "X", "zip": str(i)},
            }
        )
        for i in range(n)
    )


def test_uniform_batch_takes_the_fast_path() -> None:
    buf = _orders(50)
    starts, ends = _scan.doc_offsets(buf)
    groups, slow = _scan.find_groups(buf, starts, ends)
    assert len(groups) == 1 and len(groups[0].rows) == 50 and len(slow) == 0


def test_mistyped_values_go_to_the_twin_not_coerced() -> None:
    docs = [
        {"_id": 1, "n": 5, "x": 1.5, "ok": True},
        {"_id": 2, "n": 2.5, "x": 7, "ok": 1},  # double in int64, int in float64, int in bool
        {"_id": 3, "n": Int64(2**62), "x": math.nan, "ok": False},
    ]
    conv = BatchConverter()
    table = conv.convert(b"".join(bson.encode(d) for d in docs))
    rows = table.to_pylist()
    assert [r["n"] for r in rows] == [5, None, 2**62]
    assert rows[1]["n__json"] == "2.5"
    assert rows[1]["x__json"] == "7" and rows[1]["ok__json"] == "1"
    assert math.isnan(rows[2]["x"])  # NaN is a value, not a null
    for doc, back in zip(docs, recover_document(table, conv.schema), strict=True):
        assert doc_norm(back) == doc_norm(doc)


def test_dates_outside_timestamp_range_go_to_the_twin() -> None:
    docs = [{"_id": i, "d": DatetimeMS(ms)} for i, ms in enumerate([0, 2**62, -(2**62), 5])]
    conv = BatchConverter()
    table = conv.convert(b"".join(bson.encode(d) for d in docs))
    assert table.column("d").null_count == 2
    assert table.column("d__json").null_count == 2
    for doc, back in zip(docs, recover_document(table, conv.schema), strict=True):
        assert norm(back["d"]) == norm(doc["d"])


def test_string_ids_that_look_tagged_or_like_objectids_are_tagged() -> None:
    ids = ["plain", "~x", "0123456789abcdef01234567", "0123456789ABCDEF01234567"]
    table = BatchConverter().convert(b"".join(bson.encode({"_id": i}) for i in ids))
    assert table.column("_id").to_pylist() == [
        "plain",
        "~s:~x",
        "~s:0123456789abcdef01234567",
        "0123456789ABCDEF01234567",
    ]


def test_more_shapes_than_tried_fall_back_per_document() -> None:
    docs = [{"_id": f"k{i}", f"f{i}": i} for i in range(_scan.MAX_SHAPES * 2)]
    buf = b"".join(bson.encode(d) for d in docs)
    starts, ends = _scan.doc_offsets(buf)
    groups, slow = _scan.find_groups(buf, starts, ends)
    assert len(groups) == _scan.MAX_SHAPES and len(slow) == _scan.MAX_SHAPES
    conv = BatchConverter(TableSchema())
    table = conv.convert(buf)
    assert table.column_names[1:-1] == [f"f{i}" for i in range(len(docs))]
    assert [r[f"f{i}"] for i, r in enumerate(table.to_pylist())] == list(range(len(docs)))


def test_invalid_utf8_in_a_fast_string_is_refused() -> None:
    good = bson.encode({"_id": "k1", "s": "ab"})
    bad = bytearray(bson.encode({"_id": "k2", "s": "ab"}))
    bad[bad.index(b"ab")] = 0xFF
    with pytest.raises((ValueError, bson.errors.InvalidBSON)):
        BatchConverter().convert(good + bytes(bad))


def test_corrupt_length_prefix_is_not_trusted() -> None:
    doc = bytearray(bson.encode({"_id": 1, "s": "abc", "t": 1}))
    doc[doc.index(b"abc") - 4] = 40  # string length pointing past the document
    with pytest.raises(Exception):  # noqa: B017
        BatchConverter().convert(bytes(doc))


def test_sequence_input_and_memoryview_match_buffer() -> None:
    raws = [bson.encode({"_id": i, "v": i}) for i in range(5)]
    a = BatchConverter().convert(b"".join(raws))
    b = BatchConverter().convert(raws)
    c = BatchConverter().convert(memoryview(b"".join(raws)))
    assert a.equals(b) and a.equals(c)
    assert pa.compute.sum(a.column("v")).as_py() == 10
