"""What a change stream says an update changed (`updateDescription`), and updates written as an
aggregation pipeline.

Runs against the session sandbox, or unchanged against a real replica set (6.1+) with
MONGODB_TEST_URI. The expectations come from the server's source (see mongodb_sandbox/deltas.py):
an update with operators is described by what each modifier did, an update with a pipeline by the
diff of the two documents, arrays element by element in both.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient, ReturnDocument
from pymongo.change_stream import ChangeStream
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from mongodb_sandbox.errors import ErrorCode

Client = MongoClient[dict[str, Any]]
AWAIT_MS = 100
MAX_ATTEMPTS = 50


def next_event(stream: ChangeStream[Any]) -> dict[str, Any]:
    for _ in range(MAX_ATTEMPTS):
        event = stream.try_next()
        if event is not None:
            return event
    raise AssertionError("no change event arrived")


def described(
    coll: Collection[dict[str, Any]],
    document: dict[str, Any],
    update: Any,
    *,
    expanded: bool = False,
) -> dict[str, Any]:
    """Insert `document`, apply `update` to it, and return the update's change event."""
    coll.insert_one(document)
    options: dict[str, Any] = {"show_expanded_events": True} if expanded else {}
    with coll.watch(max_await_time_ms=AWAIT_MS, **options) as stream:
        coll.update_one({"_id": document["_id"]}, update)
        return next_event(stream)


def fields(event: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    assert event["operationType"] == "update"
    description = event["updateDescription"]
    return (
        description["updatedFields"],
        sorted(description["removedFields"]),
        description["truncatedArrays"],
    )


# -- updates with operators --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "update", "updated", "removed"),
    [
        # $push onto a non-empty array logs only what it appended, at its index.
        ({"arr": [1, 2, 3]}, {"$push": {"arr": 4}}, {"arr.3": 4}, []),
        ({"arr": [1]}, {"$push": {"arr": {"$each": [2, 3]}}}, {"arr.1": 2, "arr.2": 3}, []),
        # ...but onto an empty array, or with $sort/$slice/$position, the whole array.
        ({"arr": []}, {"$push": {"arr": 1}}, {"arr": [1]}, []),
        ({"arr": [3, 1]}, {"$push": {"arr": {"$each": [2], "$sort": 1}}}, {"arr": [1, 2, 3]}, []),
        ({"arr": [2]}, {"$push": {"arr": {"$each": [1], "$position": 0}}}, {"arr": [1, 2]}, []),
        # $addToSet appends only the new elements.
        ({"arr": [1, 2]}, {"$addToSet": {"arr": {"$each": [2, 3]}}}, {"arr.2": 3}, []),
        # $pull and $pop rewrite the array: logged whole, never as a truncation.
        ({"arr": [1, 2, 3]}, {"$pull": {"arr": 2}}, {"arr": [1, 3]}, []),
        ({"arr": [1, 2, 3]}, {"$pop": {"arr": 1}}, {"arr": [1, 2]}, []),
        # A $set of a whole array or sub-document is logged whole, even a shorter array.
        ({"arr": [1, 2, 3]}, {"$set": {"arr": [1, 2]}}, {"arr": [1, 2]}, []),
        ({"sub": {"x": 1}}, {"$set": {"sub": {"x": 1, "y": 2}}}, {"sub": {"x": 1, "y": 2}}, []),
        # An element by index; $unset of an element sets it to null.
        ({"arr": [1, 2, 3]}, {"$inc": {"arr.1": 5}}, {"arr.1": 7}, []),
        ({"arr": [1, 2, 3]}, {"$unset": {"arr.0": ""}}, {"arr.0": None}, []),
        # A created path is logged at its first new field, whole.
        ({"n": {}}, {"$set": {"n.m.o": 1, "n.m.p": 2}}, {"n.m": {"o": 1, "p": 2}}, []),
        # A modifier that changes nothing logs nothing; $rename is an unset and a set.
        ({"a": 1, "b": 2}, {"$set": {"a": 1, "b": 3}}, {"b": 3}, []),
        ({"a": 1, "b": 2}, {"$rename": {"a": "c"}}, {"c": 1}, ["a"]),
    ],
)
def test_operator_updates_describe_what_each_modifier_did(
    mongo_client: Client,
    mongo_db_name: str,
    document: dict[str, Any],
    update: dict[str, Any],
    updated: dict[str, Any],
    removed: list[str],
) -> None:
    coll = mongo_client[mongo_db_name].items
    event = described(coll, {"_id": 1, **document}, update)
    assert fields(event) == (updated, removed, [])


def test_disambiguated_paths_give_array_indexes_as_ints(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name].items
    event = described(coll, {"_id": 1, "a": [{"1": 1}]}, {"$set": {"a.0.1": 2}}, expanded=True)
    description = event["updateDescription"]
    assert description["updatedFields"] == {"a.0.1": 2}
    path = description["disambiguatedPaths"]["a.0.1"]
    assert path == ["a", 0, "1"]
    assert isinstance(path[1], int) and isinstance(path[2], str)


