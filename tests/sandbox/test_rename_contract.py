"""What change streams show of ``renameCollection``: over an existing target, and from another
database. Both are where a real server's events differ from the obvious guess, and where the
mirror once went wrong (issue #14, items 2 and 3).

Runs against the session sandbox, or unchanged against a real replica set with MONGODB_TEST_URI.
Each test ends its operation with a marker insert and reads every event up to the marker, so an
extra event (a ``drop`` of the replaced target, say) fails it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bson.binary import Binary
from pymongo.change_stream import ChangeStream
from pymongo.errors import OperationFailure

from mongodb_sandbox.errors import ErrorCode
from tests.sandbox.test_change_streams_contract import AWAIT_MS, Client, next_event

# The server's staging name for a rename across databases: "tmp%%%%%.renameCollection", each "%"
# one of [0-9A-Za-z] (rename_collection.cpp, renameCollectionAcrossDatabases).
STAGING_NAME = re.compile(r"tmp[0-9A-Za-z]{5}\.renameCollection")
MARKER = "marker"


def until_marker(stream: ChangeStream[Any]) -> list[dict[str, Any]]:
    """Every event before the marker insert (which the test writes last)."""
    seen: list[dict[str, Any]] = []
    for _ in range(1000):
        event = next_event(stream)
        if event.get("ns", {}).get("coll") == MARKER:
            return seen
        seen.append(event)
    raise AssertionError("the marker never arrived")


def shape(event: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an event in a sequence: its type, namespace, and key or target."""
    ns = event.get("ns", {})
    detail = event.get("documentKey", {}).get("_id") if "documentKey" in event else None
    if event["operationType"] == "rename":
        detail = (event["to"]["db"], event["to"]["coll"])
    return (event["operationType"], ns.get("db"), ns.get("coll"), detail)


