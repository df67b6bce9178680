"""The `snapshot` command as a real process against the sandbox: half a million documents with
two workers (auto partitions: one per 250,000 documents, so two ranges in parallel), and a worker
killed with SIGKILL mid-partition, then a rerun that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pymongo import MongoClient

from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.demo import sample_orders
from shared.state.sqlite import SqliteStateStore
from tests.fixtures.console import console_command, console_env
from tests.pipeline.mirror_checks import assert_mirrors, rows_in_files


def load_orders(client: MongoClient, database: str, count: int) -> None:
    chunk = 50_000
    for start in range(0, count, chunk):
        documents = list(sample_orders(min(chunk, count - start), seed=start))
        for offset, document in enumerate(documents):
            document["_id"] = start + offset  # unique across chunks
        client[database].orders.insert_many(documents, ordered=False)


def snapshot_command(tmp_path: Path, uri: str, database: str, *extra: str) -> list[str]:
    return [
        *console_command("snapshot"),
        "--mongodb-uri",
        uri,
        "--database",
        database,
        "--landing-zone",
        str(tmp_path / "lz"),
        "--state",
        str(tmp_path / "state.db"),
        *extra,
    ]


def worker_pids(parent: int) -> list[int]:
    """The pool's worker processes: children of ``parent`` started by multiprocessing's spawn."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def check(tmp_path: Path, client: MongoClient, database: str, count: int) -> None:
    store = LocalStore(tmp_path / "lz")
    state = SqliteStateStore(tmp_path / "state.db")
    table = TableRef(database, "orders")
    try:
        assert rows_in_files(store, table) == count  # every document published exactly once
        assert_mirrors(store, state, table, client[database].orders)
    finally:
        state.close()


def test_half_a_million_orders_with_two_workers(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    count = 500_000  # two ranges on two workers, as a million (which took 3 minutes) had four
    load_orders(mongo_client, mongo_db_name, count)
    result = subprocess.run(
        snapshot_command(tmp_path, mongodb_uri, mongo_db_name, "--workers", "2"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=console_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"snapshot published {count:,} documents" in result.stdout
    assert f"orders: {count:,}/{count:,} docs (100%)" in result.stderr  # the progress display
    check(tmp_path, mongo_client, mongo_db_name, count)


def test_worker_killed_mid_partition_then_rerun_resumes(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    count = 60_000
    load_orders(mongo_client, mongo_db_name, count)
    command = snapshot_command(
        tmp_path,
        mongodb_uri,
        mongo_db_name,
        "--workers",
        "2",
        "--partitions",
        "2",
        "--file-rows",
        "500",
    )
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=console_env()
    )
    folder = tmp_path / "lz" / f"{mongo_db_name}.schema" / "orders"
    deadline = time.monotonic() + 120
    while not list(folder.glob("*0005.parquet")):  # a few files published: partitions are mid-way
        assert first.poll() is None and time.monotonic() < deadline, "snapshot ended too early"
        time.sleep(0.01)
    victims = worker_pids(first.pid)
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 1
    assert "a worker process died" in stderr and "run again to resume" in stderr

    second = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, env=console_env()
    )
    assert second.returncode == 0, second.stderr[-3000:]
    check(tmp_path, mongo_client, mongo_db_name, count)


@pytest.mark.parametrize(
    ("collections", "message"),
    [("nope", "no collection nope"), ("system.views", "empty or system.* collection name")],
)
def test_unknown_collection_is_an_error_not_a_skip(
    tmp_path: Path,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient,
    collections: str,
    message: str,
):
    mongo_client[mongo_db_name].orders.insert_one({"_id": 1})
    command = snapshot_command(tmp_path, mongodb_uri, mongo_db_name, "--collections", collections)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env=console_env()
    )
    assert result.returncode == 2
    assert "configuration error: MONGODB_COLLECTIONS" in result.stderr and message in result.stderr
    assert not (tmp_path / "lz").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_the_process_group_is_a_clean_stop_then_rerun_resumes(
    tmp_path: Path,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient,
    signum: signal.Signals,
):
    """`systemctl stop` (SIGTERM to every process of the unit) or Ctrl-C (SIGINT to the
    foreground group) mid-snapshot: the workers stop after the file in hand and the command
    exits 0 saying how to resume; the rerun publishes the rest, every document exactly once."""
    count = 4_000
    load_orders(mongo_client, mongo_db_name, count)
    command = snapshot_command(
        tmp_path, mongodb_uri, mongo_db_name, "--workers", "2", "--partitions", "2"
    )
    first = subprocess.Popen(
        [*command, "--file-rows", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=console_env(),
        start_new_session=True,  # its own group, signalled as a whole as systemd and a terminal do
    )
    folder = tmp_path / "lz" / f"{mongo_db_name}.schema" / "orders"
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.parquet"))) < 6:  # both workers are publishing
        assert first.poll() is None and time.monotonic() < deadline, "snapshot ended too early"
        time.sleep(0.01)
    os.killpg(first.pid, signum)
    stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr[-3000:]
    assert "worker process died" not in stderr
    assert "stopped by request" in stdout and "run again to resume" in stdout
    assert rows_in_files(LocalStore(tmp_path / "lz"), TableRef(mongo_db_name, "orders")) < count

    second = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, env=console_env()
    )
    assert second.returncode == 0, second.stderr[-3000:]
    check(tmp_path, mongo_client, mongo_db_name, count)
