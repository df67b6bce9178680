"""Eight simulated days of streaming while the replicator applies, moves and deletes the files.

Fabric's replicator moves each applied file to ``_ProcessedFiles/`` or ``_FilesReadyToDelete/``
and deletes it seven days later. The mirror must never stop on it (no "missing (deleted by
hand?)"), ``inspect`` must find no gap, ``verify --against delta`` must find the Delta tables
equal to the source, and the landing-zone ``verify`` must say it cannot tell (NOT VERIFIABLE),
not that the tables differ.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from shared.delta_tables import DeltaTables, parse_tables_to_write
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.tables import (
    PROCESSED_FOLDER,
    READY_TO_DELETE_FOLDER,
    TableRef,
    published_files,
)
from shared.pipeline.plans import Phase
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.verify import format_report, verify_delta, verify_mirror
from shared.replicator.engine import Replicator
from tests.pipeline.in_process import MakeContext, drain, reader_for, snapshot

DAY = 86400.0


def document(number: int, day: int) -> dict[str, Any]:
    return {
        "n": number,
        "name": f"item {number} (day {day})",
        "price": number * 1.25,
        "paid": number % 2 == 0,
        "at": dt.datetime(2026, 1, 1 + day, 12, number % 60, tzinfo=dt.UTC),
        "tags": {"day": day, "list": [number, "x"]},
    }


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
    for ref in refs.values():
        report = inspect_table(ctx.publisher.store, ref)
        assert report.conforms and report.history_removed and report.first_file
        assert report.first_file > 1
    # The Delta tables, which hold what the deleted files applied, equal the source.
    delta = verify_delta(DeltaTables(tables), db, list(ids))
    assert delta.equal and len(delta.tables) == len(ids), format_report(delta)
    # The landing zone alone no longer holds the tables' history: verify says so, no DIFFERENT.
    verified = verify_mirror(ctx.publisher.store, db, list(ids))
    assert all(table.unverifiable and not table.problems for table in verified.tables)
    assert not verified.equal
    text = format_report(verified)
    assert "DIFFERENT" not in text and text.count("NOT VERIFIABLE from the landing zone") == 2
    reader.release()
