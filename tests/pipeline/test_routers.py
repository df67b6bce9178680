"""The mirror through a sharded cluster's routers (the sandbox's `--routers 2`): every getMore of
the change stream goes to the router that opened its cursor, so no window is ever read again
because another router answered CursorNotFound; and the snapshot's reads stay on their router.

Sandbox-only: a private sandbox with two routers (skipped under MONGODB_TEST_URI).
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from mongodb_sandbox import SandboxServer
from mongodb_sandbox.errors import ErrorCode
from shared.landing_zone.tables import TableRef
from shared.pipeline.status import format_status, status_report
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.source.client import ServerPin, connect, pinned
from shared.source.retry import Retrier
from shared.state import open_state_store
from tests.fixtures.mongodb import SandboxFactory
from tests.pipeline.in_process import (
    MakeContext,
    assert_verified,
    drain,
    reader_for,
    snapshot,
)
from tests.pipeline.test_run_cli import (
    RunProcess,
    Writer,
    assert_verified_in_process,
    local_backend,
    open_publisher,
    run_once,
    streamed_changes,
    wait_for,
)

COLLECTIONS = ("items", "others")
NO_REREADS = "(0 read again after a failure)"


class TwoCollectionWriter(Writer):
    """The run tests' random writer (inserts, updates, replaces, deletes; seeded), spread over
    two collections."""

    def target(self, database: Any) -> Any:
        return database[self._rng.choice(COLLECTIONS)]


@pytest.fixture
def routers(sandbox_factory: SandboxFactory) -> SandboxServer:
    """A private sandbox standing in for a sharded cluster with two routers."""
    return sandbox_factory(routers=2)


@pytest.fixture
def routed_context(routers: SandboxServer, make_context: MakeContext) -> MakeContext:
    """make_context's mirror contexts, on the two routers' URI."""
    return functools.partial(make_context, uri=routers.uri)


def stream_record(state_path: str, database: str) -> dict[str, Any]:
    state = open_state_store(state_path)
    try:
        record = state.get(STREAM_KIND, database)
    finally:
        state.close()
    assert record is not None
    return dict(record.value)


def test_run_through_two_routers_reads_no_window_twice(routers: SandboxServer, tmp_path: Path):
    """`run` snapshots and streams two collections through two routers while a seeded random
    writer changes them; no window fails (each would be read again), and the mirror verifies."""
    uri, database = routers.uri, f"routers_{uuid.uuid4().hex[:8]}"
    backend = local_backend(tmp_path)
    writer = TwoCollectionWriter(uri, database, seed=14, rate=200)
    with MongoClient(uri) as client:
        for name in COLLECTIONS:
            writer.seed(client[database][name], 50)
    writer.start()
    process = RunProcess(tmp_path, uri, database, backend, "--partitions", "2")
    publisher = open_publisher(backend)
    tables = [TableRef(database, name) for name in COLLECTIONS]
    try:
        wait_for(
            lambda: all(streamed_changes(publisher, table) >= 150 for table in tables),
            process,
            "150 streamed events in each table",
        )
    finally:
        publisher.state.close()
        operations = writer.finish()
        returncode = process.stop()
    assert returncode == 0, process.stderr[-3000:]
    assert operations >= 300
    assert NO_REREADS in process.stdout, process.stdout + process.stderr[-3000:]
    assert "CursorNotFound" not in process.stderr
    output = run_once(uri, database, backend)
    assert NO_REREADS in output, output[-3000:]
    assert "rereads" not in stream_record(backend[1], database)  # none recorded for status
    assert_verified_in_process(uri, database, backend)


def test_change_windows_through_two_routers_are_never_read_again(
    routers: SandboxServer, routed_context: MakeContext, mongo_db_name: str
):
    """The engine loop in process, as `run` drives it (a failed window retried from the
    checkpoint): a concurrent writer, windows of 50 events, each a few getMores of the one
    stream cursor; no window is read again and verify is equal."""
    ctx = routed_context()
    retrier = Retrier.for_settings(ctx.settings, "change stream")
    writer = TwoCollectionWriter(routers.uri, mongo_db_name, seed=3, rate=400)
    with MongoClient(routers.uri) as client:
        for name in COLLECTIONS:
            writer.seed(client[mongo_db_name][name], 40)
    snapshot(ctx)
    reader = reader_for(ctx)
    writer.start()
    results = []
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            results.append(retrier.call(reader.window))
    finally:
        writer.finish()
    results += drain(reader, ctx)
    reader.release()
    assert sum(result.events for result in results) >= 300
    assert reader.rereads == Counter() and all(result.rereads == 0 for result in results)
    assert_verified(ctx)


def test_a_failed_getmore_is_counted_where_status_shows_it(
    routers: SandboxServer, routed_context: MakeContext, mongo_db_name: str
):
    """What the tests above count: a getMore failing with CursorNotFound at the start of a
    window (as through the wrong router) reopens the stream from the checkpoint, which loses
    nothing; the reader, that window and the status all say so."""
    ctx = routed_context()
    with MongoClient(routers.uri) as client:
        items = client[mongo_db_name].items
        items.insert_many([{"_id": i} for i in range(10)])
        snapshot(ctx)
        reader = reader_for(ctx)
        assert reader.window().rereads == 0  # the stream is open
        routers.fail_command("getMore", error_code=ErrorCode.CURSOR_NOT_FOUND)
        items.insert_many([{"_id": i} for i in range(10, 20)])
        results = drain(reader, ctx)
    cause = "CursorNotFound (43), cursor reopened"
    assert reader.rereads == Counter({cause: 1})
    assert sum(result.events for result in results) >= 10
    reader.release()
    report = status_report(ctx.state)
    (database,) = report["databases"]
    assert database["window_rereads"] == {cause: 1}
    assert f"windows read again after a failure: 1 {cause}" in format_status(report)
    assert_verified(ctx)


def test_a_snapshot_through_two_routers_reads_past_its_first_batch(
    routers: SandboxServer, routed_context: MakeContext, mongo_db_name: str
):
    """12,000 documents: the partition's raw-batch cursor (10,000 a batch) needs getMores, which
    PyMongo sends to its cursor's router. Retries are off, so a CursorNotFound would fail it."""
    with MongoClient(routers.uri) as client:
        client[mongo_db_name].items.insert_many(
            [{"_id": i, "n": f"document {i}"} for i in range(12_000)]
        )
    ctx = routed_context(MONGODB_RETRY_SECONDS="0", FILE_ROWS="5000")
    snapshot(ctx)
    assert_verified(ctx)


def test_a_pin_follows_routers_only(routers: SandboxServer, sandbox_factory: SandboxFactory):
    """Through routers the pin keeps every command on the first one chosen; on a replica set it
    never pins (the driver's own selection, primary first, stays as it was)."""
    with connect(routers.uri) as client:
        pin = ServerPin()
        seen: set[Any] = set()
        for _ in range(20):
            with pinned(pin):
                client.admin.command("ping")
            seen.add(pin.address)
        assert len(seen) == 1 and pin.address is not None
        assert f"{pin.address[0]}:{pin.address[1]}" in routers.uri
        # Threads of their own (the change cursor's fetching thread) keep to it too.
        elsewhere: list[Any] = []

        def ping_pinned() -> None:
            with pinned(pin):
                elsewhere.append(client.admin.command("ping")["ok"])

        thread = threading.Thread(target=ping_pinned)
        thread.start()
        thread.join(timeout=30)
        assert elsewhere == [1.0] and pin.address in seen
    replica_set = sandbox_factory()
    with connect(replica_set.replica_set_uri) as client:
        pin = ServerPin()
        with pinned(pin):
            client.admin.command("ping")
        assert pin.address is None
