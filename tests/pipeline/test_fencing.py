"""A paused or stale process never changes what a newer one owns (issue 13).

Each test freezes a real process with SIGSTOP at an exact point (tests/fixtures/freezing.py),
lets another process take over, wakes the frozen one, and then judges the mirror: `verify`
equal, `inspect` conforming, the right exit codes. The MongoDB side is the sandbox; the landing
zone a local folder and the state SQLite, as a VM runs it (the fencing lives in the engine, not
in the stores; the Azurite variants of the same protocol run in test_run_cli and the property
test).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared.config import load_settings
from shared.landing_zone.publisher import SEQUENCE_KIND
from shared.landing_zone.tables import TableRef
from shared.pipeline.changes import _died_here
from shared.pipeline.plans import Phase, load_plan
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.pipeline.wiring import MirrorContext, open_context
from tests.fixtures.console import console_command, console_env
from tests.fixtures.freezing import Freeze
from tests.pipeline.reader_child import SUPERSEDED_EXIT
from tests.pipeline.test_run_cli import (
    REPO_ROOT,
    Backend,
    RunProcess,
    assert_verified,
    assert_verified_in_process,
    is_streaming,
    local_backend,
    open_publisher,
    run_once,
    streamed_changes,
    wait_for,
)

LEASE_SECONDS = 5  # the shortest the settings allow
Client = MongoClient[dict[str, Any]]


def mirror_env(uri: str, database: str, backend: Backend, **extra: str) -> dict[str, str]:
    """The settings of every process of one mirror, as environment variables."""
    return console_env(
        {
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "LANDING_ZONE": backend[0],
            "STATE_STORE": backend[1],
            "CHANGE_LEASE_SECONDS": str(LEASE_SECONDS),
            "CHANGE_AWAIT_MS": "50",
            "SNAPSHOT_WORKERS": "1",
            **extra,
        }
    )


@contextmanager
def mirror_context(env: dict[str, str]) -> Iterator[MirrorContext]:
    ctx = open_context(load_settings(env))
    try:
        yield ctx
    finally:
        ctx.close()


def start_reader(env: dict[str, str], freeze: Freeze) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipeline.reader_child"],
        cwd=REPO_ROOT,
        env=freeze.env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def completed(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def read_windows(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return completed([sys.executable, "-m", "tests.pipeline.reader_child"], env)


def console(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return completed(console_command(*args), env)


def wait_for_lease_to_lapse(env: dict[str, str], database: str) -> None:
    """The frozen reader's lease runs out, as it would while a VM stays frozen."""
    with mirror_context(env) as ctx:
        record = ctx.state.get(STREAM_KIND, database)
        assert record is not None
        expires = float(record.value.get("lease_expires", 0))
    while time.time() <= expires:
        time.sleep(0.05)


