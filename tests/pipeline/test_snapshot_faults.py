"""Snapshots through transient MongoDB faults: the landing zone still equals the source, and a
fault that outlasts MONGODB_RETRY_SECONDS fails with one clean line.

Faults come from the sandbox's `failCommand` fail point, so each test has a private sandbox
(skipped under MONGODB_TEST_URI).
"""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from mongodb_sandbox import SandboxServer
from shared.config import Settings, load_settings
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.local_snapshot import run_local_snapshot
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.wiring import open_context
from shared.source.retry import ErrorCode
from shared.state.sqlite import SqliteStateStore
from tests.fixtures.mongodb import SandboxFactory
from tests.pipeline.mirror_checks import assert_mirrors, rows_in_files

DATABASE = "shop"
PARTITIONS = 2
# More than PARTITIONS times the 10,000 documents of a read's first batch: however the sampled
# ranges fall, at least one partition reads on with getMore.
DOCUMENTS = 24_000
# After a NotPrimary or shutdown error the driver waits for its next heartbeat before it uses the
# server again; at the default 10 s every such fault would add 10 s to the test.
FAST_HEARTBEAT = "&heartbeatFrequencyMS=500"
# The CLI runs as `python -m` from this checkout: the installed console script imports whichever
# checkout the editable install points at.
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def source(sandbox_factory: SandboxFactory) -> SandboxServer:
    server = sandbox_factory()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with MongoClient(server.uri) as client:
        client[DATABASE].orders.insert_many(
            {
                "_id": n,
                "customer": f"c{n % 97}",
                "total": n / 4,
                "when": start + dt.timedelta(minutes=n),
                "lines": [{"sku": n % 13, "qty": 1 + n % 3}],
            }
            for n in range(DOCUMENTS)
        )
    return server


def settings_for(tmp_path: Path, server: SandboxServer, **extra: str) -> Settings:
    return load_settings(
        {
            "MONGODB_URI": server.uri + FAST_HEARTBEAT,
            "MONGODB_DATABASE": DATABASE,
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": str(tmp_path / "state.db"),
            "SNAPSHOT_WORKERS": "2",
            "SNAPSHOT_PARTITIONS": str(PARTITIONS),
            "FILE_ROWS": "2000",
            **extra,
        }
    )


def plan_only(settings: Settings) -> None:
    """Plan every table now, so faults set afterwards meet only the partitions' reads."""
    ctx = open_context(settings)
    try:
        plan_selected(ctx)
    finally:
        ctx.close()


def assert_fault_spent(server: SandboxServer) -> None:
    """Every injected failure was met: the same commands now succeed, without driver retries."""
    with MongoClient(server.uri, retryReads=False) as client:
        orders = client[DATABASE].orders
        assert len(list(orders.find({}, batch_size=2).limit(5))) == 5  # find and getMore
        assert len(list(orders.aggregate([{"$limit": 1}]))) == 1
        assert orders.estimated_document_count() == DOCUMENTS  # count


def assert_landing_zone_equals_source(tmp_path: Path, server: SandboxServer) -> None:
    store = LocalStore(tmp_path / "lz")
    state = SqliteStateStore(tmp_path / "state.db")
    table = TableRef(DATABASE, "orders")
    try:
        with MongoClient(server.uri) as client:
            assert rows_in_files(store, table) == DOCUMENTS  # each document published once
            assert_mirrors(store, state, table, client[DATABASE].orders)
    finally:
        state.close()


FAULTS: list[Any] = [
    pytest.param(False, ["aggregate"], {"close_connection": True, "times": 4}, id="plan-watch"),
    pytest.param(
        False, ["find"], {"error_code": ErrorCode.NOT_WRITABLE_PRIMARY, "times": 5}, id="plan-find"
    ),
    pytest.param(
        False,
        ["count"],
        {"error_code": ErrorCode.SHUTDOWN_IN_PROGRESS, "times": 5},
        id="plan-count",
    ),
    pytest.param(
        True, ["getMore"], {"error_code": ErrorCode.HOST_UNREACHABLE, "times": 1}, id="read-getMore"
    ),
    pytest.param(True, ["find"], {"close_connection": True, "times": 5}, id="read-find-closed"),
    pytest.param(
        True,
        ["find", "getMore"],
        {"error_code": ErrorCode.SHUTDOWN_IN_PROGRESS, "times": 5},
        id="read-shutdown",
    ),
]


@pytest.mark.parametrize(("planned_first", "commands", "fault"), FAULTS)
def test_a_snapshot_through_transient_faults_equals_the_source(
    tmp_path: Path,
    source: SandboxServer,
    planned_first: bool,
    commands: list[str],
    fault: dict[str, Any],
):
    settings = settings_for(tmp_path, source)
    if planned_first:
        plan_only(settings)
    source.fail_command(commands, **fault)

    summary = run_local_snapshot(settings, io.StringIO())

    assert_fault_spent(source)
    assert summary.documents == DOCUMENTS
    assert_landing_zone_equals_source(tmp_path, source)


def snapshot(tmp_path: Path, server: SandboxServer) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "shared.cli",
        "snapshot",
        "--mongodb-uri",
        server.uri + FAST_HEARTBEAT,
        "--database",
        DATABASE,
        "--landing-zone",
        str(tmp_path / "lz"),
        "--state",
        str(tmp_path / "state.db"),
        "--workers",
        "2",
        "--partitions",
        str(PARTITIONS),
        "--mongodb-retry-seconds",
        "1",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT
    )


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "RawBSONDocument" not in stderr and "\\x00" not in stderr


def test_a_fault_outlasting_the_budget_fails_each_partition_with_one_line(
    tmp_path: Path, source: SandboxServer
):
    plan_only(settings_for(tmp_path, source))
    source.fail_command(["find", "getMore"], error_code=ErrorCode.SHUTDOWN_IN_PROGRESS, times=None)

    result = snapshot(tmp_path, source)

    assert result.returncode == 1, result.stderr[-3000:]
    assert_clean(result.stderr)
    gave_up = [line for line in result.stderr.splitlines() if "MONGODB_RETRY_SECONDS=1" in line]
    assert len(gave_up) == PARTITIONS, result.stderr[-3000:]
    for line in gave_up:
        assert "MongoDB read: ShutdownInProgress (91): Failing command" in line
    assert "run again to resume" in result.stderr

    source.clear_faults()  # the fault is over: a rerun completes the mirror
    assert snapshot(tmp_path, source).returncode == 0
    assert_landing_zone_equals_source(tmp_path, source)


@pytest.mark.parametrize(
    ("fault", "line", "retried"),
    [
        (
            {"error_code": ErrorCode.SHUTDOWN_IN_PROGRESS, "times": None},
            "error: starting the change stream of shop: ShutdownInProgress (91): "
            "Failing command via 'failCommand' failpoint (still failing after ",
            True,
        ),
        (
            {"error_code": 2, "times": None},  # BadValue: not transient
            "error: starting the change stream of shop: BadValue (2): "
            "Failing command via 'failCommand' failpoint",
            False,
        ),
    ],
    ids=["outlasting", "permanent"],
)
def test_a_failing_plan_ends_with_one_line(
    tmp_path: Path, source: SandboxServer, fault: dict[str, Any], line: str, retried: bool
):
    source.fail_command("aggregate", **fault)
    result = snapshot(tmp_path, source)
    assert result.returncode == 1
    assert_clean(result.stderr)
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(line), result.stderr[-3000:]
    assert ("retrying in" in result.stderr) == retried
