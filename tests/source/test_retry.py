"""Transient MongoDB faults: which errors are retried, resumed reads, the budget, one-line errors.

Faults are injected with the sandbox's `failCommand` fail point, so these tests use private
sandbox servers (skipped under MONGODB_TEST_URI).
"""

from __future__ import annotations

from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure

from mongodb_sandbox import SandboxServer
from mongodb_sandbox.errors import ErrorCode as SandboxErrorCode
from shared.conversion import split_documents
from shared.errors import MirrorError
from shared.source.client import connect
from shared.source.id_ranges import IdRange, read_chunks_resuming
from shared.source.retry import ErrorCode, Retrier, describe, is_transient
from tests.fixtures.mongodb import SandboxFactory

COUNT = 100
# After a NotPrimary or shutdown error the driver waits for its next heartbeat before it uses the
# server again; the default 10 s heartbeat would make every such retry here take 10 s.
FAST_HEARTBEAT = "&heartbeatFrequencyMS=500"


@pytest.fixture
def server(sandbox_factory: SandboxFactory) -> SandboxServer:
    server = sandbox_factory()
    with MongoClient(server.uri) as client:
        client.db.items.insert_many([{"_id": n, "v": "x" * n} for n in range(COUNT)])
    return server


@pytest.fixture
def client(server: SandboxServer) -> Any:
    # The engine's own client: raw documents, driver read retries on.
    client = connect(server.uri + FAST_HEARTBEAT)
    yield client
    client.close()


def read_ids(collection: Any, retrier: Retrier, after: Any = None) -> list[Any]:
    chunks = read_chunks_resuming(collection, IdRange(), after, retrier, batch_size=7, max_rows=5)
    return [RawBSONDocument(raw)["_id"] for chunk in chunks for raw in split_documents(chunk.data)]


@pytest.mark.parametrize(
    "fault",
    [
        {"error_code": ErrorCode.HOST_UNREACHABLE, "times": 5},
        {"error_code": ErrorCode.SHUTDOWN_IN_PROGRESS, "times": 3},
        {"error_code": ErrorCode.NOT_WRITABLE_PRIMARY, "times": 2},
        {"close_connection": True, "times": 4},
        {"error_code": 8000, "error_labels": ["RetryableReadError"], "times": 3},
    ],
    ids=["HostUnreachable", "ShutdownInProgress", "NotWritablePrimary", "closed", "labelled"],
)
def test_a_read_resumes_after_the_last_chunk_through_faults(
    server: SandboxServer, client: Any, fault: dict[str, Any]
):
    server.fail_command(["find", "getMore"], **fault)
    assert read_ids(client.db.items, Retrier("test read", 30)) == list(range(COUNT))
    # Every injected failure was met (the fail point is spent): the faults really hit the read.
    with MongoClient(server.uri, retryReads=False) as plain:
        assert len(list(plain.db.items.find({}, batch_size=2).limit(5))) == 5


def test_a_resumed_read_starts_after_the_given_id(server: SandboxServer, client: Any):
    server.fail_command("getMore", error_code=ErrorCode.HOST_UNREACHABLE, times=2)
    assert read_ids(client.db.items, Retrier("test read", 30), after=41) == list(range(42, COUNT))


def test_a_persistent_fault_fails_after_the_budget_with_one_clean_line(
    server: SandboxServer, client: Any
):
    # Every read fails, so no attempt gets further than the one before (progress would restart
    # the budget).
    server.fail_command(["find", "getMore"], error_code=ErrorCode.SHUTDOWN_IN_PROGRESS, times=None)
    with pytest.raises(MirrorError) as raised:
        read_ids(client.db.items, Retrier("db.items partition 0", 0.5))
    message = str(raised.value)
    assert message.startswith("db.items partition 0: ShutdownInProgress (91): ")
    assert "MONGODB_RETRY_SECONDS=0.5" in message
    assert "\n" not in message and "RawBSONDocument" not in message and "\\x" not in message


def test_a_zero_budget_does_not_retry(server: SandboxServer, client: Any):
    server.fail_command("getMore", error_code=ErrorCode.HOST_UNREACHABLE, times=1)
    with pytest.raises(MirrorError, match=r"HostUnreachable \(6\)"):
        read_ids(client.db.items, Retrier("test read", 0))


def test_a_permanent_error_is_not_retried(server: SandboxServer, client: Any):
    # The same read fails again after BadValue.
    server.fail_command("find", error_code=SandboxErrorCode.BAD_VALUE, times=1)
    retrier = Retrier("planning db.items", 30)
    with pytest.raises(MirrorError) as raised:
        retrier.call(lambda: client.db.items.find_one({}))
    assert str(raised.value) == (
        "planning db.items: BadValue (2): Failing command via 'failCommand' failpoint"
    )
    assert retrier.call(lambda: client.db.items.find_one({})) is not None  # a retry had worked


def test_planning_calls_ride_out_faults(server: SandboxServer, client: Any):
    retrier = Retrier("planning db.items", 30)
    server.fail_command("count", error_code=ErrorCode.PRIMARY_STEPPED_DOWN, times=4)
    assert retrier.call(client.db.items.estimated_document_count) == COUNT
    server.fail_command("aggregate", close_connection=True, times=3)
    assert len(retrier.call(lambda: list(client.db.items.aggregate([{"$limit": 3}])))) == 3


def test_server_errors_read_as_one_line_without_raw_bytes(server: SandboxServer, client: Any):
    server.fail_command("find", error_code=ErrorCode.INTERRUPTED_AT_SHUTDOWN, times=2)
    with pytest.raises(NotPrimaryError) as raised:
        client.db.items.find_one({})
    assert "RawBSONDocument(b" in str(raised.value)  # why describe() exists
    assert describe(raised.value) == (
        "InterruptedAtShutdown (11600): Failing command via 'failCommand' failpoint"
    )
    assert is_transient(raised.value)


def test_network_errors_are_transient_and_named():
    error = AutoReconnect("db.example.net:27017: connection closed")
    assert is_transient(error)
    assert describe(error) == "AutoReconnect: db.example.net:27017: connection closed"
    assert not is_transient(OperationFailure("bad", code=2))
    assert describe(OperationFailure("no such code", code=999999)) == (
        "OperationFailure (999999): no such code"
    )