@pytest.fixture
def other_db_name(mongo_client: Client) -> Iterator[str]:
    """A second database no other test uses, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    mongo_client.drop_database(name)


def test_a_rename_over_a_target_emits_only_the_rename(
    mongo_client: Client, mongo_db_name: str
) -> None:
    """SERVER-53478 (open): no ``drop`` for the replaced target, in any stream."""
    db = mongo_client[mongo_db_name]
    db.source.insert_many([{"_id": i, "from": "source"} for i in range(3)])
    db.target.insert_many([{"_id": i, "from": "target"} for i in range(2, 6)])
    replaced = next(db.list_collections(filter={"name": "target"}))["info"]["uuid"]
    with (
        db.watch(max_await_time_ms=AWAIT_MS) as database_stream,
        db.watch(max_await_time_ms=AWAIT_MS, show_expanded_events=True) as expanded,
        db.target.watch(max_await_time_ms=AWAIT_MS) as target_stream,
    ):
        db.source.rename("target", dropTarget=True)
        db.target.insert_one({"_id": "after"})
        db[MARKER].insert_one({})
        plain = until_marker(database_stream)
        detailed = until_marker(expanded)
        # The target's own stream sees the rename onto it and ends; no drop there either
        # (change_stream_filter_helpers.cpp: renameToEvent, buildInvalidationFilter).
        on_target = [next_event(target_stream), next_event(target_stream)]
        assert not target_stream.alive
    rename = ("rename", mongo_db_name, "source", (mongo_db_name, "target"))
    assert [e["operationType"] for e in on_target] == ["rename", "invalidate"]
    assert shape(on_target[0]) == rename
    after = ("insert", mongo_db_name, "target", "after")
    assert [shape(e) for e in plain] == [rename, after]
    assert "operationDescription" not in plain[0]
    assert [shape(e) for e in detailed if e["operationType"] != "create"] == [rename, after]
    assert detailed[0]["operationDescription"] == {
        "to": {"db": mongo_db_name, "coll": "target"},
        "dropTarget": replaced,
    }
    assert isinstance(replaced, Binary)
    assert [d["from"] for d in db.target.find({"_id": {"$in": [0, 1, 2]}})] == ["source"] * 3
    assert db.target.count_documents({}) == 4
    assert "source" not in db.list_collection_names()


def test_a_rename_without_a_target_has_no_drop_target(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.source.insert_one({"_id": 1})
    with db.watch(max_await_time_ms=AWAIT_MS, show_expanded_events=True) as expanded:
        db.source.rename("target")
        db[MARKER].insert_one({})
        events = [e for e in until_marker(expanded) if e["operationType"] != "create"]
    assert [e["operationType"] for e in events] == ["rename"]
    assert events[0]["operationDescription"] == {"to": {"db": mongo_db_name, "coll": "target"}}


@pytest.mark.parametrize("drop_target", [False, True], ids=["new target", "over a target"])
def test_a_rename_from_another_database_copies_through_a_staging_collection(
    mongo_client: Client, mongo_db_name: str, other_db_name: str, drop_target: bool
) -> None:
    """renameCollectionAcrossDatabases: the staging collection's inserts show in the target
    database's stream (SERVER-107688), then one rename onto the target, then the source's drop
    in its own database."""
    source_db, target_db = mongo_client[other_db_name], mongo_client[mongo_db_name]
    documents = [{"_id": i, "v": f"moved {i}"} for i in range(5)]
    source_db.source.insert_many(documents)
    if drop_target:
        target_db.target.insert_many([{"_id": i, "v": "replaced"} for i in range(3, 9)])
    target_db.other.insert_one({"_id": 0})  # the target database exists before its stream
    with (
        target_db.watch(max_await_time_ms=AWAIT_MS) as target_stream,
        source_db.watch(max_await_time_ms=AWAIT_MS) as source_stream,
    ):
        mongo_client.admin.command(
            "renameCollection",
            f"{other_db_name}.source",
            to=f"{mongo_db_name}.target",
            dropTarget=drop_target,
        )
        target_db[MARKER].insert_one({})
        source_db[MARKER].insert_one({})
        in_target = until_marker(target_stream)
        in_source = until_marker(source_stream)
    staging = in_target[0]["ns"]["coll"]
    assert STAGING_NAME.fullmatch(staging), staging
    assert [shape(e) for e in in_target] == [
        *[("insert", mongo_db_name, staging, d["_id"]) for d in documents],
        ("rename", mongo_db_name, staging, (mongo_db_name, "target")),
    ]
    assert [e["fullDocument"] for e in in_target[:-1]] == documents
    assert [shape(e) for e in in_source] == [("drop", other_db_name, "source", None)]
    assert list(target_db.target.find().sort("_id", 1)) == documents
    assert sorted(target_db.list_collection_names()) == sorted([MARKER, "other", "target"])
    assert source_db.list_collection_names() == [MARKER]


def test_a_rename_to_a_view_an_existing_target_without_drop_target_or_itself_fails(
    mongo_client: Client, mongo_db_name: str, other_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.source.insert_one({"_id": 1})
    db.target.insert_one({"_id": 2})
    db.command("create", "view", viewOn="target", pipeline=[])
    mongo_client[other_db_name].elsewhere.insert_one({"_id": 3})
    for to in (f"{mongo_db_name}.target", f"{mongo_db_name}.view"):
        for source in (f"{mongo_db_name}.source", f"{other_db_name}.elsewhere"):
            with pytest.raises(OperationFailure) as raised:
                mongo_client.admin.command("renameCollection", source, to=to)
            assert raised.value.code == ErrorCode.NAMESPACE_EXISTS
    for drop_target in (False, True):
        with pytest.raises(OperationFailure) as raised:
            mongo_client.admin.command(
                "renameCollection",
                f"{mongo_db_name}.source",
                to=f"{mongo_db_name}.source",
                dropTarget=drop_target,
            )
        assert raised.value.code == ErrorCode.ILLEGAL_OPERATION
    assert db.source.find_one() == {"_id": 1}
    assert mongo_client[other_db_name].elsewhere.find_one() == {"_id": 3}
