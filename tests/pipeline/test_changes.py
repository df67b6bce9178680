"""Change windows against the MongoDB sandbox over TCP, with the local store and SQLite state:
each test calls ``ChangeReader.window()`` directly and judges the landing zone by replaying it."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import bson
import pyarrow.parquet as pq
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from mongodb_sandbox import SandboxServer
from shared.conversion.id_text import id_text
from shared.conversion.names import twin_name
from shared.errors import MirrorError
from shared.landing_zone.parquet_files import KEY_COLUMN, ROW_MARKER, RowMarker
from shared.landing_zone.publisher import LeaseHeld
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef, sequence_of
from shared.pipeline.changes import CHANGES_WRITER, HELD_FOLDER
from shared.pipeline.plans import Phase, all_plans, load_plan
from shared.pipeline.rebuild import REBUILD_KIND
from shared.pipeline.snapshot import PartitionTask, plan_selected, run_partition
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.pipeline.wiring import MirrorContext
from shared.source import change_stream as change_stream_module
from tests.fixtures.mongodb import SMALL_OPLOG_SIZE, SandboxFactory
from tests.pipeline.in_process import (
    MakeContext,
    assert_verified,
    drain,
    reader_for,
    snapshot,
    streaming,
)


def change_files(store: LandingZoneStore, table: TableRef, after: int = 0) -> list[Any]:
    """The rows of every numbered file after number ``after``, one pyarrow table per file."""
    found = []
    for stored in store.list_files(table.folder):
        number = sequence_of(stored.path.rsplit("/", 1)[-1])
        if number is not None and number > after:
            found.append((number, pq.read_table(io.BytesIO(store.read(stored.path)))))
    return [rows for _, rows in sorted(found, key=lambda item: item[0])]


def stream_token(ctx: MirrorContext) -> str:
    record = ctx.state.get(STREAM_KIND, ctx.settings.require("MONGODB_DATABASE"))
    assert record is not None
    return str(record.value["token"])


MIXED_IDS: list[Any] = [
    *range(-5, 5),
    Int64(2**40),
    *[i + 0.25 for i in range(5)],
    Decimal128("12.5"),
    *[f"key-{i}" for i in range(5)],
    *[ObjectId() for _ in range(5)],
    dt.datetime(2021, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC),
    Binary(b"\x01\x02\x03", 0),
    {"k": 1, "s": "x"},
    {"nested": {"a": [1, 2]}, "z": None},
    True,
]


def test_inserts_updates_replaces_and_deletes_become_upserts_and_deletes(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db, reader = streaming(
        ctx, mongo_client, orders=[{"_id": i, "v": i, "tags": ["a"]} for i in range(10)]
    )
    table = TableRef(db.name, "orders")
    published = ctx.publisher.allocated_count(table)

    db.orders.insert_one({"_id": 100, "v": 100, "nested": {"x": [1, {"y": 2}]}})
    db.orders.update_one({"_id": 1}, {"$set": {"v": -1, "extra": "new"}})
    db.orders.replace_one({"_id": 2}, {"only": "this"})
    db.orders.delete_one({"_id": 3})
    drain(reader)

    files = change_files(ctx.publisher.store, table, after=published)
    assert len(files) == 1  # one window, one file for the table
    rows = files[0].to_pylist()
    assert [(row[KEY_COLUMN], row[ROW_MARKER]) for row in rows] == [
        (id_text(100), RowMarker.UPSERT),
        (id_text(1), RowMarker.UPSERT),
        (id_text(2), RowMarker.UPSERT),
        (id_text(3), RowMarker.DELETE),
    ]
    assert files[0].schema.names[-1] == ROW_MARKER
    assert_verified(ctx)
    progress = ctx.publisher.progress(table, CHANGES_WRITER)
    assert progress is not None and progress["events"] == 4 and progress["rows"] == 4


def test_a_delete_removes_the_row_the_snapshot_wrote_for_every_id_type(
    make_context: MakeContext, mongo_client: MongoClient
):
    """The delete's `_id` text must equal the snapshot's, or the replayed row would survive."""
    ctx = make_context()
    db, reader = streaming(
        ctx, mongo_client, mixed=[{"_id": value, "n": i} for i, value in enumerate(MIXED_IDS)]
    )
    for value in MIXED_IDS:
        db.mixed.delete_one({"_id": value})
    drain(reader)

    report = inspect_table(ctx.publisher.store, TableRef(db.name, "mixed"))
    assert report.conforms and report.row_count == 0
    assert_verified(ctx)


def test_an_update_whose_document_is_gone_writes_no_row(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db, reader = streaming(ctx, mongo_client, items=[{"_id": "keep", "v": 0}])
    table = TableRef(db.name, "items")
    published = ctx.publisher.allocated_count(table)
    # Both happen before the window reads: the update's lookup finds nothing.
    db.items.update_one({"_id": "keep"}, {"$set": {"v": 1}})
    db.items.delete_one({"_id": "keep"})
    drain(reader)

    files = change_files(ctx.publisher.store, table, after=published)
    rows = [row for batch in files for row in batch.to_pylist()]
    assert [(row[KEY_COLUMN], row[ROW_MARKER]) for row in rows] == [
        (id_text("keep"), RowMarker.DELETE)
    ]
    progress = ctx.publisher.progress(table, CHANGES_WRITER)
    assert progress is not None and progress["events"] == 2 and progress["rows"] == 1
    assert_verified(ctx)


def test_a_changed_type_lands_in_the_twin_column(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db, reader = streaming(ctx, mongo_client, things=[{"_id": i, "v": i} for i in range(5)])
    db.things.update_one({"_id": 1}, {"$set": {"v": "one"}})
    db.things.insert_one({"_id": 9, "v": {"deep": [1, "x"]}})
    drain(reader)

    report = inspect_table(ctx.publisher.store, TableRef(db.name, "things"))
    assert report.conforms and report.rows is not None
    rows = {row[KEY_COLUMN]: row for row in report.rows.to_pylist()}
    changed, kept = rows[id_text(1)], rows[id_text(2)]
    assert changed["v"] is None and "one" in changed[twin_name("v")]
    assert kept["v"] == 2 and kept[twin_name("v")] is None
    assert_verified(ctx)


def test_events_over_16_mb_are_split_and_reassembled(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db, reader = streaming(ctx, mongo_client, big=[{"_id": 1, "blob": "a" * (9 * 1024 * 1024)}])
    # fullDocument (9 MB) + updateDescription (9 MB): one event of 18 MB, over the 16 MB limit.
    db.big.update_one({"_id": 1}, {"$set": {"blob": "b" * (9 * 1024 * 1024)}})
    db.big.insert_one({"_id": 2, "small": True})
    results = drain(reader)

    assert sum(result.events for result in results) == 2
    assert_verified(ctx)


def test_idle_windows_publish_nothing_and_advance_the_checkpoint(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db, reader = streaming(ctx, mongo_client, quiet=[{"_id": 1}])
    table = TableRef(db.name, "quiet")
    drain(reader)
    before, files = stream_token(ctx), ctx.publisher.allocated_count(table)
    write_elsewhere(mongo_client)
    result = reader.window()
    assert result.idle and result.events == 0 and result.tables == {}
    assert stream_token(ctx) > before  # postBatchResumeToken moved on
    assert ctx.publisher.allocated_count(table) == files


def write_elsewhere(client: MongoClient) -> None:
    """A write outside the mirrored database: it moves the cluster time on, as the primary's
    periodic no-op write does on an idle cluster (every 10 s, too slow for a test)."""
    client["elsewhere"].noise.insert_one({})
    client.drop_database("elsewhere")


def test_one_window_over_200_idle_tables_publishes_nothing_and_advances(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    for i in range(200):
        db.create_collection(f"c{i:03d}")
    snapshot(ctx)
    assert len([p for p in all_plans(ctx.state) if p.phase == Phase.STREAMING]) == 200
    reader = reader_for(ctx)
    before = stream_token(ctx)
    counts = {f"c{i:03d}": 0 for i in range(200)}
    write_elsewhere(mongo_client)
    result = reader.window()
    assert result.idle and result.events == 0 and result.tables == {}
    assert stream_token(ctx) > before
    for name in counts:
        assert ctx.publisher.allocated_count(TableRef(db.name, name)) == 0


def test_changes_during_a_snapshot_are_held_then_published_after_it(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(100)])
    plans = plan_selected(ctx).plans
    assert plans[0].phase == Phase.SNAPSHOTTING
    reader = reader_for(ctx)
    db.orders.update_one({"_id": 5}, {"$set": {"v": "changed"}})
    db.orders.delete_one({"_id": 6})
    db.orders.insert_one({"_id": 1000, "v": 1000})
    reader.window()
    table = plans[0].table
    held = [f.path for f in ctx.publisher.store.list_files(f"{table.folder}/{HELD_FOLDER}")]
    assert len(held) == 1 and ctx.publisher.allocated_count(table) == 0
    assert not reader.settled()

    for index in plans[0].pending_partitions:
        run_partition(ctx, PartitionTask(table, index))
    drain(reader)
    assert ctx.publisher.store.list_files(f"{table.folder}/{HELD_FOLDER}") == []
    assert_verified(ctx)


def test_a_second_reader_cannot_take_a_live_lease_and_a_stale_one_stops(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db, first = streaming(ctx, mongo_client, orders=[{"_id": 1}])
    other = make_context()
    with pytest.raises(LeaseHeld, match="another process"):
        reader_for(other)
    first.release()
    second = reader_for(other)
    db.orders.insert_one({"_id": 2})
    # The first reader forgot it released (a stale process): it must not publish.
    first._owner = "stale"
    with pytest.raises(MirrorError, match="another reader took over"):
        first.window()
    drain(second)
    assert_verified(ctx)


# -- faults -------------------------------------------------------------------------------------


class FlakyStore:
    """The real store, failing the Nth write or rename (counted across both) with OSError."""

    def __init__(self, store: LandingZoneStore, fail_at: set[int]) -> None:
        self._store = store
        self._fail_at = fail_at
        self.calls = 0

    def _tick(self, what: str) -> None:
        self.calls += 1
        if self.calls in self._fail_at:
            raise OSError(f"injected storage error on {what} #{self.calls}")

    def write(self, path: str, data: bytes) -> None:
        self._tick("write")
        self._store.write(path, data)

    def write_new(self, path: str, data: bytes) -> None:
        self._tick("write")
        self._store.write_new(path, data)

    def rename_new(self, source: str, target: str) -> None:
        self._tick("rename")
        self._store.rename_new(source, target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("fail_at", [{1}, {2}, {3}, {2, 5}, {4, 6, 9}])
def test_storage_errors_during_publish_never_lose_or_duplicate_a_change(
    make_context: MakeContext, mongo_client: MongoClient, fail_at: set[int]
):
    ctx = make_context()
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.a.insert_many([{"_id": i, "v": i} for i in range(20)])
    db.b.insert_many([{"_id": str(i), "v": i} for i in range(20)])
    snapshot(ctx)
    flaky = FlakyStore(ctx.publisher.store, fail_at)
    ctx.publisher.store = flaky  # type: ignore[assignment]
    reader = reader_for(ctx)
    failures = 0
    for round_ in range(4):
        db.a.update_many({"_id": {"$lt": 10}}, {"$inc": {"v": 1}})
        db.b.delete_one({"_id": str(round_)})
        db.b.insert_one({"_id": f"new-{round_}", "v": [round_]})
        db.a.replace_one({"_id": 15}, {"v": f"round {round_}"})
        for _ in range(20):
            try:
                if reader.window().idle:
                    break
            except OSError:
                failures += 1
                if failures % 2:
                    # The process dies here; its successor takes over once the lease is free.
                    reader.release()
                    reader = reader_for(ctx)
                # Otherwise the same reader tries again (as the Functions tick's next window).
    assert failures == len(fail_at)
    drain(reader)
    assert_verified(ctx)


@pytest.mark.parametrize("fail_at", [{1}, {3}, {6}])
def test_windows_checkpoint_only_what_they_consumed_of_the_stream_read_ahead(
    make_context: MakeContext, mongo_client: MongoClient, fail_at: set[int]
):
    """Every change is written before the first window of 5 events, so the stream has read far
    beyond each window (its first batch holds them all): a reader that stops after one window,
    and a window that fails, must leave the events read ahead of them to the next window."""
    ctx = make_context(CHANGE_WINDOW_EVENTS="5")
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(10)])
    snapshot(ctx)
    for i in range(10, 40):
        db.orders.insert_one({"_id": i, "v": i})
    db.orders.update_many({"_id": {"$lt": 5}}, {"$set": {"v": "changed"}})
    db.orders.delete_many({"_id": {"$gte": 35}})
    reader = reader_for(ctx)
    first = reader.window()
    assert first.events == 5 and not first.idle
    reader.release()  # the process stops after one window
    reader = reader_for(ctx)
    ctx.publisher.store = FlakyStore(ctx.publisher.store, fail_at)  # type: ignore[assignment]
    failures = 0
    for _ in range(50):
        try:
            if reader.window().idle:
                break
        except OSError:
            failures += 1
    assert failures == 1
    assert_verified(ctx)


def test_dropped_connections_and_failed_getmores_resume_from_the_checkpoint(
    sandbox_factory: SandboxFactory, make_context: MakeContext
):
    server: SandboxServer = sandbox_factory()
    ctx = make_context(uri=server.uri)
    client: MongoClient = MongoClient(server.uri)
    db = client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(30)])
    snapshot(ctx)
    reader = reader_for(ctx)
    # (commands, options): the driver resumes once by itself; the errors it cannot resume
    # from (its resume fails too, or the error is not resumable) reach the reader.
    faults: list[tuple[list[str], dict[str, Any]]] = [
        (["getMore"], {"close_connection": True, "times": 1}),
        (["getMore"], {"error_code": 6, "times": 1}),  # HostUnreachable: resumable
        (["getMore"], {"close_connection": True, "times": 3}),
        (["getMore", "aggregate"], {"close_connection": True, "times": 3}),
        (["getMore", "aggregate"], {"error_code": 89, "times": 3}),  # NetworkTimeout
        (["getMore"], {"error_code": 2, "times": 1}),  # BadValue: not resumable at all
    ]
    errors = 0
    for round_, (commands, fault) in enumerate(faults):
        db.orders.update_one({"_id": round_}, {"$set": {"v": f"r{round_}"}})
        db.orders.insert_one({"_id": 100 + round_, "n": round_})
        db.orders.delete_one({"_id": 29 - round_})
        server.fail_command(commands, **fault)
        for _ in range(20):
            try:
                if reader.window().idle:
                    break
            except PyMongoError:
                errors += 1
        server.clear_faults()
    drain(reader)
    assert errors >= 3  # the faults that outlived the driver's own resume
    assert_verified(ctx)
    client.close()


@pytest.mark.parametrize(
    ("restarted", "error"),
    [(False, "CappedPositionLost"), (True, "ChangeStreamHistoryLost")],
    ids=["open-cursor-lags-136", "resume-point-gone-286"],
)
def test_history_lost_rebuilds_the_table_automatically(
    small_oplog_sandbox: SandboxServer, make_context: MakeContext, restarted: bool, error: str
):
    ctx = make_context(uri=small_oplog_sandbox.uri)
    client: MongoClient = MongoClient(small_oplog_sandbox.uri)
    db = client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(10)])
    snapshot(ctx)
    reader = reader_for(ctx)
    drain(reader)
    table = TableRef(db.name, "orders")
    if restarted:  # the mirror stops; a new reader resumes from the checkpoint
        reader.release()
        reader = reader_for(ctx)
    # The mirror pauses while more changes happen than the oplog keeps: an open cursor's scan
    # dies with CappedPositionLost (136), a resume from the checkpoint finds it gone (286).
    for i in range(SMALL_OPLOG_SIZE + 5):
        db.orders.update_one({"_id": i % 10}, {"$set": {"v": -i}})
    db.orders.insert_one({"_id": "late"})

    result = reader.window()
    assert result.rebuilt == [str(table)]
    assert load_plan(ctx.state, table) is None
    record = ctx.state.get(REBUILD_KIND, table.folder)
    assert record is not None and record.value["count"] == 1
    cause = record.value["causes"][0]["cause"]
    assert "history lost" in cause and error in cause
    snapshot(ctx)
    db.orders.delete_one({"_id": 0})
    drain(reader, ctx)
    assert_verified(ctx)
    client.close()


def test_a_cursor_expired_between_windows_is_reopened_from_the_checkpoint(
    sandbox_factory: SandboxFactory, make_context: MakeContext
):
    server: SandboxServer = sandbox_factory()
    ctx = make_context(uri=server.uri)
    client: MongoClient = MongoClient(server.uri)
    db = client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(10)])
    snapshot(ctx)
    reader = reader_for(ctx)
    drain(reader)
    # The mirror idles past the server's cursor timeout; the server kills its cursor.
    assert server.expire_idle_cursors() == 1
    db.orders.update_one({"_id": 1}, {"$set": {"v": "after"}})
    db.orders.delete_one({"_id": 2})
    result = reader.window()  # no error reaches the caller, and no change is missed
    assert result.events == 2
    assert reader.rereads == {"CursorNotFound (43), cursor reopened": 1}  # and it is counted
    drain(reader)
    assert_verified(ctx)
    client.close()


def test_a_dropped_and_recreated_collection_is_rebuilt(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(10)])
    db.other.insert_one({"_id": 1})
    snapshot(ctx)
    reader = reader_for(ctx)
    db.orders.drop()
    db.orders.insert_many([{"_id": i, "w": str(i)} for i in range(5, 8)])
    db.other.insert_one({"_id": 2})
    results = drain(reader, ctx)
    assert [name for r in results for name in r.rebuilt] == [f"{db.name}.orders"]
    record = ctx.state.get(REBUILD_KIND, TableRef(db.name, "orders").folder)
    assert record is not None and "dropped" in record.value["causes"][0]["cause"]
    assert_verified(ctx)


def test_a_renamed_collection_leaves_no_stale_table_and_the_new_one_is_mirrored(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db, reader = streaming(ctx, mongo_client, before=[{"_id": i, "v": i} for i in range(10)])
    db.before.rename("after")
    db.after.insert_one({"_id": 99})
    drain(reader, ctx)
    store = ctx.publisher.store
    assert store.list_files(TableRef(db.name, "before").folder) == []
    assert store.size(TableRef(db.name, "after").metadata_file) is not None
    assert_verified(ctx)


def test_a_dropped_database_rebuilds_every_table_and_streams_on_when_it_returns(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(10)])
    db.other.insert_one({"_id": 1})
    snapshot(ctx)
    reader = reader_for(ctx)
    mongo_client.drop_database(db.name)
    rebuilt: list[str] = []
    for _ in range(20):  # the drop events, then the invalidate: the stream goes on startAfter
        result = reader.window()
        rebuilt += result.rebuilt
        if result.idle:
            break
    assert sorted(set(rebuilt)) == [f"{db.name}.orders", f"{db.name}.other"]
    for name in ("orders", "other"):
        assert ctx.publisher.store.list_files(TableRef(db.name, name).folder) == []
    db.orders.insert_many([{"_id": i, "again": True} for i in range(3)])
    drain(reader, ctx)
    assert_verified(ctx)


def record_batches(monkeypatch: pytest.MonkeyPatch, batch_events: int) -> list[list[str]]:
    """Make the reader's cursors ask for ``batch_events`` per batch, and note each batch's
    operation types as the server sent them."""
    monkeypatch.setattr(change_stream_module, "BATCH_EVENTS", batch_events)
    batches: list[list[str]] = []
    take = change_stream_module.ChangeCursor._take

    def noting(cursor: Any, reply: bytes, batch: str) -> Any:
        documents = bson.decode(reply)["cursor"][f"{batch}Batch"]
        batches.append([document["operationType"] for document in documents])
        return take(cursor, reply, batch)

    monkeypatch.setattr(change_stream_module.ChangeCursor, "_take", noting)
    return batches


def drop_database_after_one_insert(
    ctx: MirrorContext, mongo_client: MongoClient
) -> Database[dict[str, Any]]:
    """Two mirrored collections, then 4 events: an insert, two drops and dropDatabase."""
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(10)])
    db.other.insert_one({"_id": 1})
    snapshot(ctx)
    db.orders.insert_one({"_id": 10, "v": 10})
    mongo_client.drop_database(db.name)
    return db


def test_a_database_dropped_as_the_last_event_of_a_batch_is_invalidated_then_streams_on(
    make_context: MakeContext, mongo_client: MongoClient, monkeypatch: pytest.MonkeyPatch
):
    # The batch ends right after dropDatabase; the invalidate comes in the next one, and the
    # reader goes on with startAfter its token once the collections come back.
    batches = record_batches(monkeypatch, 4)
    ctx = make_context()
    db = drop_database_after_one_insert(ctx, mongo_client)
    reader = reader_for(ctx)
    rebuilt: list[str] = []
    start_after: list[bool] = []  # how each window's checkpoint goes on
    for _ in range(20):
        result = reader.window()
        rebuilt += result.rebuilt
        record = ctx.state.get(STREAM_KIND, db.name)
        assert record is not None
        start_after.append(bool(record.value["start_after"]))
        if result.idle:
            break
    assert ["insert", "drop", "drop", "dropDatabase"] in batches  # the boundary fell there
    after = batches[batches.index(["insert", "drop", "drop", "dropDatabase"]) + 1]
    assert after == ["invalidate"]
    # The window that read the invalidate checkpointed its token for startAfter; the windows
    # after it go on from ordinary tokens of the new stream.
    assert True in start_after and start_after[-1] is False
    assert sorted(set(rebuilt)) == [f"{db.name}.orders", f"{db.name}.other"]
    db.orders.insert_many([{"_id": i, "again": True} for i in range(3)])
    db.other.insert_one({"_id": 2})
    drain(reader, ctx)
    assert_verified(ctx)


def test_a_reader_resuming_from_a_drop_database_token_gets_the_invalidate(
    make_context: MakeContext, mongo_client: MongoClient, monkeypatch: pytest.MonkeyPatch
):
    # A window of 4 events ends at dropDatabase and checkpoints its token; a new reader resumes
    # after it (resumeAfter), and a server then sends the invalidate first.
    batches = record_batches(monkeypatch, 100)
    ctx = make_context(CHANGE_WINDOW_EVENTS="4")
    db = drop_database_after_one_insert(ctx, mongo_client)
    reader = reader_for(ctx)
    first = reader.window()
    assert first.events == 4 and sorted(first.rebuilt) == [
        f"{db.name}.orders",
        f"{db.name}.other",
    ]
    record = ctx.state.get(STREAM_KIND, db.name)
    assert record is not None and record.value["start_after"] is False
    reader.release()
    batches.clear()
    reader = reader_for(ctx)
    second = reader.window()
    assert batches[0] == ["invalidate"] and second.events == 1  # the resumed stream's first
    record = ctx.state.get(STREAM_KIND, db.name)
    assert record is not None and record.value["start_after"] is True
    db.orders.insert_many([{"_id": i, "again": True} for i in range(3)])
    drain(reader, ctx)
    assert_verified(ctx)


def test_a_server_without_split_events_is_mirrored_without_the_stage(
    make_context: MakeContext, sandbox_factory: SandboxFactory
):
    # A 6.0 server answers 40324 for $changeStreamSplitLargeEvent; the reader streams without it.
    server = sandbox_factory(split_large_events=False)
    ctx = make_context(uri=server.uri)
    with MongoClient(server.uri) as client:
        db, reader = streaming(ctx, client, orders=[{"_id": i, "v": i} for i in range(5)])
        db.orders.insert_many([{"_id": i, "v": i} for i in range(5, 9)])
        db.orders.update_one({"_id": 1}, {"$set": {"v": "changed"}})
        db.orders.delete_one({"_id": 2})
        results = drain(reader, ctx)
        assert sum(result.events for result in results) == 6
        assert_verified(ctx)
