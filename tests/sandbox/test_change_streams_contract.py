"""Change-stream behaviour the mirror relies on, through PyMongo's ChangeStream.

Runs against the session sandbox, or unchanged against a real replica set with MONGODB_TEST_URI.
Events are awaited with a bounded loop of `try_next` (each waits at most `AWAIT_MS`).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from bson.timestamp import Timestamp
from pymongo import MongoClient
from pymongo.change_stream import ChangeStream
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern

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


def events(stream: ChangeStream[Any], count: int) -> list[dict[str, Any]]:
    return [next_event(stream) for _ in range(count)]


def test_event_shapes(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 0})  # the collection exists before the stream opens
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1, "a": 1, "b": {"c": 1}})
        coll.update_one({"_id": 1}, {"$set": {"b.c": 2, "d": [1]}, "$unset": {"a": ""}})
        coll.replace_one({"_id": 1}, {"z": 1})
        coll.delete_one({"_id": 1})
        insert, update, replace, delete = events(stream, 4)
    assert insert["operationType"] == "insert"
    assert insert["fullDocument"] == {"_id": 1, "a": 1, "b": {"c": 1}}
    assert insert["ns"] == {"db": mongo_db_name, "coll": "items"}
    assert insert["documentKey"] == {"_id": 1}
    assert update["operationType"] == "update"
    description = update["updateDescription"]
    assert description["updatedFields"] == {"b.c": 2, "d": [1]}
    assert description["removedFields"] == ["a"]
    assert description["truncatedArrays"] == []
    assert "fullDocument" not in update or update["fullDocument"] is None
    assert replace["operationType"] == "replace"
    assert replace["fullDocument"] == {"_id": 1, "z": 1}
    assert delete["operationType"] == "delete"
    assert delete["documentKey"] == {"_id": 1}
    all_events = [insert, update, replace, delete]
    times = [e["clusterTime"] for e in all_events]
    assert all(isinstance(t, Timestamp) for t in times)
    assert times == sorted(times) and len(set(times)) == 4
    assert all(isinstance(e["wallTime"], datetime.datetime) for e in all_events)
    tokens = [e["_id"]["_data"] for e in all_events]
    assert all(isinstance(t, str) for t in tokens)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_update_lookup_reads_the_current_document(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_many([{"_id": 1, "v": 0}, {"_id": 2, "v": 0}])
    with coll.watch(full_document="updateLookup", max_await_time_ms=AWAIT_MS) as stream:
        coll.update_one({"_id": 1}, {"$set": {"v": 1}})
        coll.update_one({"_id": 1}, {"$set": {"v": 2}})
        coll.update_one({"_id": 2}, {"$set": {"v": 1}})
        coll.delete_one({"_id": 2})
        first, second, third, delete = events(stream, 4)
    # Looked up when read, not as of the event: the first update already shows v=2.
    assert first["fullDocument"] == {"_id": 1, "v": 2}
    assert second["fullDocument"] == {"_id": 1, "v": 2}
    assert third["fullDocument"] is None
    assert delete["operationType"] == "delete"


def test_resume_after_a_stored_token(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 0})
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_many([{"_id": i} for i in range(1, 5)])
        first_two = events(stream, 2)
        token = stream.resume_token
    assert token == first_two[-1]["_id"]
    with coll.watch(resume_after=token, max_await_time_ms=AWAIT_MS) as resumed:
        assert [e["documentKey"]["_id"] for e in events(resumed, 2)] == [3, 4]


def test_post_batch_token_advances_while_idle(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    db.watched.insert_one({"_id": 0})
    with db.watched.watch(max_await_time_ms=AWAIT_MS) as stream:
        db.watched.insert_one({"_id": 1})
        assert next_event(stream)["documentKey"] == {"_id": 1}
        after_event = stream.resume_token
        # Activity elsewhere moves the oplog on while this collection stays idle.
        db.elsewhere.insert_many([{"_id": i} for i in range(3)])
        assert stream.try_next() is None
        idle_token = stream.resume_token
    assert idle_token is not None and after_event is not None
    assert idle_token["_data"] > after_event["_data"]
    db.watched.insert_one({"_id": 2})
    with db.watched.watch(resume_after=idle_token, max_await_time_ms=AWAIT_MS) as resumed:
        assert next_event(resumed)["documentKey"] == {"_id": 2}
        assert resumed.try_next() is None


def test_start_at_operation_time(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 0})
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_many([{"_id": 1}, {"_id": 2}])
        first, _ = events(stream, 2)
    with coll.watch(
        start_at_operation_time=first["clusterTime"], max_await_time_ms=AWAIT_MS
    ) as replay:
        assert [e["documentKey"]["_id"] for e in events(replay, 2)] == [1, 2]


def test_drop_invalidates_and_only_start_after_resumes(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 0})
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1})
        coll.drop()
        insert, drop, invalidate = events(stream, 3)
        assert not stream.alive
    assert insert["operationType"] == "insert"
    assert drop["operationType"] == "drop"
    assert drop["ns"] == {"db": mongo_db_name, "coll": "items"}
    assert invalidate["operationType"] == "invalidate"
    with pytest.raises(OperationFailure), coll.watch(resume_after=invalidate["_id"]) as failed:
        failed.try_next()
    coll.insert_one({"_id": 2})
    with coll.watch(start_after=invalidate["_id"], max_await_time_ms=AWAIT_MS) as restarted:
        event = next_event(restarted)
    assert (event["operationType"], event["documentKey"]) == ("insert", {"_id": 2})


def test_rename_emits_rename_then_invalidate(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].before
    coll.insert_one({"_id": 0})
    with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        coll.rename("after")
        rename, invalidate = events(stream, 2)
    assert rename["operationType"] == "rename"
    assert rename["ns"] == {"db": mongo_db_name, "coll": "before"}
    assert rename["to"] == {"db": mongo_db_name, "coll": "after"}
    assert invalidate["operationType"] == "invalidate"


def test_database_stream_and_drop_database(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0})
    with db.watch(max_await_time_ms=AWAIT_MS) as stream:
        db.a.insert_one({"_id": 1})
        db.b.insert_one({"_id": 2})
        first, second = events(stream, 2)
        assert [(e["ns"]["coll"], e["documentKey"]["_id"]) for e in (first, second)] == [
            ("a", 1),
            ("b", 2),
        ]
        mongo_client.drop_database(mongo_db_name)
        kinds: list[str] = []
        while not kinds or kinds[-1] != "invalidate":
            kinds.append(next_event(stream)["operationType"])
    assert kinds[-2:] == ["dropDatabase", "invalidate"]
    assert sorted(kinds[:-2]) == ["drop", "drop"]


def test_cluster_stream_with_match_and_project(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    pipeline = [
        {"$match": {"ns.db": mongo_db_name, "operationType": "insert"}},
        {"$project": {"operationType": 1, "ns": 1, "fullDocument.v": 1}},
    ]
    with mongo_client.watch(pipeline, max_await_time_ms=AWAIT_MS) as stream:
        db.one.insert_one({"_id": 1, "v": 1, "w": 1})
        db.one.update_one({"_id": 1}, {"$set": {"v": 2}})
        db.two.insert_one({"_id": 2, "v": 3})
        first, second = events(stream, 2)
    assert first == {
        "_id": first["_id"],
        "operationType": "insert",
        "ns": {"db": mongo_db_name, "coll": "one"},
        "fullDocument": {"v": 1},
    }
    assert second["ns"]["coll"] == "two"


def test_project_removing_the_token_fails(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 0})
    with coll.watch([{"$project": {"_id": 0}}], max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1})
        with pytest.raises(OperationFailure) as raised:
            next_event(stream)
    assert raised.value.code == ErrorCode.CHANGE_STREAM_FATAL_ERROR


def test_large_events_split_into_fragments(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 1, "big": "a" * (9 * 1024 * 1024)})
    split = [{"$changeStreamSplitLargeEvent": {}}]
    options: dict[str, Any] = {"full_document": "updateLookup", "max_await_time_ms": AWAIT_MS}
    with coll.watch(split, **options) as stream, coll.watch(**options) as unsplit:
        # fullDocument (15 MiB) plus updatedFields (6 MiB) exceed 16 MiB as one event.
        coll.update_one({"_id": 1}, {"$set": {"more": "b" * (6 * 1024 * 1024)}})
        first = next_event(stream)
        fragments = [first, *events(stream, first["splitEvent"]["of"] - 1)]
        with pytest.raises(OperationFailure) as raised:
            next_event(unsplit)
    assert raised.value.code == ErrorCode.BSON_OBJECT_TOO_LARGE
    assert [f["splitEvent"]["fragment"] for f in fragments] == list(range(1, len(fragments) + 1))
    assert len(fragments) >= 2
    event: dict[str, Any] = {}
    for fragment in fragments:
        event.update({k: v for k, v in fragment.items() if k not in ("_id", "splitEvent")})
    assert event["operationType"] == "update"
    assert len(event["fullDocument"]["more"]) == 6 * 1024 * 1024
    assert len(event["updateDescription"]["updatedFields"]["more"]) == 6 * 1024 * 1024
    tokens = [f["_id"]["_data"] for f in fragments]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def _aggregate(db: Any, spec: dict[str, Any], *stages: Any, batch: int = 101) -> dict[str, Any]:
    command = {
        "aggregate": 1,
        "pipeline": [{"$changeStream": spec}, *stages],
        "cursor": {"batchSize": batch},
    }
    reply: dict[str, Any] = db.command(command)["cursor"]
    return reply


def _get_more(db: Any, cursor: dict[str, Any], batch: int) -> dict[str, Any]:
    command = {
        "getMore": cursor["id"],
        "collection": "$cmd.aggregate",
        "batchSize": batch,
        "maxTimeMS": AWAIT_MS,
    }
    reply: dict[str, Any] = db.command(command)["cursor"]
    return reply


def test_a_batch_ending_at_drop_database_still_delivers_the_invalidate(
    mongo_client: Client, mongo_db_name: str
) -> None:
    # A real server returns the invalidate as an ordinary document of the next batch, then
    # closes the cursor when the batch asks for more (getmore_cmd.cpp, ChangeStreamInvalidated).
    db = mongo_client[mongo_db_name]
    db.items.insert_one({"_id": 0})
    cursor = _aggregate(db, {}, batch=0)
    mongo_client.drop_database(mongo_db_name)
    first = _get_more(db, cursor, 2)
    assert [e["operationType"] for e in first["nextBatch"]] == ["drop", "dropDatabase"]
    assert first["id"] != 0
    second = _get_more(db, {"id": first["id"]}, 2)
    assert [e["operationType"] for e in second["nextBatch"]] == ["invalidate"]
    assert second["id"] == 0
    assert second["postBatchResumeToken"] == second["nextBatch"][0]["_id"]


def test_an_invalidate_filling_a_batch_closes_the_cursor_on_the_next_get_more(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.items.insert_one({"_id": 0})
    cursor = _aggregate(db, {}, batch=0)
    mongo_client.drop_database(mongo_db_name)
    first = _get_more(db, cursor, 3)
    assert [e["operationType"] for e in first["nextBatch"]] == [
        "drop",
        "dropDatabase",
        "invalidate",
    ]
    assert first["id"] != 0
    last = _get_more(db, {"id": first["id"]}, 3)
    assert last["nextBatch"] == [] and last["id"] == 0
    assert last["postBatchResumeToken"] == first["nextBatch"][-1]["_id"]


def test_resuming_from_a_drop_token_delivers_the_invalidate_and_start_after_goes_past_it(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.items.insert_one({"_id": 0})
    start = _aggregate(db, {}, batch=0)["postBatchResumeToken"]
    mongo_client.drop_database(mongo_db_name)
    seen = _aggregate(db, {"resumeAfter": start}, batch=10)["firstBatch"]
    drop_database, invalidate = seen[1], seen[2]
    assert drop_database["operationType"] == "dropDatabase"
    empty = _aggregate(db, {"resumeAfter": drop_database["_id"]}, batch=0)
    assert empty["firstBatch"] == [] and empty["postBatchResumeToken"] == drop_database["_id"]
    for option in ("resumeAfter", "startAfter"):
        again = _aggregate(db, {option: drop_database["_id"]}, batch=10)
        assert [e["operationType"] for e in again["firstBatch"]] == ["invalidate"]
        assert again["firstBatch"][0]["_id"] == invalidate["_id"] and again["id"] == 0
    db.items.insert_one({"_id": 1})
    after = _aggregate(db, {"startAfter": invalidate["_id"]}, batch=10)
    assert [e["operationType"] for e in after["firstBatch"]] == ["insert"]
    with pytest.raises(OperationFailure) as raised:
        _aggregate(db, {"resumeAfter": invalidate["_id"]})
    assert raised.value.code == ErrorCode.INVALID_RESUME_TOKEN


@pytest.mark.parametrize(
    ("spec", "stages", "code"),
    [
        ({}, [{"$group": {"_id": None}}], ErrorCode.ILLEGAL_OPERATION),
        ({}, [{"$sort": {"x": 1}}], ErrorCode.ILLEGAL_OPERATION),
        ({}, [{"$notAStage": {}}], ErrorCode.UNRECOGNIZED_PIPELINE_STAGE),
        ({}, [{"$match": {}, "$project": {"a": 1}}], ErrorCode.STAGE_NOT_ONE_FIELD),
        ({}, [{"$changeStreamSplitLargeEvent": {}}, {"$match": {}}], ErrorCode.SPLIT_NOT_LAST),
        ({"fullDocumen": "updateLookup"}, [], ErrorCode.UNKNOWN_FIELD),
        ({"fullDocument": "always"}, [], ErrorCode.BAD_VALUE),
        ({"fullDocumentBeforeChange": "sometimes"}, [], ErrorCode.BAD_VALUE),
        ({"showExpandedEvents": "yes"}, [], ErrorCode.TYPE_MISMATCH),
    ],
    ids=[
        "group",
        "sort",
        "unknown-stage",
        "two-fields",
        "split-not-last",
        "unknown-field",
        "full-document",
        "before-change",
        "expanded-events-type",
    ],
)
def test_stages_and_options_are_refused_with_the_servers_codes(
    mongo_client: Client, mongo_db_name: str, spec: dict[str, Any], stages: list[Any], code: int
) -> None:
    with pytest.raises(OperationFailure) as raised:
        _aggregate(mongo_client[mongo_db_name], spec, *stages)
    assert raised.value.code == code


def test_allowed_stages_reshape_events(mongo_client: Client, mongo_db_name: str) -> None:
    coll = mongo_client[mongo_db_name].items
    coll.insert_one({"_id": 0})
    pipeline = [
        {"$match": {"operationType": "insert"}},
        {"$addFields": {"tag": "$fullDocument.v"}},
        {"$set": {"kept": True}},
        {"$unset": "wallTime"},
        {"$replaceWith": {"_id": "$_id", "tag": "$tag", "kept": "$kept"}},
    ]
    with coll.watch(pipeline, max_await_time_ms=AWAIT_MS) as stream:
        coll.insert_one({"_id": 1, "v": "x"})
        event = next_event(stream)
    assert {k: v for k, v in event.items() if k != "_id"} == {"tag": "x", "kept": True}


def test_a_read_concern_other_than_majority_is_refused(
    mongo_client: Client, mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name].get_collection("items", read_concern=ReadConcern("local"))
    with pytest.raises(OperationFailure) as raised:
        coll.watch()
    assert raised.value.code == ErrorCode.INVALID_OPTIONS
    majority = mongo_client[mongo_db_name].get_collection(
        "items", read_concern=ReadConcern("majority")
    )
    with majority.watch(max_await_time_ms=AWAIT_MS):
        pass


def test_expanded_events_only_in_streams_that_ask_for_them(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    with (
        db.watch(max_await_time_ms=AWAIT_MS, show_expanded_events=True) as expanded,
        db.watch(max_await_time_ms=AWAIT_MS) as plain,
    ):
        db.create_collection("made")
        db.made.create_index("x")
        db.made.insert_one({"_id": 1})
        db.made.drop_index("x_1")
        kinds = [e["operationType"] for e in events(expanded, 4)]
        assert kinds == ["create", "createIndexes", "insert", "dropIndexes"]
        assert next_event(plain)["operationType"] == "insert"
        assert plain.try_next() is None
    with db.watch(max_await_time_ms=AWAIT_MS, show_expanded_events=True) as expanded:
        db.made.insert_one({"_id": 2})
        event = next_event(expanded)
    uuid = db.command("listCollections", filter={"name": "made"})["cursor"]["firstBatch"][0]
    assert event["collectionUUID"] == uuid["info"]["uuid"]


def test_pre_and_post_images_only_where_enabled(mongo_client: Client, mongo_db_name: str) -> None:
    db = mongo_client[mongo_db_name]
    db.kept.insert_one({"_id": 1, "v": 0})
    db.command("collMod", "kept", changeStreamPreAndPostImages={"enabled": True})
    db.plain.insert_one({"_id": 1, "v": 0})
    options: dict[str, Any] = {
        "full_document": "whenAvailable",
        "full_document_before_change": "whenAvailable",
        "max_await_time_ms": AWAIT_MS,
    }
    with db.watch(**options) as stream:
        db.kept.update_one({"_id": 1}, {"$set": {"v": 1}})
        db.plain.update_one({"_id": 1}, {"$set": {"v": 1}})
        db.kept.delete_one({"_id": 1})
        kept, plain, deleted = events(stream, 3)
    assert kept["fullDocumentBeforeChange"] == {"_id": 1, "v": 0}
    assert kept["fullDocument"] == {"_id": 1, "v": 1}
    assert plain["fullDocumentBeforeChange"] is None and plain["fullDocument"] is None
    assert deleted["fullDocumentBeforeChange"] == {"_id": 1, "v": 1}
    with db.plain.watch(full_document="required", max_await_time_ms=AWAIT_MS) as stream:
        db.plain.update_one({"_id": 1}, {"$set": {"v": 2}})
        with pytest.raises(OperationFailure) as raised:
            next_event(stream)
    assert raised.value.code == ErrorCode.NO_MATCHING_DOCUMENT
