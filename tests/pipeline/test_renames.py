"""Renames the mirror must follow as a real server emits them (issue #14, items 2 and 3): a
rename over a mirrored collection, whose only event is the rename (SERVER-53478), and a rename
in from another database, which copies through a staging collection whose inserts the
database's stream shows (SERVER-107688). Each test ends with ``verify`` finding every table
equal to its collection."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared.landing_zone.replayer import find_tables
from shared.landing_zone.tables import TableRef
from shared.pipeline.plans import Phase, load_plan
from shared.pipeline.rebuild import rebuild_count
from shared.pipeline.wiring import MirrorContext
from tests.pipeline.in_process import MakeContext, assert_verified, drain, streaming

Client = MongoClient[dict[str, Any]]


def tables_of(ctx: MirrorContext, database: str) -> list[str]:
    return sorted(t.name for t in find_tables(ctx.publisher.store) if t.schema == database)


def state_keys(tmp_path: Path) -> list[tuple[str, str]]:
    """Every (kind, key) of the test's SQLite state store (make_context puts it there)."""
    with sqlite3.connect(tmp_path / "state.db") as connection:
        return list(connection.execute("SELECT kind, key FROM records"))


@pytest.fixture
def other_db_name(mongo_client: Client) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    mongo_client.drop_database(name)


@pytest.mark.parametrize(
    "collections",
    [None, "source,target", "target"],
    ids=["all", "both named", "only the target named"],
)
def test_a_rename_over_a_mirrored_target_rebuilds_the_target(
    make_context: MakeContext, mongo_client: Client, collections: str | None
):
    """The overwritten collection gets no drop event: the rename alone must retire its table
    and have the renamed data snapshotted into it (before, its old rows stayed for ever)."""
    ctx = make_context(**({} if collections is None else {"MONGODB_COLLECTIONS": collections}))
    db, reader = streaming(
        ctx,
        mongo_client,
        source=[{"_id": i, "from": "source"} for i in range(10)],
        target=[{"_id": i, "from": "target"} for i in range(5, 30)],
    )
    db.source.rename("target", dropTarget=True)
    db.target.update_one({"_id": 0}, {"$set": {"after": True}})
    db.target.insert_one({"_id": "after the rename"})
    drain(reader, ctx)
    # The source is gone: a named selection is verified on what still exists.
    assert_verified(ctx, None if collections is None else ["target"])
    target = TableRef.for_collection(db.name, "target")
    assert rebuild_count(ctx.state, target) == 1
    plan = load_plan(ctx.state, target)
    assert plan is not None and plan.phase == Phase.STREAMING
    assert tables_of(ctx, db.name) == ["target"]


def test_a_rename_onto_a_mirrored_name_that_is_free_mirrors_the_new_collection(
    make_context: MakeContext, mongo_client: Client
):
    """A named collection dropped earlier comes back by a rename: no event but the rename."""
    ctx = make_context(MONGODB_COLLECTIONS="target")
    db, reader = streaming(ctx, mongo_client, target=[{"_id": 1}])
    db.target.drop()
    drain(reader, ctx)
    db.source.insert_many([{"_id": i, "v": i} for i in range(5)])
    db.source.rename("target")
    drain(reader, ctx)
    assert tables_of(ctx, db.name) == ["target"]
    assert_verified(ctx, ["target"])


@pytest.mark.parametrize("over_a_table", [False, True], ids=["new name", "over a mirrored table"])
def test_a_rename_in_from_another_database_leaves_no_staging_table(
    make_context: MakeContext,
    mongo_client: Client,
    other_db_name: str,
    tmp_path: Path,
    over_a_table: bool,
):
    """The staging collection's inserts span several windows (50 events each here) and the
    rename onto the target comes last: no table of the staging collection may appear, in the
    landing zone or the state, and the target is snapshotted as a new table."""
    ctx = make_context()
    seeded: dict[str, list[dict[str, Any]]] = {"kept": [{"_id": i} for i in range(3)]}
    if over_a_table:
        seeded["target"] = [{"_id": i, "from": "replaced"} for i in range(100, 140)]
    db, reader = streaming(ctx, mongo_client, **seeded)
    moved = [{"_id": i, "from": "elsewhere", "n": i * 2} for i in range(130)]
    mongo_client[other_db_name].incoming.insert_many(moved)
    with db.watch(max_await_time_ms=100) as watcher:
        mongo_client.admin.command(
            "renameCollection",
            f"{other_db_name}.incoming",
            to=f"{db.name}.target",
            dropTarget=over_a_table,
        )
        staging = _first_event(watcher)["ns"]["coll"]
    assert staging.endswith(".renameCollection")
    results = drain(reader, ctx)
    assert sum(result.events for result in results) >= len(moved)  # the copy was read
    assert not any(staging in result.discovered for result in results)
    assert tables_of(ctx, db.name) == ["kept", "target"]
    folder = TableRef.for_collection(db.name, staging).folder
    assert ctx.publisher.store.list_files(folder) == []
    left = [(kind, key) for kind, key in state_keys(tmp_path) if "renameCollection" in key]
    assert left == []
    target = TableRef.for_collection(db.name, "target")
    assert rebuild_count(ctx.state, target) == (1 if over_a_table else 0)
    assert_verified(ctx)
    # The target streams on like any table.
    db.target.delete_one({"_id": 0})
    drain(reader, ctx)
    assert_verified(ctx)


def test_a_named_selection_takes_a_collection_renamed_in_from_another_database(
    make_context: MakeContext, mongo_client: Client, other_db_name: str, tmp_path: Path
):
    ctx = make_context(MONGODB_COLLECTIONS="target")
    db, reader = streaming(ctx, mongo_client, target=[{"_id": "old"}])
    mongo_client[other_db_name].incoming.insert_many([{"_id": i} for i in range(60)])
    mongo_client.admin.command(
        "renameCollection", f"{other_db_name}.incoming", to=f"{db.name}.target", dropTarget=True
    )
    drain(reader, ctx)
    assert tables_of(ctx, db.name) == ["target"]
    assert [key for _, key in state_keys(tmp_path) if "renameCollection" in key] == []
    assert_verified(ctx, ["target"])


def test_a_collection_renamed_away_to_another_database_is_rebuilt_away(
    make_context: MakeContext, mongo_client: Client, other_db_name: str
):
    """The source database sees only a drop of the collection that left."""
    ctx = make_context()
    db, reader = streaming(ctx, mongo_client, leaving=[{"_id": 1}], staying=[{"_id": 2}])
    mongo_client.admin.command(
        "renameCollection", f"{db.name}.leaving", to=f"{other_db_name}.arrived"
    )
    drain(reader, ctx)
    assert tables_of(ctx, db.name) == ["staying"]
    assert_verified(ctx)


def _first_event(watcher: Any) -> dict[str, Any]:
    for _ in range(100):
        event = watcher.try_next()
        if event is not None:
            return dict(event)
    raise AssertionError("no change event arrived")
