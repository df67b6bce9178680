"""MongoDB behaviour the mirror relies on, through the real PyMongo driver.

Runs against the session sandbox, or unchanged against a real replica set with MONGODB_TEST_URI.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import (
    DeleteOne,
    InsertOne,
    MongoClient,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from mongodb_sandbox.errors import ErrorCode
from tests.fixtures.mongodb import sandbox_only

Client = MongoClient[dict[str, Any]]


def test_handshake_presents_a_replica_set_primary(mongo_client: Client) -> None:
    hello = mongo_client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["setName"]
    assert hello["maxWireVersion"] >= 17
    assert hello["logicalSessionTimeoutMinutes"] > 0
    assert hello["maxBsonObjectSize"] == 16 * 1024 * 1024
    assert mongo_client.admin.command("ping")["ok"] == 1.0
    assert int(mongo_client.server_info()["version"].split(".")[0]) >= 6


@sandbox_only  # a real URI may carry credentials and TLS options this one would lose
def test_replica_set_discovery_uri_connects(mongo_client: Client) -> None:
    hello = mongo_client.admin.command("hello")
    host = hello["primary"]
    with MongoClient(
        f"mongodb://{host}/?replicaSet={hello['setName']}", serverSelectionTimeoutMS=10_000
    ) as client:
        assert client.admin.command("ping")["ok"] == 1.0
        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"


def test_insert_and_find_round_trip_types(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    doc = {
        "_id": 1,
        "i": Int64(2**40),
        "f": 1.5,
        "s": "é",
        "d": datetime.datetime(2024, 1, 2, 3, 4, 5, 6000),
        "nested": {"a": [1, {"b": None}]},
    }
    coll.insert_one(doc)
    found = coll.find_one({"_id": 1})
    assert found == doc
    assert isinstance(found["i"], Int64)
    result = coll.insert_one({"x": 1})
    assert isinstance(result.inserted_id, ObjectId)
    assert coll.find_one({"x": 1})["_id"] == result.inserted_id


def test_server_generates_id_when_client_omits_it(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    # A raw insert command bypasses the driver's own _id generation.
    db.command("insert", "raw", documents=[{"x": 1}])
    assert isinstance(db.raw.find_one()["_id"], ObjectId)


def test_duplicate_id_is_a_duplicate_key_error(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1})
    with pytest.raises(DuplicateKeyError) as raised:
        coll.insert_one({"_id": 1.0})  # numerically equal _id values collide
    assert raised.value.code == ErrorCode.DUPLICATE_KEY


def test_insert_many_ordered_stops_at_first_error(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    with pytest.raises(BulkWriteError) as raised:
        coll.insert_many([{"_id": 1}, {"_id": 1}, {"_id": 2}])
    details = raised.value.details
    assert details["nInserted"] == 1
    errors = [(e["index"], e["code"]) for e in details["writeErrors"]]
    assert errors == [(1, ErrorCode.DUPLICATE_KEY)]
    assert sorted(d["_id"] for d in coll.find()) == [1]


def test_insert_many_unordered_continues(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    with pytest.raises(BulkWriteError) as raised:
        coll.insert_many([{"_id": 1}, {"_id": 1}, {"_id": 2}, {"_id": 2}], ordered=False)
    details = raised.value.details
    assert details["nInserted"] == 2
    assert [e["index"] for e in details["writeErrors"]] == [1, 3]


def test_bulk_write_mixed_operations(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    result = coll.bulk_write(
        [
            InsertOne({"_id": 1, "v": 1}),
            InsertOne({"_id": 2, "v": 2}),
            UpdateOne({"_id": 1}, {"$set": {"v": 10}}),
            UpdateMany({}, {"$inc": {"n": 1}}),
            ReplaceOne({"_id": 3}, {"v": 3}, upsert=True),
            DeleteOne({"_id": 2}),
        ]
    )
    assert (result.inserted_count, result.matched_count, result.deleted_count) == (2, 3, 1)
    assert result.upserted_ids == {4: 3}
    assert list(coll.find().sort("_id", 1)) == [{"_id": 1, "v": 10, "n": 1}, {"_id": 3, "v": 3}]


def test_update_operators(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1, "a": 1, "b": 2, "tags": ["x", "y"], "old": 5})
    coll.update_one(
        {"_id": 1},
        {
            "$set": {"sub.c": 3},
            "$unset": {"b": ""},
            "$inc": {"a": 2},
            "$push": {"tags": "z"},
            "$rename": {"old": "new"},
            "$currentDate": {"touched": True},
        },
    )
    coll.update_one(
        {"_id": 1}, {"$pull": {"tags": "x"}, "$addToSet": {"set": {"$each": [1, 1, 2]}}}
    )
    doc = coll.find_one({"_id": 1})
    assert isinstance(doc.pop("touched"), datetime.datetime)
    assert doc == {"_id": 1, "a": 3, "tags": ["y", "z"], "sub": {"c": 3}, "new": 5, "set": [1, 2]}


def test_update_many_and_counts(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i, "g": i % 2} for i in range(6)])
    result = coll.update_many({"g": 0}, {"$set": {"flag": True}})
    assert (result.matched_count, result.modified_count) == (3, 3)
    again = coll.update_many({"g": 0}, {"$set": {"flag": True}})
    assert (again.matched_count, again.modified_count) == (3, 0)
    assert coll.count_documents({"flag": True}) == 3


def test_upsert_with_set_on_insert(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    result = coll.update_one(
        {"_id": "k", "kind": "a"}, {"$set": {"v": 1}, "$setOnInsert": {"created": 1}}, upsert=True
    )
    assert result.upserted_id == "k"
    coll.update_one({"_id": "k"}, {"$set": {"v": 2}, "$setOnInsert": {"created": 2}}, upsert=True)
    assert coll.find_one({"_id": "k"}) == {"_id": "k", "kind": "a", "v": 2, "created": 1}


def test_replace_and_delete(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i, "v": i} for i in range(5)])
    assert coll.replace_one({"_id": 1}, {"w": 1}).modified_count == 1
    assert coll.find_one({"_id": 1}) == {"_id": 1, "w": 1}
    assert coll.delete_one({"v": {"$gte": 2}}).deleted_count == 1
    assert coll.delete_many({"v": {"$gte": 2}}).deleted_count == 2
    assert sorted(d["_id"] for d in coll.find()) == [0, 1]


def test_update_cannot_change_id(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as raised:
        coll.update_one({"_id": 1}, {"$set": {"_id": 2}})
    assert raised.value.code == ErrorCode.IMMUTABLE_FIELD


def test_find_one_and_modify_family(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i, "v": i} for i in range(3)])
    before = coll.find_one_and_update({"_id": 1}, {"$inc": {"v": 10}})
    assert before == {"_id": 1, "v": 1}
    after = coll.find_one_and_update(
        {"_id": 1}, {"$inc": {"v": 10}}, return_document=ReturnDocument.AFTER
    )
    assert after == {"_id": 1, "v": 21}
    upserted = coll.find_one_and_update(
        {"_id": 9}, {"$set": {"v": 9}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert upserted == {"_id": 9, "v": 9}
    replaced = coll.find_one_and_replace(
        {"_id": 2}, {"r": 1}, return_document=ReturnDocument.AFTER, projection={"_id": 0}
    )
    assert replaced == {"r": 1}
    assert coll.find_one_and_delete({}, sort=[("_id", -1)]) == {"_id": 9, "v": 9}
    assert coll.find_one_and_delete({"_id": 42}) is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"a": 1}, [1, 5]),
        ({"a": {"$ne": 1}}, [2, 3, 4, 6, 7]),
        ({"a": {"$gt": 1, "$lte": 3}}, [2, 3]),
        ({"a": {"$in": [2, "x"]}}, [2, 6]),
        ({"a": {"$nin": [1, 2, None]}}, [3, 6]),
        ({"a": None}, [4, 7]),
        ({"a": {"$exists": False}}, [7]),
        ({"a": {"$type": "string"}}, [6]),
        ({"$or": [{"a": 3}, {"b.c": "deep"}]}, [3, 4]),
        ({"$and": [{"a": {"$gte": 1}}, {"a": {"$lt": 2}}]}, [1, 5]),
        ({"a": {"$not": {"$gt": 1}}}, [1, 4, 5, 6, 7]),
        ({"b.c": {"$exists": True}}, [4]),
        ({"tags": "red"}, [2]),
        ({"tags": {"$size": 2}}, [2]),
        ({"a": {"$regex": "^x"}}, [6]),
    ],
)
def test_find_filters(
    mongo_client: Client, mongo_db_name: str, query: dict[str, Any], expected: list[int]
) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many(
        [
            {"_id": 1, "a": 1},
            {"_id": 2, "a": 2, "tags": ["red", "blue"]},
            {"_id": 3, "a": 3},
            {"_id": 4, "a": None, "b": {"c": "deep"}},
            {"_id": 5, "a": 1.0},
            {"_id": 6, "a": "x"},
            {"_id": 7},
        ]
    )
    assert [d["_id"] for d in coll.find(query).sort("_id", 1)] == expected


def test_sort_skip_limit_projection(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i, "g": i % 3, "v": i, "x": {"y": i, "z": 0}} for i in range(10)])
    docs = list(coll.find({}, {"v": 1, "x.y": 1}).sort([("g", -1), ("_id", 1)]).skip(1).limit(3))
    assert docs == [
        {"_id": 5, "v": 5, "x": {"y": 5}},
        {"_id": 8, "v": 8, "x": {"y": 8}},
        {"_id": 1, "v": 1, "x": {"y": 1}},
    ]
    excluded = coll.find_one({"_id": 3}, {"x": 0, "_id": 0})
    assert excluded == {"g": 0, "v": 3}
    assert [d["_id"] for d in coll.find().sort("_id", -1).limit(2)] == [9, 8]


def test_batches_get_more_and_kill_cursors(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    db.items.insert_many([{"_id": i} for i in range(25)])
    assert [d["_id"] for d in db.items.find(batch_size=7).sort("_id", 1)] == list(range(25))
    first = db.command("find", "items", batchSize=5)
    cursor_id = first["cursor"]["id"]
    assert len(first["cursor"]["firstBatch"]) == 5 and cursor_id != 0
    more = db.command("getMore", cursor_id, collection="items", batchSize=10)
    assert [d["_id"] for d in more["cursor"]["nextBatch"]] == list(range(5, 15))
    killed = db.command("killCursors", "items", cursors=[cursor_id])
    assert killed["cursorsKilled"] == [cursor_id]
    with pytest.raises(OperationFailure) as raised:
        db.command("getMore", cursor_id, collection="items")
    assert raised.value.code == ErrorCode.CURSOR_NOT_FOUND


def test_counts_and_distinct(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i, "k": i % 3, "arr": [i % 2, 5]} for i in range(10)])
    assert coll.estimated_document_count() == 10
    assert coll.count_documents({}) == 10
    assert coll.count_documents({"k": 1}) == 3
    assert coll.count_documents({}, skip=2, limit=5) == 5
    assert mongo_client[mongo_db_name].command("count", "items", query={"k": 0})["n"] == 4
    assert sorted(coll.distinct("k")) == [0, 1, 2]
    assert sorted(coll.distinct("arr")) == [0, 1, 5]
    assert mongo_client[mongo_db_name].missing.count_documents({}) == 0


def test_aggregate_stages(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i, "k": i % 3, "v": i} for i in range(12)])
    grouped = list(
        coll.aggregate(
            [
                {"$match": {"v": {"$gte": 3}}},
                {"$group": {"_id": "$k", "total": {"$sum": "$v"}, "n": {"$sum": 1}}},
                {"$sort": {"_id": 1}},
            ]
        )
    )
    assert grouped == [
        {"_id": 0, "total": 18, "n": 3},
        {"_id": 1, "total": 21, "n": 3},
        {"_id": 2, "total": 24, "n": 3},
    ]
    projected = list(
        coll.aggregate(
            [{"$sort": {"v": -1}}, {"$skip": 1}, {"$limit": 2}, {"$project": {"v": 1, "_id": 0}}]
        )
    )
    assert projected == [{"v": 10}, {"v": 9}]
    assert list(coll.aggregate([{"$match": {"k": 1}}, {"$count": "n"}])) == [{"n": 4}]
    batched = coll.aggregate([{"$sort": {"_id": 1}}], batchSize=5)
    assert [d["_id"] for d in batched] == list(range(12))


def test_sample_returns_distinct_documents(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i} for i in range(50)])
    sample = [d["_id"] for d in coll.aggregate([{"$sample": {"size": 10}}])]
    assert len(sample) == len(set(sample)) == 10
    assert set(sample) <= set(range(50))
    assert len(list(coll.aggregate([{"$sample": {"size": 80}}]))) == 50


def test_bucket_auto_splits_by_id(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": i} for i in range(100)])
    buckets = list(coll.aggregate([{"$bucketAuto": {"groupBy": "$_id", "buckets": 4}}]))
    assert [b["count"] for b in buckets] == [25, 25, 25, 25]
    assert [(b["_id"]["min"], b["_id"]["max"]) for b in buckets] == [
        (0, 25),
        (25, 50),
        (50, 75),
        (75, 99),
    ]


def test_catalogue_views_and_time_series(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    db.items.insert_many([{"_id": i, "v": i} for i in range(4)])
    db.create_collection("big_items", viewOn="items", pipeline=[{"$match": {"v": {"$gte": 2}}}])
    db.create_collection("metrics", timeseries={"timeField": "t", "metaField": "m"})
    kinds = {c["name"]: c["type"] for c in db.list_collections() if "." not in c["name"]}
    assert kinds == {"items": "collection", "big_items": "view", "metrics": "timeseries"}
    view = next(db.list_collections(filter={"name": "big_items"}))
    assert view["options"]["viewOn"] == "items"
    assert [d["_id"] for d in db.big_items.find().sort("_id", 1)] == [2, 3]
    assert sorted(db.list_collection_names(filter={"type": "collection"})) == ["items"]
    indexes = list(db.items.list_indexes())
    assert [(i["name"], dict(i["key"])) for i in indexes] == [("_id_", {"_id": 1})]
    assert mongo_db_name in mongo_client.list_database_names()
    with pytest.raises(OperationFailure) as raised:
        db.command("create", "items")
    assert raised.value.code == ErrorCode.NAMESPACE_EXISTS


def test_rename_and_drop(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 1})
    db.a.rename("b")
    assert db.list_collection_names() == ["b"]
    assert db.b.find_one() == {"_id": 1}
    db.b.drop()
    assert db.list_collection_names() == []
    db.c.insert_one({"_id": 1})
    mongo_client.drop_database(mongo_db_name)
    assert mongo_db_name not in mongo_client.list_database_names()


def test_list_indexes_of_missing_collection_fails(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    with pytest.raises(OperationFailure) as raised:
        db.command("listIndexes", "nothing")
    assert raised.value.code == ErrorCode.NAMESPACE_NOT_FOUND
    assert list(db.nothing.list_indexes()) == []  # the driver hides NamespaceNotFound


def test_sixteen_megabyte_document_round_trips(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    payload = "x" * (16 * 1024 * 1024 - 100)
    coll.insert_one({"_id": 1, "p": payload})
    coll.insert_many([{"_id": i, "p": "y" * (6 * 1024 * 1024)} for i in range(2, 6)])
    assert len(coll.find_one({"_id": 1})["p"]) == len(payload)
    assert [len(d["p"]) for d in coll.find({"_id": {"$gte": 2}})] == [6 * 1024 * 1024] * 4