def test_only_ambiguous_paths_are_disambiguated(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    # A numeric field name after the first part is ambiguous; a numeric first field and an
    # array index alone are not.
    event = described(
        coll,
        {"_id": 1, "7": 0, "arr": [1, 2], "obj": {"1": 1}},
        {"$set": {"7": 1, "arr.1": 3, "obj.1": 2}},
        expanded=True,
    )
    description = event["updateDescription"]
    assert description["updatedFields"] == {"7": 1, "arr.1": 3, "obj.1": 2}
    assert description["disambiguatedPaths"] == {"obj.1": ["obj", "1"]}


# -- updates with a pipeline -------------------------------------------------------------------


def test_pipeline_update_reports_a_truncated_array(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name].items
    event = described(
        coll,
        {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3]},
        [{"$set": {"array": ["foo", {"a": "bar"}]}}],
    )
    assert fields(event) == ({}, [], [{"field": "array", "newSize": 2}])
    assert coll.find_one({"_id": 1}) == {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}]}


def test_pipeline_update_reports_changed_and_appended_elements(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name].items
    rows = [{"k": k, "name": f"a longer name for row {k}", "v": "old"} for k in range(3)]
    changed = [dict(row) for row in rows]
    changed[1]["v"] = "new"
    small = [{"v": "a"}, {"v": "b"}]
    event = described(
        coll,
        {"_id": 1, "numbers": [1, 2, 3, 4, 5, 6, 7, 8], "rows": rows, "small": small, "gone": 1},
        [
            {
                "$set": {
                    "numbers": [1, 2, 9, 4, 5, 6, 7, 8, 10],
                    "rows": changed,
                    "small": [{"v": "a"}, {"v": "c"}],
                }
            },
            {"$unset": "gone"},
        ],
    )
    updated, removed, truncated = fields(event)
    # An element's own diff is used only when smaller than the element: {v: "c"} is not.
    assert updated == {
        "numbers.2": 9,
        "numbers.8": 10,
        "rows.1.v": "new",
        "small.1": {"v": "c"},
    }
    assert removed == ["gone"]
    assert truncated == []


def test_pipeline_update_rewriting_most_of_a_document_is_a_replace(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1, "a": "x" * 20, "b": "y" * 20, "c": 3})
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.update_one({"_id": 1}, [{"$replaceWith": {"z": "$c"}}])
        event = next_event(stream)
    # The diff is no smaller than the new document, so the server logs a replacement.
    assert event["operationType"] == "replace"
    assert event["fullDocument"] == {"_id": 1, "z": 3}


def test_pipeline_stages_and_expressions(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1, "sub": {"x": 1}, "rows": [{"a": 1}, {"a": 2}], "drop": 0, "n": 5})
    coll.update_one(
        {"_id": 1},
        [
            # A nested document adds to the embedded document (to each one of an array).
            {"$set": {"sub": {"y": "$n"}, "rows.b": True, "copy": "$sub.x"}},
            {"$set": {"drop": "$$REMOVE", "literal": {"$literal": "$n"}}},
            {"$project": {"n": 0}},
        ],
    )
    assert coll.find_one({"_id": 1}) == {
        "_id": 1,
        "sub": {"x": 1, "y": 5},
        "rows": [{"a": 1, "b": True}, {"a": 2, "b": True}],
        "copy": 1,
        "literal": "$n",
    }
    coll.update_one({"_id": 1}, [{"$replaceRoot": {"newRoot": {"only": "$copy"}}}])
    assert coll.find_one({"_id": 1}) == {"_id": 1, "only": 1}


def test_pipeline_upsert_and_find_and_modify(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    pad = "p" * 100  # a document large enough that a one-field diff is smaller than it
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        result = coll.update_one(
            {"_id": 7, "k": "key"}, [{"$set": {"v": "$k", "pad": pad}}], upsert=True
        )
        assert result.upserted_id == 7
        after = coll.find_one_and_update(
            {"_id": 7},
            [{"$set": {"v": "changed"}}],
            return_document=ReturnDocument.AFTER,
        )
        insert, update = next_event(stream), next_event(stream)
    assert insert["operationType"] == "insert"
    assert insert["fullDocument"] == {"_id": 7, "k": "key", "v": "key", "pad": pad}
    assert after == {"_id": 7, "k": "key", "v": "changed", "pad": pad}
    assert fields(update) == ({"v": "changed"}, [], [])


@pytest.mark.parametrize(
    ("stage", "code"),
    [
        ({"$match": {}}, ErrorCode.INVALID_OPTIONS),
        ({"$group": {"_id": None}}, ErrorCode.INVALID_OPTIONS),
        ({"$noSuchStage": {}}, ErrorCode.UNRECOGNIZED_PIPELINE_STAGE),
        ({"$replaceWith": "$missing"}, ErrorCode.NEW_ROOT_NOT_OBJECT),
    ],
)
def test_pipeline_update_refusals(
    mongo_client: Client, mongo_db_name: str, stage: dict[str, Any], code: int
) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1, "a": 1})
    with pytest.raises(OperationFailure) as failure:
        coll.update_one({"_id": 1}, [stage])
    assert failure.value.code == code
    assert coll.find_one({"_id": 1}) == {"_id": 1, "a": 1}


def test_pipeline_update_cannot_change_the_id(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1, "a": 1})
    with pytest.raises(OperationFailure) as failure:
        coll.update_one({"_id": 1}, [{"$set": {"_id": 2}}])
    assert failure.value.code == ErrorCode.IMMUTABLE_FIELD
