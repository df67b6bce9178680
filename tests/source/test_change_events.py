"""Events read from a reply buffer: the vectorised way and the one-by-one way agree, and bad
bytes are named rather than misread."""

from __future__ import annotations

import datetime

import bson
import pytest
from bson import ObjectId
from bson.timestamp import Timestamp

from shared.errors import MirrorError
from shared.source.bson_elements import fields
from shared.source.change_events import ChangeEvent, event_position, read_event, read_events


def event(operation: str, number: int, **extra: object) -> dict[str, object]:
    return {
        "_id": {"_data": f"82{number:040X}"},
        "operationType": operation,
        "clusterTime": Timestamp(1_800_000_000 + number, 1),
        "wallTime": datetime.datetime(2027, 1, 1),
        **extra,
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": number},
    }


def batch(*events: dict[str, object]) -> tuple[bytes, list[int]]:
    encoded = [bson.encode(e) for e in events]
    offsets, position = [], 0
    for data in encoded:
        offsets.append(position)
        position += len(data)
    return b"".join(encoded), offsets


def one_by_one(buffer: bytes, offset: int) -> ChangeEvent:
    found = fields(buffer, offset)
    size = int.from_bytes(buffer[offset : offset + 4], "little")
    return read_event(found, event_position(found), size)


def test_both_ways_read_the_same_events() -> None:
    buffer, offsets = batch(
        *[event("insert", n, fullDocument={"_id": n, "v": "x" * n}) for n in range(5)],
        event("update", 5, fullDocument={"_id": 5, "oid": ObjectId()}, updateDescription={}),
        event("update", 6, fullDocument=None, updateDescription={}),
        event("replace", 7, fullDocument={"_id": 7}),
        event("delete", 8),
        {**event("rename", 9), "to": {"db": "shop", "coll": "archive"}},
    )
    fast = read_events(buffer, offsets)
    slow = [one_by_one(buffer, offset) for offset in offsets]
    assert [e is not None for e in fast] == [True] * 8 + [False, False]  # deletes, renames: slow
    assert [e for e in fast if e is not None] == slow[:8]
    assert slow[6].document is None and slow[8].document == bson.encode({"_id": 8})
    assert (slow[9].target, slow[9].target_database) == ("archive", "shop")
    assert all(e.target_database is None for e in slow[:9])


def test_a_transactions_events_are_read_like_any_other_sharing_one_cluster_time() -> None:
    # As a server sends them: txnNumber and lsid first (change_stream_event_transform.cpp),
    # one clusterTime for every event of the transaction, ordered by their tokens alone.
    session = {"lsid": {"id": bson.Binary(bytes(16), 4), "uid": bson.Binary(bytes(32))}}
    shared = Timestamp(1_800_000_000, 7)
    inside = [
        {"txnNumber": bson.Int64(3), **session, **event(kind, n, fullDocument={"_id": n})}
        | {"clusterTime": shared}
        for n, kind in enumerate(("insert", "update", "replace"))
    ]
    deleted = {"txnNumber": bson.Int64(3), **session, **event("delete", 3), "clusterTime": shared}
    buffer, offsets = batch(*inside, deleted)
    fast = read_events(buffer, offsets)
    slow = [one_by_one(buffer, offset) for offset in offsets]
    assert fast[:3] == slow[:3] and fast[3] is None  # deletes go the one-by-one way
    assert {e.cluster_seconds for e in slow} == {shared.time}
    assert [e.position for e in slow] == sorted({e.position for e in slow})
    assert [e.document for e in slow] == [
        *(bson.encode({"_id": n}) for n in range(3)),
        bson.encode({"_id": 3}),
    ]


def test_text_that_is_not_utf8_is_named_not_misread() -> None:
    buffer, offsets = batch(event("insert", 1, fullDocument={"_id": 1}))
    damaged = buffer.replace(b"orders", b"orde\xff\xfe")
    assert read_events(damaged, offsets) == [None]  # left to the one-by-one reader...
    with pytest.raises(MirrorError, match="not UTF-8"):
        one_by_one(damaged, offsets[0])  # ...which names the problem
