"""Backpressure (issue 15, item 4): with the replicator held back, change windows grow and the
backlog shows in `status`; released, it drains and windows are back to normal; `verify` equal,
against the landing zone and against the Delta tables.

The replicator is the real one (shared/replicator/engine.py), writing Delta tables: held back,
it does not run; released, one pass applies every file and moves it out of the table folder,
which is all the mirror can see of Fabric having applied them. Each window is given exactly as
many new events as its current limit, so it closes on its event limit and the growth shows as
window sizes, without waiting on a clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared import telemetry
from shared.config import load_settings
from shared.delta_tables import DeltaTables, parse_tables_to_write
from shared.landing_zone.stores.base import LandingZoneStore, StoredFile
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef, sequence_of
from shared.pipeline.backpressure import GROWTH_KEY, MAX_GROWN_BYTES, MAX_GROWTH, Backpressure
from shared.pipeline.changes import ChangeReader
from shared.pipeline.status import format_status, status_report
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.pipeline.verify import format_report, verify_delta
from shared.pipeline.wiring import MirrorContext, open_context
from shared.replicator.engine import Replicator
from shared.state.base import update
from tests.pipeline.in_process import WINDOW_SETTINGS, assert_verified, snapshot

THRESHOLD = 6  # REPLICATOR_BACKLOG_FILES
BASE_EVENTS = 5  # CHANGE_WINDOW_EVENTS
CHECK_SECONDS = 60  # REPLICATOR_BACKLOG_CHECK_SECONDS


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def unprocessed(store: LandingZoneStore, table: TableRef) -> list[StoredFile]:
    """The numbered files still in the table folder: those the replicator has not applied."""
    return [
        stored
        for stored in store.list_files(table.folder)
        if sequence_of(stored.path.rsplit("/", 1)[-1]) is not None
    ]


@pytest.fixture
def ctx(tmp_path: Path, mongodb_uri: str, mongo_db_name: str) -> Iterator[MirrorContext]:
    settings = load_settings(
        {
            "MONGODB_URI": mongodb_uri,
            "MONGODB_DATABASE": mongo_db_name,
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": str(tmp_path / "state.db"),
            **WINDOW_SETTINGS,
            "CHANGE_WINDOW_EVENTS": str(BASE_EVENTS),
            "REPLICATOR_BACKLOG_FILES": str(THRESHOLD),
            "REPLICATOR_BACKLOG_CHECK_SECONDS": str(CHECK_SECONDS),
        }
    )
    context = open_context(settings)
    yield context
    context.close()


def test_windows_grow_while_the_replicator_is_held_back_and_shrink_once_it_drains(
    ctx: MirrorContext,
    mongo_client: MongoClient[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.items.insert_many([{"_id": -n, "n": n} for n in range(1, 11)])
    snapshot(ctx)
    table = TableRef(db.name, "items")
    store = ctx.publisher.store
    tables = parse_tables_to_write(str(tmp_path / "Tables"))
    replicator = Replicator(store, tables)
    assert replicator.run_once().files == 1  # the snapshot's file is applied
    listings: list[str] = []  # the folder listings backpressure makes
    list_folder = Backpressure._list

    def counted(self: Backpressure, listed: TableRef, next_number: int) -> None:
        listings.append(listed.folder)
        list_folder(self, listed, next_number)

    monkeypatch.setattr(Backpressure, "_list", counted)
    gauges: list[tuple[float, dict[str, str]]] = []
    monkeypatch.setitem(
        telemetry._recorders, "replicator_backlog", lambda v, a: gauges.append((v, a))
    )
    clock = Clock()
    reader = ChangeReader(ctx, db.name, None, clock=clock)
    reader.acquire()
    inserted = 0

    def window_of_its_limit() -> int:
        """Give the next window exactly its event limit; the events it read."""
        nonlocal inserted
        limit = reader.window_limits.events
        db.items.insert_many([{"_id": inserted + i, "n": i} for i in range(limit)])
        inserted += limit
        deadline = time.monotonic() + 30
        result = reader.window()
        while result.events == 0:  # not yet visible to the stream: an idle window, no file
            assert time.monotonic() < deadline, "the inserts never reached the change stream"
            result = reader.window()
        assert result.events == limit
        return limit

    # Held back from here on. Below the threshold the windows keep their normal size; above it,
    # each window doubles the next one.
    sizes = [window_of_its_limit() for _ in range(9)]
    assert sizes == [5] * 7 + [5 * 2, 5 * 4]  # 7 files: over THRESHOLD, so the 8th grows
    assert reader.window_limits.events == 5 * 8 and reader.window_limits.patient
    assert len(unprocessed(store, table)) == 9  # one file per window
    assert listings == [table.folder]  # counted once, at the first file; then only estimated

    # The next tick's reader starts from what this one saved with its checkpoint.
    reader.release()
    reader = ChangeReader(ctx, db.name, None, clock=clock)
    reader.acquire()
    assert reader.window_limits.events == 5 * 8
    sizes = [window_of_its_limit() for _ in range(2)]
    assert sizes == [5 * 8, 5 * 16]  # 120 events in two files, not 24
    assert len(unprocessed(store, table)) == 11

    report = status_report(ctx.state)
    (row,) = report["tables"]
    assert row["replicator_backlog"]["unprocessed_files"] == 11
    assert report["databases"][0]["window_growth"] == 32
    text = format_status(report)
    assert "change windows 32x normal" in text and "BACKLOG" in text
    assert gauges and gauges[-1] == (11, {"table": str(table)})

    # Released: the replicator catches up. The backlog is counted again once the check is due,
    # and the windows are back to normal at once.
    released = replicator.run_once()
    assert (released.files, released.failed) == (11, [])
    assert unprocessed(store, table) == []
    clock.now += CHECK_SECONDS
    assert reader.window().events == 0
    assert listings == [table.folder] * 2
    assert reader.window_limits.events == BASE_EVENTS and not reader.window_limits.patient
    report = status_report(ctx.state)
    assert report["tables"][0]["replicator_backlog"]["unprocessed_files"] == 0
    assert report["databases"][0]["window_growth"] == 1
    assert gauges[-1] == (0, {"table": str(table)})
    assert [window_of_its_limit() for _ in range(3)] == [5, 5, 5]
    reader.release()
    assert 32 < MAX_GROWTH  # the growth above was never capped
    assert_verified(ctx)
    # The grown windows' files, applied by the replicator, give a Delta table equal to the source.
    assert replicator.run_once().files == 3
    delta = verify_delta(DeltaTables(tables), db, None)
    assert delta.equal, format_report(delta)


def test_grown_windows_stay_within_the_lease_the_budget_and_memory(tmp_path: Path):
    settings = load_settings(
        {
            "CHANGE_WINDOW_EVENTS": "10000",
            "CHANGE_WINDOW_SECONDS": "1",
            "CHANGE_LEASE_SECONDS": "20",
            "CHANGE_BUDGET_SECONDS": "55",
        }
    )
    backpressure = Backpressure(settings, LocalStore(tmp_path))
    normal = backpressure.limits
    assert (normal.events, normal.seconds, normal.patient) == (10_000, 1, False)
    backpressure.growth = MAX_GROWTH
    grown = backpressure.limits
    assert grown.events == 10_000 * MAX_GROWTH
    assert grown.seconds == 10  # half the lease: renewed once per window, it never lapses
    assert grown.bytes == MAX_GROWN_BYTES  # not 64 times 64 MiB held in memory
    assert grown.patient


def test_a_grown_window_with_events_waits_for_more_until_its_deadline(
    ctx: MirrorContext, mongo_client: MongoClient[dict[str, Any]]
):
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.items.insert_one({"_id": 0})
    snapshot(ctx)
    # What a previous reader saved with its checkpoint: windows grown 4 times.
    update(ctx.state, STREAM_KIND, db.name, lambda value: {**(value or {}), GROWTH_KEY: 4})
    reader = ChangeReader(ctx, db.name, None)
    reader.acquire()
    assert reader.window_limits.seconds == 4 and reader.window_limits.patient
    db.items.insert_many([{"_id": n} for n in range(1, 4)])
    deadline = time.monotonic() + 30
    while True:
        started = time.monotonic()
        result = reader.window()
        if result.events:
            break
        assert time.monotonic() < deadline, "the inserts never reached the change stream"
    # Three events, well below the grown limit of 20: a normal window closes on the first idle
    # read; this one waited out its four seconds for more.
    assert result.events == 3 and result.idle
    assert time.monotonic() - started >= 4 - 0.1
    # No table is behind (one file, counted): the next window is normal again.
    assert reader.window_limits.seconds == 1 and not reader.window_limits.patient
    reader.release()
    assert_verified(ctx)
