"""Multi-document transactions through PyMongo sessions, and their change events.

Runs against the session sandbox, or unchanged against a real replica set with MONGODB_TEST_URI.
What is checked is the server's documented behaviour (the manual's "Transactions" and "Change
Events" pages, the drivers' transactions specification): a transaction's writes appear together
at commit and never if aborted; its events share one clusterTime, carry lsid and txnNumber, are
ordered by their resume tokens, and a stream resumed from any of them goes on with the next.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest
from bson.int64 import Int64
from pymongo.client_session import ClientSession
from pymongo.errors import DuplicateKeyError, OperationFailure

from mongodb_sandbox.errors import ErrorCode
from tests.sandbox.test_change_streams_contract import AWAIT_MS, Client, events, next_event

TRANSIENT = "TransientTransactionError"


def mixed_transaction(db: Any, session: ClientSession) -> None:
    """Seven operations over two collections (the stream sees them in this order)."""
    db.a.insert_many([{"_id": 1}, {"_id": 2}], session=session)
    db.b.insert_one({"_id": 1, "v": 1}, session=session)
    db.a.update_one({"_id": 0}, {"$set": {"x": 1}}, session=session)
    db.b.replace_one({"_id": 1}, {"v": 2}, session=session)
    db.a.delete_one({"_id": 2}, session=session)
    db.b.insert_one({"_id": 2}, session=session)


def watched_transaction(
    client: Client, db: Any
) -> tuple[list[dict[str, Any]], dict[str, Any], Mapping[str, Any]]:
    """A stream on ``db`` (``a`` holding ``{_id: 0}``) while ``mixed_transaction`` commits and
    then ``{_id: "after"}`` is inserted outside it: the transaction's seven events, the insert's
    event, and the transaction's session id."""
    db.a.insert_one({"_id": 0})
    with db.watch(max_await_time_ms=AWAIT_MS) as stream:
        with client.start_session() as session:
            with session.start_transaction():
                mixed_transaction(db, session)
            lsid = session.session_id
        db.a.insert_one({"_id": "after"})
        return events(stream, 7), next_event(stream), lsid


def test_a_commit_shows_every_write_at_once_and_reads_inside_see_their_own(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0})
    db.b.insert_one({"_id": 0})
    with mongo_client.start_session() as session:
        with session.start_transaction():
            mixed_transaction(db, session)
            inside = sorted(d["_id"] for d in db.a.find({}, session=session))
            assert inside == [0, 1]
            assert db.b.find_one({"_id": 1}, session=session) == {"_id": 1, "v": 2}
            assert db.a.count_documents({}, session=session) == 2
            # Nobody else sees any of it before the commit.
            assert list(db.a.find()) == [{"_id": 0}]
            assert list(db.b.find()) == [{"_id": 0}]
    assert list(db.a.find().sort("_id")) == [{"_id": 0, "x": 1}, {"_id": 1}]
    assert list(db.b.find().sort("_id")) == [{"_id": 0}, {"_id": 1, "v": 2}, {"_id": 2}]


def test_a_transaction_reads_its_snapshot_not_later_commits(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0, "v": 0})
    with mongo_client.start_session() as session, session.start_transaction():
        assert db.a.find_one({"_id": 0}, session=session) == {"_id": 0, "v": 0}
        db.a.insert_one({"_id": 1, "v": 1})  # outside, after the snapshot
        assert db.a.find_one({"_id": 1}, session=session) is None


def test_an_aborted_transaction_leaves_nothing_and_emits_nothing(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0})
    with db.watch(max_await_time_ms=AWAIT_MS) as stream:
        with mongo_client.start_session() as session:
            session.start_transaction()
            mixed_transaction(db, session)
            session.abort_transaction()
            session.start_transaction()
            db.a.insert_one({"_id": 7}, session=session)
            with pytest.raises(DuplicateKeyError):  # a failed statement aborts it
                db.a.insert_one({"_id": 7}, session=session)
            session.abort_transaction()
        db.a.insert_one({"_id": "marker"})
        assert next_event(stream)["documentKey"] == {"_id": "marker"}
    assert list(db.a.find().sort("_id")) == [{"_id": 0}, {"_id": "marker"}]
    assert list(db.b.find()) == []


