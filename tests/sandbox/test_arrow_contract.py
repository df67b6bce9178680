"""PyMongoArrow (MongoDB's C BSON→Arrow reader) against the server, as the snapshot reader uses it.

Runs against the session sandbox, or unchanged against a real replica set with MONGODB_TEST_URI.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from bson.objectid import ObjectId
from pymongo import MongoClient
from pymongoarrow.api import Schema, aggregate_arrow_all, find_arrow_all

Client = MongoClient[dict[str, Any]]


def test_find_arrow_all_with_and_without_schema(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i, "v": i * 1.5, "s": f"n{i}"} for i in range(1000)])
    table = find_arrow_all(coll, {"_id": {"$gte": 10, "$lt": 20}}, sort=[("_id", 1)])
    assert table.num_rows == 10
    assert table.column("_id").to_pylist() == list(range(10, 20))
    assert table.column("s").to_pylist()[0] == "n10"
    typed = find_arrow_all(coll, {}, schema=Schema({"_id": pa.int64(), "v": pa.float64()}))
    assert typed.num_rows == 1000
    assert typed.schema.names == ["_id", "v"]
    assert sum(typed.column("v").to_pylist()) == sum(i * 1.5 for i in range(1000))


def test_aggregate_arrow_all(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"k": i % 4, "v": 1} for i in range(100)])
    table = aggregate_arrow_all(
        coll, [{"$group": {"_id": "$k", "n": {"$sum": "$v"}}}, {"$sort": {"_id": 1}}]
    )
    assert table.column("_id").to_pylist() == [0, 1, 2, 3]
    assert table.column("n").to_pylist() == [25, 25, 25, 25]


def test_object_ids_reach_arrow(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    ids = coll.insert_many([{"v": i} for i in range(5)]).inserted_ids
    table = find_arrow_all(coll, {}, sort=[("_id", 1)])
    assert table.column("_id").to_pylist() == sorted(ids)
    assert all(isinstance(v, ObjectId) for v in table.column("_id").to_pylist())
