"""Initial sync against the MongoDB sandbox over TCP, with the local store and SQLite state."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient, monitoring

from shared.config import load_settings
from shared.landing_zone.tables import TableRef
from shared.pipeline.plans import TABLE_KIND, Phase, load_plan
from shared.pipeline.snapshot import PartitionTask, plan_table, run_partition
from shared.pipeline.wiring import MirrorContext, open_context
from shared.source.collections import SourceCollection
from shared.source.resume_tokens import token_from_json
from shared.state.base import JsonObject, Record
from tests.pipeline.mirror_checks import assert_mirrors, rows_in_files


def settings_for(tmp_path: Path, uri: str, database: str, **extra: str):
    return load_settings(
        {
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": str(tmp_path / "state.db"),
            **extra,
        }
    )


@pytest.fixture
def make_context(tmp_path: Path, mongodb_uri: str, mongo_db_name: str):
    opened: list[MirrorContext] = []

    def make(**extra: str) -> MirrorContext:
        settings = settings_for(tmp_path, mongodb_uri, mongo_db_name, **extra)
        opened.append(open_context(settings))
        return opened[-1]

    yield make
    for ctx in opened:
        ctx.close()


@pytest.fixture
def context(make_context) -> MirrorContext:
    return make_context(FILE_ROWS="100")


def snapshot_all(ctx: MirrorContext, source: SourceCollection) -> list[Any]:
    plan = plan_table(ctx, source)
    return [run_partition(ctx, PartitionTask(plan.table, i)) for i in plan.pending_partitions]


MIXED_IDS: list[Any] = [
    *[ObjectId() for _ in range(40)],
    *range(-20, 40),
    *[i + 0.5 for i in range(30)],
    *[f"key-{i:03d}" for i in range(40)],
    *[dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i) for i in range(30)],
    *[Binary(bytes([i]) * 4, 0) for i in range(20)],
    *[Binary(uuid.UUID(int=i).bytes, 4) for i in range(10)],
    *[{"k": i, "s": "x"} for i in range(20)],
    True,
    None,
]


def test_mixed_id_types_arrive_exactly_once(make_context, mongo_client: MongoClient):
    context = make_context(FILE_ROWS="30", SNAPSHOT_PARTITIONS="7")
    db = context.settings.require("MONGODB_DATABASE")
    documents = [{"_id": value, "n": i} for i, value in enumerate(MIXED_IDS)]
    mongo_client[db].mixed.insert_many(documents)

    results = snapshot_all(context, SourceCollection(db, "mixed"))

    table = TableRef(db, "mixed")
    plan = load_plan(context.state, table)
    assert plan is not None and plan.phase == Phase.STREAMING
    assert len(plan.ranges) > 1  # the ranges really cross type brackets
    assert sum(r.documents for r in results) == len(MIXED_IDS)
    assert rows_in_files(context.publisher.store, table) == len(MIXED_IDS)
    rows = assert_mirrors(context.publisher.store, context.state, table, mongo_client[db].mixed)
    assert len(set(rows.column("_id").to_pylist())) == len(MIXED_IDS)


def test_empty_collection_gets_metadata_and_goes_straight_to_streaming(
    context: MirrorContext, mongo_client: MongoClient
):
    db = context.settings.require("MONGODB_DATABASE")
    mongo_client[db].create_collection("nothing")
    plan = plan_table(context, SourceCollection(db, "nothing"))
    assert plan.phase == Phase.STREAMING and plan.ranges == ()
    store = context.publisher.store
    assert store.size(TableRef(db, "nothing").metadata_file) is not None
    assert [
        f for f in store.list_files(TableRef(db, "nothing").folder) if "parquet" in f.path
    ] == []


def test_redelivered_partition_is_harmless(context: MirrorContext, mongo_client: MongoClient):
    db = context.settings.require("MONGODB_DATABASE")
    mongo_client[db].orders.insert_many([{"_id": i, "v": str(i)} for i in range(450)])
    plan = plan_table(context, SourceCollection(db, "orders"))
    task = PartitionTask(plan.table, 0)
    first = run_partition(context, task)
    again = run_partition(context, task)
    assert first.documents == 450 and first.files == 5 and first.table_finished
    assert (again.documents, again.files, again.table_finished) == (0, 0, False)
    assert rows_in_files(context.publisher.store, plan.table) == 450


class Timeline(monitoring.CommandListener):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.command_name == "aggregate":
            stages = [next(iter(stage)) for stage in command.get("pipeline", [])]
            self.events.append(f"aggregate:{stages[0] if stages else ''}")
        else:
            self.events.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_start_point_is_recorded_before_the_first_read_and_replays_concurrent_writes(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    events: list[str] = []
    settings = settings_for(tmp_path, mongodb_uri, mongo_db_name, FILE_ROWS="50")
    ctx = open_context(settings)
    ctx.mongo.close()
    ctx.mongo = MongoClient(
        mongodb_uri, event_listeners=[Timeline(events)], document_class=RawBSONDocument
    )
    original_create = ctx.state.create

    def recording_create(kind: str, key: str, value: JsonObject) -> Record:
        events.append(f"state:{kind}")
        return original_create(kind, key, value)

    ctx.state.create = recording_create  # type: ignore[method-assign]
    orders = mongo_client[mongo_db_name].orders
    orders.insert_many([{"_id": i, "v": 0} for i in range(300)])
    try:
        plan = plan_table(ctx, SourceCollection(mongo_db_name, "orders"))
        # A concurrent writer, between planning and the partitions' reads:
        orders.insert_one({"_id": 1000, "v": 1})
        orders.update_one({"_id": 5}, {"$set": {"v": 2}})
        orders.delete_one({"_id": 6})
        for index in plan.pending_partitions:
            run_partition(ctx, PartitionTask(plan.table, index))
    finally:
        ctx.close()

    first_read = min(i for i, e in enumerate(events) if e in {"find", "aggregate:$sample"})
    recorded = events.index(f"state:{TABLE_KIND}")
    opened = events.index("aggregate:$changeStream")
    assert opened < recorded < first_read
    with orders.watch(resume_after=token_from_json(plan.start_token)) as stream:
        seen = [stream.next()["operationType"] for _ in range(3)]
    assert seen == ["insert", "update", "delete"]


def test_files_made_of_several_pieces_keep_the_marker_last(
    make_context, mongo_client: MongoClient, monkeypatch: pytest.MonkeyPatch
):
    from shared.pipeline import snapshot

    monkeypatch.setattr(snapshot, "CONVERT_ROWS", 10)
    context = make_context(FILE_ROWS="40")
    db = context.settings.require("MONGODB_DATABASE")
    # A field that first appears in the second piece of the first file.
    documents = [{"_id": i, "a": i, **({"late": f"x{i}"} if i >= 15 else {})} for i in range(100)]
    mongo_client[db].grow.insert_many(documents)

    results = snapshot_all(context, SourceCollection(db, "grow"))

    assert [r.files for r in results] == [3]  # 40 + 40 + 20 rows, each of 10-row pieces
    table = TableRef(db, "grow")
    assert_mirrors(context.publisher.store, context.state, table, mongo_client[db].grow)
