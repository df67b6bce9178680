"""Our change cursor against PyMongo's own change stream, on the same server and the same changes.

Every event must come out as the driver decodes it (position, operation, time, collection,
document bytes), across batches read ahead, from a resume token taken mid-batch, and idle.
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from mongodb_sandbox import SandboxServer
from shared.source import change_stream
from shared.source.change_events import ChangeEvent
from shared.source.change_stream import current_position, open_stream
from shared.source.resume_tokens import token_from_json, token_order
from tests.fixtures.mongodb import SMALL_OPLOG_SIZE, SandboxFactory

Expected = tuple[str, str, int, str | None, bytes | None, str | None]


def apply_mixed_changes(db: Any) -> None:
    orders, other = db["orders"], db["other"]
    orders.insert_many([{"_id": n, "v": n, "nested": {"a": [n, "x"]}} for n in range(30)])
    orders.insert_one({"_id": "5", "v": "the string five"})
    orders.insert_one({"_id": {"k": 1}, "v": 1.5})
    other.insert_one({"_id": 1})
    for n in range(0, 30, 3):
        orders.update_one({"_id": n}, {"$set": {"v": f"now {n}"}})
    orders.replace_one({"_id": 1}, {"replaced": True})
    orders.update_one({"_id": 2}, {"$inc": {"v": 1}})
    orders.delete_one({"_id": 2})  # the update before it finds no document to look up
    orders.delete_many({"_id": {"$in": [4, "5", {"k": 1}]}})
    db["other"].rename("renamed")
    db["renamed"].drop()


def expected_events(db: Any, token: str) -> list[Expected]:
    """What a reader needs of each event, taken from the driver's decoded change stream."""
    found: list[Expected] = []
    with db.watch(
        full_document="updateLookup", resume_after=token_from_json(token), max_await_time_ms=50
    ) as stream:
        while (event := stream.try_next()) is not None:
            operation = event["operationType"]
            document: bytes | None = None
            if operation == "delete":
                document = bson.encode({"_id": event["documentKey"]["_id"]})
            elif operation in ("insert", "update", "replace") and event["fullDocument"]:
                document = bytes(event["fullDocument"].raw)
            found.append(
                (
                    event["_id"]["_data"],
                    operation,
                    event["clusterTime"].time,
                    event["ns"].get("coll"),
                    document,
                    event["to"]["coll"] if operation == "rename" else None,
                )
            )
    return found


def essentials(event: ChangeEvent) -> Expected:
    return (
        event.position,
        event.operation,
        event.cluster_seconds,
        event.collection,
        event.document,
        event.target,
    )


def drain(cursor: change_stream.ChangeCursor) -> list[ChangeEvent]:
    events = []
    while (event := cursor.next_event()) is not None:
        events.append(event)
    return events


@pytest.fixture
def raw_db(mongodb_uri: str, mongo_db_name: str) -> Any:
    with MongoClient[RawBSONDocument](mongodb_uri, document_class=RawBSONDocument) as client:
        yield client[mongo_db_name]


@pytest.mark.parametrize("batch_events", [1, 7, 1000])
def test_events_read_in_place_equal_the_drivers_decoded_events(
    raw_db: Any, batch_events: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_stream, "BATCH_EVENTS", batch_events)
    token = current_position(raw_db)
    apply_mixed_changes(raw_db)
    expected = expected_events(raw_db, token)
    assert {e[1] for e in expected} >= {"insert", "update", "replace", "delete", "rename", "drop"}
    cursor = open_stream(raw_db, None, token, max_await_ms=50)
    try:
        assert [essentials(event) for event in drain(cursor)] == expected
        assert cursor.alive
    finally:
        cursor.close()
    assert not cursor.alive


def test_a_stream_filtered_to_collections_sees_only_theirs(raw_db: Any) -> None:
    token = current_position(raw_db)
    apply_mixed_changes(raw_db)
    cursor = open_stream(raw_db, ["orders"], token, max_await_ms=50)
    try:
        events = drain(cursor)
    finally:
        cursor.close()
    expected = [e for e in expected_events(raw_db, token) if e[3] == "orders"]
    assert [essentials(event) for event in events] == expected


