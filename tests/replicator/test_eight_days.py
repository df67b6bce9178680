"""Eight simulated days of streaming while the replicator applies, moves and deletes the files.

Fabric's replicator moves each applied file to ``_ProcessedFiles/`` or ``_FilesReadyToDelete/``
and deletes it seven days later. The mirror must never stop on it (no "missing (deleted by
hand?)"), ``inspect`` must find no gap, and the Delta tables must equal the source.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

from bson import ObjectId, json_util
from bson.json_util import JSONOptions
from pymongo import MongoClient
from pymongo.database import Database

from shared.conversion.id_text import id_text
from shared.delta_tables import DeltaTablesLocation, parse_tables_to_write
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.tables import (
    PROCESSED_FOLDER,
    READY_TO_DELETE_FOLDER,
    TableRef,
    published_files,
)
from shared.pipeline.plans import Phase
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.verify import verify_mirror
from shared.replicator.engine import Replicator, read_delta_table
from tests.pipeline.in_process import MakeContext, drain, reader_for, snapshot

DAY = 86400.0
RELAXED = JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True)


def document(number: int, day: int) -> dict[str, Any]:
    return {
        "n": number,
        "name": f"item {number} (day {day})",
        "price": number * 1.25,
        "paid": number % 2 == 0,
        "at": dt.datetime(2026, 1, 1 + day, 12, number % 60, tzinfo=dt.UTC),
        "tags": {"day": day, "list": [number, "x"]},
    }


def assert_delta_equals_source(
    tables: DeltaTablesLocation, table: TableRef, collection: Any
) -> None:
    """The Delta table, read with deltalake, against the documents as PyMongo decodes them."""
    delta = {row["_id"]: row for row in read_delta_table(tables, table).to_pylist()}
    source = {id_text(doc["_id"]): doc for doc in collection.find()}
    assert sorted(delta) == sorted(source)
    for key, doc in source.items():
        row = delta[key]
        assert row["n"] == doc["n"] and row["name"] == doc["name"]
        assert row["price"] == doc["price"] and row["paid"] == doc["paid"]
        assert row["at"] == doc["at"].replace(tzinfo=dt.UTC)
        expected = json.loads(json_util.dumps(doc["tags"], json_options=RELAXED))
        assert json.loads(row["tags"]) == expected


def test_eight_days_of_streaming_with_files_moved_and_deleted(
    make_context: MakeContext,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db_name: str,
    tmp_path: Path,
) -> None:
    ctx = make_context()
    db: Database[dict[str, Any]] = mongo_client[mongo_db_name]
    ids = {"orders": [ObjectId() for _ in range(30)], "items": list(range(30))}
    for name, keys in ids.items():
        db[name].insert_many([{"_id": key, **document(i, 0)} for i, key in enumerate(keys)])
    snapshot(ctx)
    reader = reader_for(ctx)
    clock_now = [1_800_000_000.0]
    # Fabric does not say which files it moves where: a seeded draw sends some to each folder.
    draw = random.Random(15)
    tables = parse_tables_to_write(str(tmp_path / "Tables"))
    replicator = Replicator(
        ctx.publisher.store,
        tables,
        clock=lambda: clock_now[0],
        ready_to_delete=lambda table, number: draw.random() < 0.4,
    )
    refs = {name: TableRef.for_collection(mongo_db_name, name) for name in ids}
    destinations: set[str] = set()
    deleted = 0
    for day in range(8):
        for name, keys in ids.items():
            collection = db[name]
            # A few windows a day: updates, deletes and new documents.
            for window in range(3):
                for i in range(window, len(keys), 7):
                    collection.update_one({"_id": keys[i]}, {"$set": document(i + day, day)})
                collection.delete_one({"_id": keys[(day * 3 + window) % len(keys)]})
                key = ObjectId() if name == "orders" else 1000 + day * 10 + window
                keys.append(key)
                collection.insert_one({"_id": key, **document(len(keys), day)})
                drain(reader, ctx)
                summary = replicator.run_once()
                assert not summary.failed
                deleted += summary.deleted
        # A restarted mirror (every day) checks each table's folder against its state afresh
        # while planning: files moved to either folder, or deleted, are no lost files.
        reader.release()
        ctx = make_context()
        selection = plan_selected(ctx)
        assert not selection.stopped, (day, selection.stopped)
        assert all(plan.phase == Phase.STREAMING for plan in selection.plans)
        reader = reader_for(ctx)
        for name, ref in refs.items():
            report = inspect_table(ctx.publisher.store, ref)
            assert report.conforms, (day, name, report.problems)
            for stored in published_files(ctx.publisher.store, ref).files.values():
                destinations.add(stored.path.rsplit("/", 2)[-2])
        clock_now[0] += DAY
    # Seven days after the first moves, the oldest files are gone from both folders.
    assert destinations >= {PROCESSED_FOLDER, READY_TO_DELETE_FOLDER}
    assert deleted > 0
    drain(reader, ctx)
    replicator.run_once()
    for name, ref in refs.items():
        report = inspect_table(ctx.publisher.store, ref)
        assert report.conforms and report.history_removed and report.first_file
        assert report.first_file > 1
        assert_delta_equals_source(tables, ref, db[name])
    # The landing zone alone no longer holds the tables' history: verify says so, no DIFFERENT.
    verified = verify_mirror(ctx.publisher.store, db, list(ids))
    assert all(table.unverifiable and not table.problems for table in verified.tables)
    assert not verified.equal
    reader.release()
