"""MongoDB's cross-type BSON ordering, as seen through sorts and range queries.

`TABLE` lists values in strictly increasing MongoDB order with their type bracket. Every
expectation below is derived from it: sorts return the table order, and a range query only
matches values of its bound's bracket (MinKey/MaxKey bounds span all brackets, NaN only ever
matches a NaN bound). Runs against the sandbox or a real replica set alike.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from bson.binary import Binary
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp
from pymongo import MongoClient

from mongodb_sandbox import ordering

Client = MongoClient[dict[str, Any]]
UTC = datetime.UTC

TABLE: list[tuple[str, Any]] = [
    ("minkey", MinKey()),
    ("null", None),
    ("number", float("nan")),
    ("number", float("-inf")),
    ("number", Int64(-(2**62))),
    ("number", -1.5),
    ("number", 0),
    ("number", Decimal128("0.5")),
    ("number", 1),
    ("number", float(2**53)),
    ("number", Int64(2**53 + 1)),
    ("number", float("inf")),
    ("string", ""),
    ("string", "A"),
    ("string", "a"),
    ("string", "ab"),
    ("string", "é"),
    ("object", {}),
    ("object", {"a": 1}),
    ("object", {"b": 0}),
    ("object", {"a": "x"}),
    ("binary", b"b"),
    ("binary", Binary(b"a", 5)),
    ("binary", b"zz"),
    ("objectid", ObjectId("000000000000000000000000")),
    ("objectid", ObjectId("ffffffffffffffffffffffff")),
    ("bool", False),
    ("bool", True),
    ("date", DatetimeMS(-(2**60))),
    ("date", datetime.datetime(1960, 1, 1, tzinfo=UTC)),
    ("date", datetime.datetime(2024, 1, 1, tzinfo=UTC)),
    ("timestamp", Timestamp(1, 1)),
    ("timestamp", Timestamp(1, 2)),
    ("timestamp", Timestamp(2, 0)),
    ("regex", Regex("a")),
    ("regex", Regex("b")),
    ("maxkey", MaxKey()),
]
NAN_INDEX = 2
# Bound values for range queries: index into TABLE (regex bounds are not valid in $gt & co).
BOUND_INDEXES = [0, 1, 6, 8, 13, 18, 22, 24, 26, 29, 32, 36]


def _with_dates(coll: Any) -> Any:
    # Dates outside Python's datetime range only decode with DATETIME_AUTO.
    return coll.with_options(
        codec_options=CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)
    )


def _insert_table(mongo_client: Client, db_name: str) -> Any:
    coll = _with_dates(mongo_client[db_name].get_collection("ordering"))
    coll.insert_many([{"_id": index, "v": value} for index, (_, value) in enumerate(TABLE)])
    return coll


def _expected(op: str, bound_index: int) -> list[int]:
    bracket = TABLE[bound_index][0]
    spans_all = bracket in ("minkey", "maxkey")
    result = []
    for index, (row_bracket, _) in enumerate(TABLE):
        if not spans_all and row_bracket != bracket:
            continue
        if not spans_all and NAN_INDEX in (index, bound_index):
            continue
        if (
            (op == "$gt" and index > bound_index)
            or (op == "$gte" and index >= bound_index)
            or (op == "$lt" and index < bound_index)
            or (op == "$lte" and index <= bound_index)
        ):
            result.append(index)
    return result


def test_sort_follows_cross_type_order(mongo_client: Client, mongo_db_name: str) -> None:
    coll = _insert_table(mongo_client, mongo_db_name)
    ascending = [d["_id"] for d in coll.find({}, {"_id": 1}).sort("v", 1)]
    assert ascending == list(range(len(TABLE)))
    descending = [d["_id"] for d in coll.find({}, {"_id": 1}).sort("v", -1)]
    assert descending == list(reversed(range(len(TABLE))))


def test_id_sort_across_types(mongo_client: Client, mongo_db_name: str) -> None:
    coll = _with_dates(mongo_client[mongo_db_name].ids)
    rows = [(i, v) for i, (bracket, v) in enumerate(TABLE) if bracket != "regex"]
    # Insert in a scrambled order so that insertion order cannot pass for sorted order.
    coll.insert_many([{"_id": v, "i": i} for i, v in reversed(rows)])
    assert [d["i"] for d in coll.find().sort("_id", 1)] == [i for i, _ in rows]
    assert [d["i"] for d in coll.find().sort("_id", -1)] == [i for i, _ in reversed(rows)]


@pytest.mark.parametrize("bound_index", BOUND_INDEXES)
@pytest.mark.parametrize("op", ["$gt", "$gte", "$lt", "$lte"])
def test_range_queries_are_type_bracketed(
    mongo_client: Client, mongo_db_name: str, op: str, bound_index: int
) -> None:
    coll = _insert_table(mongo_client, mongo_db_name)
    bound = TABLE[bound_index][1]
    found = [d["_id"] for d in coll.find({"v": {op: bound}}, {"_id": 1}).sort("_id", 1)]
    assert found == _expected(op, bound_index)


def test_id_ranges_split_at_a_number_cover_only_numbers(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = _with_dates(mongo_client[mongo_db_name].ids)
    values = [v for bracket, v in TABLE if bracket != "regex"]
    coll.insert_many([{"_id": v} for v in values])
    # A naive split [MinKey, 0) + [0, MaxKey] misses every non-number: each bound brackets.
    below_zero = coll.count_documents({"_id": {"$gte": MinKey(), "$lt": 0}})
    from_zero = coll.count_documents({"_id": {"$gte": 0, "$lte": MaxKey()}})
    assert (below_zero, from_zero) == (3, 6)  # NaN is in neither
    # Bounds in different brackets leave nothing both conditions accept.
    assert coll.count_documents({"_id": {"$gte": 0, "$lt": ""}}) == 0
    assert coll.count_documents({"_id": {"$gte": MinKey()}}) == len(values)


def test_numeric_types_compare_by_value(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].numbers
    coll.insert_many(
        [
            {"_id": 1, "v": 1},
            {"_id": 2, "v": Int64(1)},
            {"_id": 3, "v": 1.0},
            {"_id": 4, "v": Decimal128("1.0")},
            {"_id": 5, "v": 2},
            {"_id": 6, "v": "1"},
        ]
    )
    assert [d["_id"] for d in coll.find({"v": 1}).sort("_id", 1)] == [1, 2, 3, 4]
    assert [d["_id"] for d in coll.find({"v": {"$gt": Decimal128("1")}})] == [5]


def test_null_matches_missing_fields(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].nulls
    coll.insert_many([{"_id": 1, "v": None}, {"_id": 2}, {"_id": 3, "v": 0}])
    assert [d["_id"] for d in coll.find({"v": None}).sort("_id", 1)] == [1, 2]
    assert [d["_id"] for d in coll.find({"v": {"$gte": None}}).sort("_id", 1)] == [1, 2]
    assert [d["_id"] for d in coll.find({"v": {"$gt": None}})] == []
    assert [d["_id"] for d in coll.find().sort([("v", 1), ("_id", 1)])] == [1, 2, 3]


def test_arrays_order_after_objects_and_compare_elementwise() -> None:
    # Arrays sort by their elements in find(), so their place is checked on the ordering itself.
    assert ordering.compare({"z": 1}, []) < 0
    assert ordering.compare([], [0]) < 0
    assert ordering.compare([1, 2], [1, 3]) < 0
    assert ordering.compare([2], [1, 3]) > 0
    assert ordering.compare([9], b"") < 0
    assert ordering.compare("x", {}) < 0


def test_find_min_max_on_the_id_index_crosses_brackets(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name].ids
    coll.insert_many([{"_id": v} for v in (1, 5, 7, "a", "z", ObjectId(), None)])
    # Index bounds, unlike range filters, cover everything between them in BSON order.
    found = coll.find().min([("_id", 5)]).max([("_id", "m")]).hint([("_id", 1)])
    assert [d["_id"] for d in found.sort("_id", 1)] == [5, 7, "a"]
    everything_from_null = coll.find().min([("_id", None)]).hint([("_id", 1)])
    assert len(list(everything_from_null)) == 7