@contextmanager
def frozen_snapshot(env: dict[str, str], freeze: Freeze, *args: str) -> Iterator[None]:
    """`snapshot` as a process of its own session, stopped at ``freeze``'s point for the body of
    the with block, then woken and run to its end (killed if the body fails)."""
    snapshot = subprocess.Popen(
        console_command("snapshot", *args),
        cwd=REPO_ROOT,
        env=freeze.env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        freeze.wait(snapshot)
        yield
        freeze.wake()
        snapshot.communicate(timeout=120)
    finally:
        if snapshot.poll() is None:
            os.killpg(snapshot.pid, signal.SIGCONT)
            os.killpg(snapshot.pid, signal.SIGKILL)
            snapshot.wait()


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_a_paused_reader_never_replaces_a_newer_readers_held_changes(
    mongo_client: Client, mongodb_uri: str, mongo_db_name: str, tmp_path: Path
) -> None:
    """Item 1: reader A freezes while writing held changes (inserts x0..x4) for a table being
    snapshotted; the source deletes them and inserts z0; reader B takes over and holds all of
    it; A wakes. Before, A replaced B's held file and the table kept 5 extra rows for ever."""
    db = mongo_client[mongo_db_name]
    db.orders.insert_many([{"_id": f"a{i}", "n": i} for i in range(10)])
    backend = local_backend(tmp_path)
    env = mirror_env(mongodb_uri, mongo_db_name, backend)
    with mirror_context(env) as ctx:
        plan_selected(ctx)  # planned, not snapshotted: its changes are held
    db.orders.insert_many([{"_id": f"x{i}", "n": i} for i in range(5)])

    freeze = Freeze(tmp_path, "shared.pipeline.changes:ChangeReader._write_held")
    paused = start_reader(env, freeze)
    freeze.wait(paused)
    db.orders.delete_many({"_id": {"$in": [f"x{i}" for i in range(5)]}})
    db.orders.insert_one({"_id": "z0", "n": 0})
    wait_for_lease_to_lapse(env, mongo_db_name)
    successor = read_windows(env)
    assert successor.returncode == 0, successor.stderr[-3000:]

    freeze.wake()
    code, stderr = finish(paused)
    assert code == SUPERSEDED_EXIT, stderr[-3000:]
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified(mongodb_uri, mongo_db_name, backend)


def test_a_paused_snapshot_worker_never_completes_a_newer_plan(
    mongo_client: Client, mongodb_uri: str, mongo_db_name: str, tmp_path: Path
) -> None:
    """Item 2: a worker freezes before recording its partition done; the table is resynced and
    planned anew; the worker wakes. Before, it flipped the new plan to streaming with nothing
    published: `run` exited 0 with the table empty."""
    db = mongo_client[mongo_db_name]
    db.orders.insert_many([{"_id": i, "n": i} for i in range(1000)])
    backend = local_backend(tmp_path)
    env = mirror_env(mongodb_uri, mongo_db_name, backend, SNAPSHOT_PARTITIONS="1")
    freeze = Freeze(tmp_path, "shared.pipeline.snapshot:complete_partition")
    with frozen_snapshot(env, freeze):
        resync = console(env, "resync", "--table", f"{mongo_db_name}.orders")
        assert resync.returncode == 0, resync.stderr[-3000:]
        table = TableRef.for_collection(mongo_db_name, "orders")
        with mirror_context(env) as ctx:
            plan_selected(ctx)  # the new plan, not yet run
            plan = load_plan(ctx.state, table)
            assert plan is not None and plan.phase == Phase.SNAPSHOTTING
    with mirror_context(env) as ctx:
        plan = load_plan(ctx.state, table)
        assert plan is not None and plan.phase == Phase.SNAPSHOTTING, "a stale worker"
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified(mongodb_uri, mongo_db_name, backend)


def test_a_paused_worker_never_brings_back_a_collection_dropped_for_good(
    mongo_client: Client, mongodb_uri: str, mongo_db_name: str, tmp_path: Path
) -> None:
    """A snapshot worker freezes after reading its plan; the collection is dropped for good and
    `run` rebuilds its table away; the worker wakes. Before, preparing the table bound a new
    generation: a folder with `_metadata.json` (an empty table in Fabric) that nothing removed."""
    db = mongo_client[mongo_db_name]
    db.gone.insert_many([{"_id": i} for i in range(100)])
    db.orders.insert_many([{"_id": i} for i in range(10)])
    backend = local_backend(tmp_path)
    env = mirror_env(mongodb_uri, mongo_db_name, backend, SNAPSHOT_PARTITIONS="1")
    point = "shared.landing_zone.publisher:Publisher.prepare_table"
    freeze = Freeze(tmp_path, point, workers_only=True)
    with frozen_snapshot(env, freeze, "--collections", "gone"):
        db.gone.drop()
        run_once(mongodb_uri, mongo_db_name, backend)
    assert not (Path(backend[0]) / TableRef.for_collection(mongo_db_name, "gone").folder).exists()
    assert_verified(mongodb_uri, mongo_db_name, backend)


def test_held_changes_of_an_unplanned_collection_go_with_its_drop(
    mongo_client: Client, mongodb_uri: str, mongo_db_name: str, tmp_path: Path
) -> None:
    """Item 3: a collection created after planning has its changes held; it is dropped and
    re-created (and another is dropped for good) before it is ever planned. Before, the held
    rows reached the new collection's table (5 extra rows) and the other left an empty table."""
    db = mongo_client[mongo_db_name]
    db.orders.insert_many([{"_id": i, "n": i} for i in range(10)])
    backend = local_backend(tmp_path)
    env = mirror_env(mongodb_uri, mongo_db_name, backend)
    run_once(mongodb_uri, mongo_db_name, backend)
    db.late.insert_many([{"_id": f"old{i}"} for i in range(5)])
    db.gone.insert_many([{"_id": f"old{i}"} for i in range(3)])
    held = read_windows(env)  # holds both: neither is planned
    assert held.returncode == 0, held.stderr[-3000:]
    with mirror_context(env) as ctx:
        assert ctx.state.get(SEQUENCE_KIND, TableRef.for_collection(mongo_db_name, "late").folder)
    db.late.drop()
    db.gone.drop()
    db.late.insert_many([{"_id": f"new{i}"} for i in range(2)])

    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified(mongodb_uri, mongo_db_name, backend)
    gone = Path(backend[0]) / TableRef.for_collection(mongo_db_name, "gone").folder
    assert not gone.exists()


@pytest.mark.parametrize("point", ["shared.pipeline.changes:rebuild_table", "sweep"])
def test_a_paused_rebuild_never_removes_the_table_built_after_it(
    mongo_client: Client, mongodb_uri: str, mongo_db_name: str, tmp_path: Path, point: str
) -> None:
    """Item 5: reader A freezes in its rebuild after a drop (before it starts, or after it
    retired the table and listed its files); `run` rebuilds and re-snapshots the table; A wakes.
    Before, A deleted the new folder and state: the table was gone."""
    db = mongo_client[mongo_db_name]
    db.orders.insert_many([{"_id": i, "n": i} for i in range(20)])
    backend = local_backend(tmp_path)
    env = mirror_env(mongodb_uri, mongo_db_name, backend)
    run_once(mongodb_uri, mongo_db_name, backend)
    db.orders.drop()
    db.orders.insert_many([{"_id": i, "n": -i} for i in range(5, 15)])

    where = "shared.landing_zone.publisher:Publisher.sweep" if point == "sweep" else point
    freeze = Freeze(tmp_path, where)
    paused = start_reader(env, freeze)
    freeze.wait(paused)
    wait_for_lease_to_lapse(env, mongo_db_name)
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified_in_process(mongodb_uri, mongo_db_name, backend)

    freeze.wake()
    code, stderr = finish(paused)
    assert code == SUPERSEDED_EXIT, stderr[-3000:]
    assert_verified(mongodb_uri, mongo_db_name, backend)  # before, the table was gone
    run_once(mongodb_uri, mongo_db_name, backend)  # and the next run finds nothing to mend


def test_resync_during_a_run_rebuilds_one_table_and_the_run_goes_on(
    mongo_client: Client, mongodb_uri: str, mongo_db_name: str, tmp_path: Path
) -> None:
    """Item 8: `resync` while `run` streams. Before, the run died ("another process took over
    changes") although no other process existed; now the run lets the table go, plans it anew,
    snapshots it and streams on, and the other table never stops."""
    db = mongo_client[mongo_db_name]
    db.orders.insert_many([{"_id": i, "n": i} for i in range(30)])
    db.users.insert_many([{"_id": i} for i in range(5)])
    backend = local_backend(tmp_path)
    env = mirror_env(mongodb_uri, mongo_db_name, backend)
    run = RunProcess(tmp_path, mongodb_uri, mongo_db_name, backend)
    publisher = open_publisher(backend)
    orders = TableRef(mongo_db_name, "orders")
    try:
        wait_for(lambda: is_streaming(publisher, orders), run, "orders streams")
        db.orders.insert_one({"_id": "before resync", "n": 0})  # the run claims the table
        wait_for(lambda: streamed_changes(publisher, orders) >= 1, run, "a change streamed")
        old = publisher.generation(orders)
        resync = console(env, "resync", "--table", f"{mongo_db_name}.orders")
        assert resync.returncode == 0, resync.stderr[-3000:]
        db.orders.insert_one({"_id": "after resync", "n": -1})  # the run meets the rebuilt table
        db.users.insert_one({"_id": "during"})

        def rebuilt_and_streaming() -> bool:
            sequence = publisher.state.get(SEQUENCE_KIND, orders.folder)
            return (
                sequence is not None
                and sequence.value.get("generation") != old
                and "retired" not in sequence.value
                and is_streaming(publisher, orders)
            )

        wait_for(rebuilt_and_streaming, run, "orders rebuilt and streaming again")
        db.orders.insert_one({"_id": "streamed", "n": -2})
        wait_for(lambda: streamed_changes(publisher, orders) >= 1, run, "a change streamed")
    finally:
        publisher.state.close()
        code = run.stop()
    assert code == 0, run.stderr[-3000:]
    assert "took over" not in run.stderr
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified(mongodb_uri, mongo_db_name, backend)


def test_a_zombie_lease_holder_counts_as_dead() -> None:
    """Item 9: a killed holder its parent has not reaped yet still answers kill(pid, 0)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            time.sleep(0.01)  # not reaped: Popen.wait() is never called until the end
        os.kill(child.pid, 0)  # what the old check relied on: it succeeds on a zombie
        assert _died_here({"host": socket.gethostname(), "pid": child.pid})
    finally:
        child.wait()
    assert not _died_here({"host": socket.gethostname(), "pid": os.getppid()})
