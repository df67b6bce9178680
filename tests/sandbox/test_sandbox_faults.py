"""Fault injection and history loss: controls only the sandbox has (skipped under MONGODB_TEST_URI).

Each test gets private sandbox servers, so injected faults never reach other tests.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, OperationFailure

from mongodb_sandbox import SandboxServer
from mongodb_sandbox.errors import ErrorCode
from tests.fixtures.mongodb import SMALL_OPLOG_SIZE, SandboxFactory
from tests.sandbox.test_change_streams_contract import AWAIT_MS, events, next_event

Client = MongoClient[dict[str, Any]]


def connect(server: SandboxServer, **options: Any) -> Client:
    return MongoClient(server.uri, serverSelectionTimeoutMS=5000, **options)


def test_resume_from_a_token_older_than_the_oplog_fails_with_286(
    small_oplog_sandbox: SandboxServer,
) -> None:
    with connect(small_oplog_sandbox) as client:
        coll = client.db.items
        coll.insert_one({"_id": 0})
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_one({"_id": 1})
            next_event(stream)
            token = stream.resume_token
        coll.insert_many([{"_id": i} for i in range(2, 3 + SMALL_OPLOG_SIZE)])
        with pytest.raises(OperationFailure) as raised, coll.watch(resume_after=token) as stream:
            stream.try_next()
    error = raised.value
    assert error.code == ErrorCode.CHANGE_STREAM_HISTORY_LOST
    assert "Resume of change stream was not possible" in str(error)
    assert error.has_error_label("NonResumableChangeStreamError")


def test_token_still_in_a_small_oplog_resumes(small_oplog_sandbox: SandboxServer) -> None:
    with connect(small_oplog_sandbox) as client:
        coll = client.db.items
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_many([{"_id": i} for i in range(3)])
            token = events(stream, 1)[0]["_id"]
        with coll.watch(resume_after=token, max_await_time_ms=AWAIT_MS) as resumed:
            assert [e["documentKey"]["_id"] for e in events(resumed, 2)] == [1, 2]


def test_a_lagging_stream_fails_with_capped_position_lost(
    small_oplog_sandbox: SandboxServer,
) -> None:
    with connect(small_oplog_sandbox) as client:
        coll = client.db.items
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_one({"_id": 0})
            next_event(stream)
            coll.insert_many([{"_id": i} for i in range(1, 3 + SMALL_OPLOG_SIZE)])
            with pytest.raises(OperationFailure) as raised:
                stream.try_next()
    # The open cursor's oplog scan dies (136), which the driver does not resume from.
    assert raised.value.code == ErrorCode.CAPPED_POSITION_LOST
    assert "CollectionScan died" in str(raised.value)


def test_start_at_operation_time_before_the_oplog_fails(small_oplog_sandbox: SandboxServer) -> None:
    with connect(small_oplog_sandbox) as client:
        coll = client.db.items
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_one({"_id": 0})
            start = next_event(stream)["clusterTime"]
        coll.insert_many([{"_id": i} for i in range(1, 3 + SMALL_OPLOG_SIZE)])
        with pytest.raises(OperationFailure) as raised:
            coll.watch(start_at_operation_time=start).try_next()
    assert raised.value.code == ErrorCode.CHANGE_STREAM_HISTORY_LOST


def test_fail_command_fail_point(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    with connect(server) as client:
        client.db.items.insert_one({"_id": 1})
        client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={"failCommands": ["find"], "errorCode": ErrorCode.BAD_VALUE},
        )
        with pytest.raises(OperationFailure) as raised:
            client.db.items.find_one()
        assert raised.value.code == ErrorCode.BAD_VALUE
        assert (raised.value.details or {}).get("codeName") == "BadValue"
        assert client.db.items.find_one() == {"_id": 1}
        client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode="alwaysOn",
            data={"failCommands": ["count"], "errorCode": 8000, "errorLabels": ["Custom"]},
        )
        for _ in range(2):
            with pytest.raises(OperationFailure) as raised:
                client.db.items.estimated_document_count()
            assert raised.value.has_error_label("Custom")
            # A code outside the table travels the way MongoDB sends an unnamed assertion's.
            assert (raised.value.details or {}).get("codeName") == "Location8000"
        client.admin.command("configureFailPoint", "failCommand", mode="off")
        assert client.db.items.estimated_document_count() == 1


def test_close_connection_fail_point(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    with connect(server, retryReads=False) as client:
        client.db.items.insert_one({"_id": 1})
        client.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={"failCommands": ["find"], "closeConnection": True},
        )
        with pytest.raises(AutoReconnect):
            client.db.items.find_one()
        assert client.db.items.find_one() == {"_id": 1}


def test_retryable_write_error_is_retried_once(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    with connect(server) as client:
        # HostUnreachable: retryable, but not a state change that makes the driver rediscover.
        server.fail_command("insert", error_code=ErrorCode.HOST_UNREACHABLE, times=1)
        client.db.items.insert_one({"_id": 1})  # the driver retries the labelled error
        assert client.db.items.count_documents({}) == 1


def test_python_fault_api_and_clear(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    with connect(server, retryReads=False) as client:
        server.fail_command(["find", "aggregate"], error_code=ErrorCode.UNAUTHORIZED, times=None)
        for _ in range(3):
            with pytest.raises(OperationFailure):
                client.db.items.find_one()
        server.clear_faults()
        assert client.db.items.find_one() is None


def test_change_stream_resumes_after_dropped_connections(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    with connect(server) as client:
        coll = client.db.items
        with coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            coll.insert_one({"_id": 1})
            assert next_event(stream)["documentKey"] == {"_id": 1}
            server.drop_connections()
            coll.insert_one({"_id": 2})  # retryable write: reconnects
            assert next_event(stream)["documentKey"] == {"_id": 2}
            # A getMore failing once its cursor is checked out carries ResumableChangeStreamError
            # (failCommand fails it earlier, unlabelled, and the driver then does not resume).
            client.admin.command(
                {
                    "configureFailPoint": "failGetMoreAfterCursorCheckout",
                    "mode": {"times": 1},
                    "data": {"errorCode": int(ErrorCode.HOST_UNREACHABLE)},
                }
            )
            coll.insert_one({"_id": 3})
            assert next_event(stream)["documentKey"] == {"_id": 3}
            assert stream.try_next() is None


@pytest.mark.parametrize(("noop_interval", "advances"), [(0.0, True), (3600.0, False)])
def test_an_idle_stream_token_moves_only_with_the_periodic_noop_write(
    sandbox_factory: SandboxFactory, noop_interval: float, advances: bool
) -> None:
    server = sandbox_factory(noop_interval_seconds=noop_interval)
    with connect(server) as client, client.db.items.watch(max_await_time_ms=AWAIT_MS) as stream:
        assert stream.try_next() is None
        first = stream.resume_token
        assert stream.try_next() is None
        second = stream.resume_token
        assert first is not None and second is not None
        assert (second["_data"] > first["_data"]) is advances
        client.db.other.insert_one({"_id": 1})  # any write moves the cluster time on
        assert stream.try_next() is None
        third = stream.resume_token
        assert third is not None and third["_data"] > second["_data"]


def test_an_idle_cursor_dies_with_its_timeout_and_a_getmore_finds_it_gone(
    sandbox_factory: SandboxFactory,
) -> None:
    server = sandbox_factory()
    with connect(server) as client:
        client.db.items.insert_many([{"_id": i} for i in range(5)])
        cursor = client.db.items.find(batch_size=2)
        assert next(cursor) == {"_id": 0}
        assert server.expire_idle_cursors() == 1
        with pytest.raises(OperationFailure) as raised:
            list(cursor)
    assert raised.value.code == ErrorCode.CURSOR_NOT_FOUND


def test_cursors_of_an_ended_session_die_with_it(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    with connect(server) as client:
        client.db.items.insert_many([{"_id": i} for i in range(5)])
        session = client.start_session()
        cursor = client.db.items.find(batch_size=2, session=session)
        assert next(cursor) == {"_id": 0}
        client.admin.command("endSessions", [session.session_id])
        with pytest.raises(OperationFailure) as raised:
            list(cursor)
        session.end_session()
    assert raised.value.code == ErrorCode.CURSOR_NOT_FOUND


def test_small_event_limit_splits_or_fails(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(max_event_bytes=16 * 1024)
    split_stage = [{"$changeStreamSplitLargeEvent": {}}]
    options: dict[str, Any] = {"full_document": "updateLookup", "max_await_time_ms": AWAIT_MS}
    with connect(server) as client:
        coll = client.db.items
        coll.insert_one({"_id": 1, "a": "x" * 6000})
        with coll.watch(split_stage, **options) as split, coll.watch(**options) as plain:
            # fullDocument (12 KB) and updatedFields (6 KB) only fit the limit as two fragments.
            coll.update_one({"_id": 1}, {"$set": {"b": "y" * 6000}})
            fragments = events(split, 2)
            with pytest.raises(OperationFailure) as raised:
                next_event(plain)
        assert raised.value.code == ErrorCode.BSON_OBJECT_TOO_LARGE
        assert [f["splitEvent"] for f in fragments] == [
            {"fragment": 1, "of": 2},
            {"fragment": 2, "of": 2},
        ]
        assert fragments[0]["fullDocument"]["b"] == "y" * 6000
        assert fragments[1]["updateDescription"]["updatedFields"] == {"b": "y" * 6000}
        # Resuming from the first fragment delivers the rest of the event.
        with coll.watch(split_stage, resume_after=fragments[0]["_id"], **options) as resumed:
            assert next_event(resumed)["splitEvent"] == {"fragment": 2, "of": 2}
        # A single field over the limit cannot be split.
        with coll.watch(split_stage, **options) as split:
            coll.insert_one({"_id": 2, "a": "z" * 20_000})
            with pytest.raises(OperationFailure) as raised:
                next_event(split)
        assert raised.value.code == ErrorCode.BSON_OBJECT_TOO_LARGE


def test_a_server_without_split_events_refuses_the_stage_like_6_0(
    sandbox_factory: SandboxFactory,
) -> None:
    # Servers before 6.0.9 have no $changeStreamSplitLargeEvent: DocumentSource::parse answers
    # 40324 for it, which is what the mirror's fallback recognises.
    server = sandbox_factory(split_large_events=False)
    with connect(server) as client, pytest.raises(OperationFailure) as raised:
        client.db.items.watch([{"$changeStreamSplitLargeEvent": {}}])
    assert raised.value.code == ErrorCode.UNRECOGNIZED_PIPELINE_STAGE