def test_resuming_from_a_token_taken_mid_batch_goes_on_with_the_next_event(
    raw_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_stream, "BATCH_EVENTS", 10)
    token = current_position(raw_db)
    apply_mixed_changes(raw_db)
    first = open_stream(raw_db, None, token, max_await_ms=50)
    try:
        head = [first.next_event() for _ in range(15)]  # a batch and a half: one read ahead
        middle = first.resume_token
    finally:
        first.close()
    second = open_stream(raw_db, None, middle, max_await_ms=50)
    try:
        tail = drain(second)
    finally:
        second.close()
    read = [essentials(event) for event in head if event is not None] + [
        essentials(event) for event in tail
    ]
    assert read == expected_events(raw_db, token)


def test_an_idle_stream_moves_its_token_past_the_last_event(raw_db: Any) -> None:
    token = current_position(raw_db)
    raw_db["orders"].insert_one({"_id": 1})
    cursor = open_stream(raw_db, None, token, max_await_ms=50)
    try:
        event = cursor.next_event()
        assert event is not None
        assert token_order(cursor.resume_token) == event.position
        assert cursor.next_event() is None  # idle: the post-batch token is the checkpoint
        idle = cursor.resume_token
    finally:
        cursor.close()
    assert token_order(idle) > event.position
    resumed = open_stream(raw_db, None, idle, max_await_ms=50)
    try:
        assert resumed.next_event() is None
        raw_db["orders"].insert_one({"_id": 2})
        after = resumed.next_event()
    finally:
        resumed.close()
    assert after is not None and bson.decode(after.document or b"") == {"_id": 2}


@pytest.mark.parametrize(("max_events", "max_bytes"), [(1, 10**9), (4, 10**9), (10**6, 700)])
def test_runs_of_events_are_the_same_events_within_the_limits(
    raw_db: Any, max_events: int, max_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_stream, "BATCH_EVENTS", 9)
    token = current_position(raw_db)
    apply_mixed_changes(raw_db)
    cursor = open_stream(raw_db, None, token, max_await_ms=50)
    read: list[ChangeEvent] = []
    try:
        while run := cursor.next_events(max_events, max_bytes):
            assert len(run) <= max_events
            # Only the last event of a run may reach the byte limit.
            assert sum(event.size for event in run[:-1]) < max_bytes
            if len(run) > 1:
                assert all(e.operation in ("insert", "update", "replace") for e in run)
            assert token_order(cursor.resume_token) == run[-1].position
            read += run
    finally:
        cursor.close()
    assert [essentials(event) for event in read] == expected_events(raw_db, token)


def test_a_refused_stage_is_an_error_not_history_lost(raw_db: Any) -> None:
    # A server refuses a stage a change stream may not hold with IllegalOperation (20) and an
    # unknown one with 40324: errors to report, never the history loss that rebuilds tables.
    token = current_position(raw_db)
    for stage, code in (({"$group": {"_id": None}}, 20), ({"$notAStage": {}}, 40324)):
        pipeline = [{"$changeStream": {"resumeAfter": token_from_json(token)}}, stage]
        with pytest.raises(OperationFailure) as raised:
            change_stream.ChangeCursor(raw_db, pipeline, 50)
        assert raised.value.code == code


def test_lost_history_is_history_lost(small_oplog_sandbox: SandboxServer) -> None:
    with MongoClient(small_oplog_sandbox.uri, document_class=RawBSONDocument) as client:
        db = client["lost"]
        token = current_position(db)
        db.items.insert_many([{"_id": n} for n in range(SMALL_OPLOG_SIZE * 2)])
        with pytest.raises(change_stream.HistoryLost):
            open_stream(db, None, token)


def test_without_split_events_a_stream_opens_without_the_stage(
    sandbox_factory: SandboxFactory,
) -> None:
    # A server before 6.0.9 answers 40324 for $changeStreamSplitLargeEvent: the stream opens
    # again without it and reads every event.
    server = sandbox_factory(split_large_events=False)
    with MongoClient(server.uri, document_class=RawBSONDocument) as client:
        db = client["old"]
        token = current_position(db)
        db.items.insert_many([{"_id": n} for n in range(5)])
        stream = open_stream(db, None, token, max_await_ms=50)
        try:
            found: list[ChangeEvent] = []
            for _ in range(50):
                found += stream.next_events(100, 1 << 20)
                if len(found) == 5:
                    break
        finally:
            stream.close()
    assert [event.operation for event in found] == ["insert"] * 5
