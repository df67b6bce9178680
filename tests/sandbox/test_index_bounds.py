"""find with min/max on the `_id` index crosses type brackets, as MongoDB's index bounds do.

Only the `mongodb_uri` fixtures are used, so this runs unchanged against a real replica set.
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from mongodb_sandbox.errors import ErrorCode

IDS = [1, 2.5, 3, "a", "b", {"x": 1}, b"\x01"]


def test_min_max_cross_type_brackets(mongo_client: MongoClient, mongo_db_name: str):
    collection = mongo_client[mongo_db_name].things
    collection.insert_many([{"_id": value} for value in IDS])
    found = collection.find({}).hint([("_id", 1)]).min([("_id", 2.5)]).max([("_id", {"x": 1})])
    assert [d["_id"] for d in found] == [2.5, 3, "a", "b"]  # min inclusive, max exclusive
    tail = collection.find({}).hint([("_id", 1)]).min([("_id", "b")])
    assert [d["_id"] for d in tail] == ["b", {"x": 1}, b"\x01"]


def test_min_without_hint_is_refused(mongo_client: MongoClient, mongo_db_name: str):
    collection = mongo_client[mongo_db_name].things
    collection.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as caught:  # PyMongo checks too; send the raw command
        mongo_client[mongo_db_name].command("find", "things", min={"_id": 0})
    assert caught.value.code == ErrorCode.MIN_MAX_WITHOUT_HINT