def test_a_transactions_events_share_one_cluster_time_and_carry_its_session(
    mongo_client: Client, mongo_db_name: str
) -> None:
    inside, after, lsid = watched_transaction(mongo_client, mongo_client[mongo_db_name])
    assert [(e["operationType"], e["ns"]["coll"], e["documentKey"]["_id"]) for e in inside] == [
        ("insert", "a", 1),
        ("insert", "a", 2),
        ("insert", "b", 1),
        ("update", "a", 0),
        ("replace", "b", 1),
        ("delete", "a", 2),
        ("insert", "b", 2),
    ]
    assert len({e["clusterTime"] for e in inside}) == 1
    assert len({e["wallTime"] for e in inside}) == 1
    assert after["clusterTime"] > inside[0]["clusterTime"]
    numbers = {e["txnNumber"] for e in inside}
    assert len(numbers) == 1 and isinstance(next(iter(numbers)), Int64)
    for event in inside:
        assert event["lsid"]["id"] == lsid["id"]
        assert len(event["lsid"]["uid"]) == 32  # SHA-256 of the user
    assert "lsid" not in after and "txnNumber" not in after
    tokens = [e["_id"]["_data"] for e in [*inside, after]]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_a_stream_resumed_inside_a_transaction_goes_on_with_exactly_the_rest(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    inside, after, _ = watched_transaction(mongo_client, db)
    everything = [*inside, after]
    keys = [(e["ns"]["coll"], e["documentKey"]["_id"]) for e in everything]
    for index, event in enumerate(everything[:-1]):
        with db.watch(resume_after=event["_id"], max_await_time_ms=AWAIT_MS) as resumed:
            rest = events(resumed, len(everything) - index - 1)
        assert [(e["ns"]["coll"], e["documentKey"]["_id"]) for e in rest] == keys[index + 1 :]
        assert [e["_id"] for e in rest] == [e["_id"] for e in everything[index + 1 :]]


def test_start_at_the_transactions_cluster_time_replays_all_of_it(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    inside, _, _ = watched_transaction(mongo_client, db)
    with db.watch(
        start_at_operation_time=inside[0]["clusterTime"], max_await_time_ms=AWAIT_MS
    ) as replay:
        assert [e["_id"] for e in events(replay, 7)] == [e["_id"] for e in inside]


def test_a_retried_commit_succeeds_and_a_commit_after_a_failed_statement_does_not(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.a.insert_one({"_id": 1}, session=session)
        session.commit_transaction()
        session.commit_transaction()  # the drivers' spec: re-sends commitTransaction
        assert db.a.count_documents({}) == 1
        session.start_transaction()
        db.a.insert_one({"_id": 2}, session=session)
        with pytest.raises(DuplicateKeyError):
            db.a.insert_one({"_id": 1}, session=session)  # aborts the transaction
        with pytest.raises(OperationFailure) as failed:
            session.commit_transaction()
    assert failed.value.code == ErrorCode.NO_SUCH_TRANSACTION
    assert failed.value.has_error_label(TRANSIENT)
    assert db.a.count_documents({}) == 1


def test_two_transactions_writing_one_document_conflict(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0, "v": 0})
    with mongo_client.start_session() as first, mongo_client.start_session() as second:
        first.start_transaction()
        second.start_transaction()
        db.a.update_one({"_id": 0}, {"$set": {"v": 1}}, session=first)
        with pytest.raises(OperationFailure) as conflict:
            db.a.update_one({"_id": 0}, {"$set": {"v": 2}}, session=second)
        assert conflict.value.code == ErrorCode.WRITE_CONFLICT
        assert conflict.value.has_error_label(TRANSIENT)
        # The loser is aborted: its next statement finds no transaction.
        with pytest.raises(OperationFailure) as gone:
            db.a.insert_one({"_id": 9}, session=second)
        assert gone.value.code == ErrorCode.NO_SUCH_TRANSACTION
        assert gone.value.has_error_label(TRANSIENT)
        second.abort_transaction()
        first.commit_transaction()
    assert db.a.find_one({"_id": 0}) == {"_id": 0, "v": 1}
    assert db.a.find_one({"_id": 9}) is None


def test_a_write_committed_after_the_snapshot_conflicts_and_with_transaction_retries(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0, "v": 0})
    attempts: list[int] = []

    def increment(session: ClientSession) -> None:
        attempts.append(1)
        current = db.a.find_one({"_id": 0}, session=session)
        assert current is not None
        if len(attempts) == 1:
            db.a.update_one({"_id": 0}, {"$set": {"v": 10}})  # outside, after the snapshot
        db.a.update_one({"_id": 0}, {"$set": {"v": current["v"] + 1}}, session=session)

    with mongo_client.start_session() as session:
        session.with_transaction(increment)
    # The first attempt's write conflicted (TransientTransactionError): it ran again.
    assert len(attempts) == 2
    assert db.a.find_one({"_id": 0}) == {"_id": 0, "v": 11}


def test_a_write_outside_waits_for_the_transaction_holding_its_document(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0, "v": 0})
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.a.update_one({"_id": 0}, {"$set": {"v": 5}}, session=session)
        outside = threading.Thread(
            target=db.a.update_one, args=({"_id": 0}, {"$inc": {"v": 1}}), daemon=True
        )
        outside.start()
        session.commit_transaction()
    outside.join(timeout=30)
    assert not outside.is_alive()
    # Applied after the commit, to the committed value: it waited rather than being lost.
    assert db.a.find_one({"_id": 0}) == {"_id": 0, "v": 6}


def test_commands_a_transaction_cannot_run_are_refused_with_the_real_code(
    mongo_client: Client, mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.a.insert_one({"_id": 0})
    with mongo_client.start_session() as session:
        session.start_transaction()
        with pytest.raises(OperationFailure) as refused:
            db.command("count", "a", session=session)
        assert refused.value.code == ErrorCode.OPERATION_NOT_SUPPORTED_IN_TRANSACTION
        session.abort_transaction()
