"""The mirror driven step by step in the test's own process: contexts on the local store and
SQLite state under ``tmp_path``, a snapshot, a reader's change windows, then ``verify``.

Shared by the tests that drive ``ChangeReader.window()`` directly (tests/pipeline/test_changes.py
first). ``make_context`` is a fixture for the whole suite (tests/conftest.py loads this module as
a plugin); the rest are imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from shared.config import load_settings
from shared.landing_zone.replayer import inspect_table
from shared.pipeline.changes import ChangeReader, WindowResult
from shared.pipeline.snapshot import PartitionTask, plan_selected, run_partition
from shared.pipeline.verify import format_report, verify_mirror
from shared.pipeline.wiring import MirrorContext, open_context

WINDOW_SETTINGS = {
    "CHANGE_WINDOW_EVENTS": "50",
    "CHANGE_WINDOW_SECONDS": "1",
    "CHANGE_AWAIT_MS": "30",
    "FILE_ROWS": "40",
}

MakeContext = Callable[..., MirrorContext]


@pytest.fixture
def make_context(tmp_path: Path, mongodb_uri: str, mongo_db_name: str) -> Iterator[MakeContext]:
    """Opens mirror contexts (closed after the test): the session's MongoDB and the test's
    database unless ``uri``/``database`` are given; other settings as keywords."""
    opened: list[MirrorContext] = []

    def make(uri: str = mongodb_uri, database: str = mongo_db_name, **extra: str) -> MirrorContext:
        settings = load_settings(
            {
                "MONGODB_URI": uri,
                "MONGODB_DATABASE": database,
                "LANDING_ZONE": str(tmp_path / "lz"),
                "STATE_STORE": str(tmp_path / "state.db"),
                **WINDOW_SETTINGS,
                **extra,
            }
        )
        opened.append(open_context(settings))
        return opened[-1]

    yield make
    for ctx in opened:
        ctx.close()


def snapshot(ctx: MirrorContext) -> None:
    """Plan every selected table and publish its partitions, in this process."""
    for plan in plan_selected(ctx).plans:
        for index in plan.pending_partitions:
            run_partition(ctx, PartitionTask(plan.table, index))


def reader_for(ctx: MirrorContext) -> ChangeReader:
    reader = ChangeReader(ctx, ctx.settings.require("MONGODB_DATABASE"), ctx.settings.collections())
    reader.acquire()
    return reader


def streaming(
    ctx: MirrorContext, mongo_client: MongoClient, **collections: list[dict[str, Any]]
) -> tuple[Database[dict[str, Any]], ChangeReader]:
    """Seed ``collections``, snapshot them: their database, and a reader holding the lease."""
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    for name, documents in collections.items():
        db[name].insert_many(documents)
    snapshot(ctx)
    return db, reader_for(ctx)


def drain(reader: ChangeReader, ctx: MirrorContext | None = None) -> list[WindowResult]:
    """Windows until the stream is idle and every table streams (replanning rebuilt ones)."""
    results: list[WindowResult] = []
    for _ in range(200):
        result = reader.window()
        results.append(result)
        if ctx is not None and (result.rebuilt or result.discovered):
            snapshot(ctx)
            continue
        if result.idle and reader.settled():
            return results
    raise AssertionError("the stream never drained")


def assert_verified(ctx: MirrorContext, collections: list[str] | None = None) -> None:
    """`verify` finds every table equal to its collection and `inspect` finds no problem."""
    database = ctx.mongo[ctx.settings.require("MONGODB_DATABASE")]
    report = verify_mirror(ctx.publisher.store, database, collections)
    assert report.equal, format_report(report)
    for table in report.tables:
        inspected = inspect_table(ctx.publisher.store, table.table)
        assert inspected.conforms, inspected.problems
