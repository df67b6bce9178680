"""Direct staging (issue 15, item 3): snapshot files carry no `__rowMarker__` (every row an
insert, which Fabric applies without a duplicate check), change files carry it from the first one
on; the Delta table the replicator builds from them (snapshot files appended, change files merged
by key, as the landing-zone format page describes) equals the source; and however partitions are
retried, redelivered or their workers killed, no `_id` is ever written twice.

The replicator is shared/replicator/engine.py; the Delta table is judged by `verify_delta`.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from pymongo import MongoClient

from mongodb_sandbox import SandboxServer
from shared.config import load_settings
from shared.delta_tables import DeltaTables, parse_tables_to_write
from shared.landing_zone.parquet_files import KEY_COLUMN, ROW_MARKER
from shared.landing_zone.publisher import SEQUENCE_KIND
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef, sequence_of
from shared.pipeline.plans import load_plan
from shared.pipeline.snapshot import PartitionTask, run_partition
from shared.pipeline.verify import format_report, verify_delta
from shared.pipeline.wiring import open_context
from shared.replicator.engine import SEQUENCE_KEY, Replicator
from shared.source.retry import ErrorCode
from shared.state.sqlite import SqliteStateStore
from tests.fixtures.console import console_command, console_env
from tests.fixtures.freezing import Freeze
from tests.fixtures.mongodb import SandboxFactory
from tests.pipeline.in_process import (
    MakeContext,
    assert_verified,
    drain,
    reader_for,
    snapshot,
)
from tests.pipeline.mirror_checks import assert_mirrors
from tests.pipeline.test_snapshot_cli import worker_pids

DATABASE = "shop"


def numbered_files(store: LandingZoneStore, table: TableRef) -> list[tuple[int, pa.Table]]:
    found = []
    for stored in store.list_files(table.folder):
        number = sequence_of(stored.path.rsplit("/", 1)[-1])
        if number is not None:
            found.append((number, pq.read_table(io.BytesIO(store.read(stored.path)))))
    return sorted(found, key=lambda item: item[0])


def test_snapshot_inserts_then_marked_changes_give_a_delta_table_equal_to_the_source(
    make_context: MakeContext, mongo_client: MongoClient, tmp_path: Path
):
    ctx = make_context(FILE_ROWS="25")
    db = mongo_client[ctx.settings.require("MONGODB_DATABASE")]
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    db.orders.insert_many(
        [
            {
                "_id": i if i % 3 else f"k{i}",
                "qty": i,
                "price": i / 4,
                "when": start + dt.timedelta(hours=i),
                "lines": [{"sku": i % 7}],
                "paid": i % 2 == 0,
            }
            for i in range(60)
        ]
    )
    snapshot(ctx)
    table = TableRef(db.name, "orders")
    snapshot_files = ctx.publisher.allocated_count(table)
    tables = parse_tables_to_write(str(tmp_path / "Tables"))
    replicator = Replicator(ctx.publisher.store, tables)
    # The snapshot's files, as the mirror published them, before any change file.
    files = numbered_files(ctx.publisher.store, table)
    assert snapshot_files == 3 and [number for number, _ in files] == [1, 2, 3]
    assert replicator.run_once().files == snapshot_files
    reader = reader_for(ctx)
    db.orders.update_one({"_id": 1}, {"$set": {"qty": -1, "note": "added later"}})
    db.orders.replace_one({"_id": 2}, {"qty": 2})
    db.orders.delete_one({"_id": "k3"})
    db.orders.insert_one({"_id": 1000, "qty": 1000, "when": start})
    drain(reader)
    db.orders.delete_one({"_id": 4})
    db.orders.insert_one({"_id": "k3", "qty": 3, "again": True})  # deleted, then back
    db.orders.update_many({"qty": {"$gt": 50}}, {"$inc": {"qty": 1}})
    drain(reader)

    files += numbered_files(ctx.publisher.store, table)  # the change files
    assert len(files) > snapshot_files
    for number, rows in files:
        if number <= snapshot_files:
            assert ROW_MARKER not in rows.column_names, f"snapshot file {number}"
        else:
            assert rows.column_names[-1] == ROW_MARKER, f"change file {number}"
    snapshot_ids = [i for _, rows in files[:snapshot_files] for i in rows.column(KEY_COLUMN)]
    assert len(snapshot_ids) == len(set(snapshot_ids)) == 60
    assert_verified(ctx)

    # The replicator applies them: the snapshot's files appended (direct staging), each change
    # file merged by key; the Delta table equals the source.
    summary = replicator.run_once()
    assert not summary.failed and summary.files == len(files) - snapshot_files
    history = DeltaTable(DeltaTables(tables).uri(table)).history()
    applied = {  # the commits that applied a file (others add the columns a file brings)
        int(commit[SEQUENCE_KEY]): commit["operation"]
        for commit in history
        if SEQUENCE_KEY in commit
    }
    assert applied == {
        number: "WRITE" if number <= snapshot_files else "MERGE" for number, _ in files
    }
    report = verify_delta(DeltaTables(tables), db, None)
    assert report.equal, format_report(report)


KILLED_DOCUMENTS = 24_000
# After a NotPrimary-like error the driver waits for its next heartbeat (10 s by default).
FAST_HEARTBEAT = "&heartbeatFrequencyMS=500"


def snapshot_process(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        console_command("snapshot"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its workers go with it if the test fails
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, stderr


def published(folder: Path) -> int:
    return sum(1 for path in folder.iterdir() if sequence_of(path.name) is not None)


def test_retried_redelivered_and_killed_partitions_write_every_id_once(
    sandbox_factory: SandboxFactory, tmp_path: Path
):
    """Run 1: a worker is frozen between numbering a file and renaming it into place, and killed
    there. Run 2: reads fail and are retried (resuming after the last `_id` read), and a worker
    is killed mid-partition. Run 3 completes; then every partition is delivered once more. Every
    `_id` is in exactly one snapshot file, none of which has a marker column."""
    server: SandboxServer = sandbox_factory()
    ids: list[Any] = [
        *range(KILLED_DOCUMENTS // 2),
        *(f"s{n:06d}" for n in range(KILLED_DOCUMENTS // 2)),
    ]
    with MongoClient(server.uri) as client:
        client[DATABASE].orders.insert_many({"_id": i, "n": n} for n, i in enumerate(ids))
    env = console_env(
        {
            "MONGODB_URI": server.uri + FAST_HEARTBEAT,
            "MONGODB_DATABASE": DATABASE,
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": str(tmp_path / "state.db"),
            "SNAPSHOT_WORKERS": "2",
            "SNAPSHOT_PARTITIONS": "4",
            "FILE_ROWS": "400",
            "MONGODB_RETRY_SECONDS": "30",
        }
    )
    table = TableRef(DATABASE, "orders")
    folder = tmp_path / "lz" / table.folder

    # Run 1: frozen after the allocation's compare-and-swap, before the rename; then killed.
    freeze = Freeze(
        tmp_path, "shared.landing_zone.publisher:Publisher._finish", call=3, workers_only=True
    )
    first = snapshot_process(freeze.env(env))
    victim = freeze.wait(first)
    state = SqliteStateStore(tmp_path / "state.db")
    try:
        frozen = state.get(SEQUENCE_KIND, table.folder)
        assert frozen is not None and frozen.value["pending"], "frozen with a number pending"
    finally:
        state.close()
    os.kill(victim, signal.SIGKILL)
    code, stderr = finish(first)
    assert code == 1 and "a worker process died" in stderr, stderr[-3000:]

    # Run 2: transient read faults, and a worker killed once a few more files are out.
    server.fail_command(["find", "getMore"], error_code=ErrorCode.HOST_UNREACHABLE, times=4)
    before = published(folder)
    second = snapshot_process(env)
    deadline = time.monotonic() + 120
    while published(folder) < before + 3:
        assert second.poll() is None and time.monotonic() < deadline, "run 2 ended too early"
        time.sleep(0.01)
    os.kill(worker_pids(second.pid)[0], signal.SIGKILL)
    code, stderr = finish(second)
    assert code == 1 and "a worker process died" in stderr, stderr[-3000:]

    # Run 3 completes; a redelivery of every partition then publishes nothing.
    code, stderr = finish(snapshot_process(env))
    assert code == 0, stderr[-3000:]
    with MongoClient(server.uri, retryReads=False) as client:  # the faults were all met
        assert len(list(client[DATABASE].orders.find({}, batch_size=2).limit(3))) == 3
    ctx = open_context(load_settings(env))
    try:
        plan = load_plan(ctx.state, table)
        assert plan is not None
        files_before = ctx.publisher.allocated_count(table)
        for index in range(len(plan.ranges)):
            assert run_partition(ctx, PartitionTask(table, index)).files == 0
        assert ctx.publisher.allocated_count(table) == files_before
        sequence = ctx.state.get(SEQUENCE_KIND, table.folder)
        assert sequence is not None and sequence.value["pending"] == {}

        files = numbered_files(ctx.publisher.store, table)
        assert [number for number, _ in files] == list(range(1, files_before + 1))
        assert all(ROW_MARKER not in rows.column_names for _, rows in files)
        written = [key for _, rows in files for key in rows.column(KEY_COLUMN).to_pylist()]
        assert len(written) == len(set(written)) == KILLED_DOCUMENTS
        with MongoClient(server.uri) as client:
            assert_mirrors(ctx.publisher.store, ctx.state, table, client[DATABASE].orders)
    finally:
        ctx.close()
