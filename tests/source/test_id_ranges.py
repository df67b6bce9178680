"""`_id` ranges: type-exact bounds in state, and ranges that cover mixed-type collections.

Runs against the sandbox, or a real replica set with MONGODB_TEST_URI.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from shared.conversion import split_documents
from shared.errors import MirrorError
from shared.source.id_ranges import (
    IdRange,
    id_from_json,
    id_to_json,
    read_chunks,
    split_ranges,
)

BOUNDS: list[Any] = [
    ObjectId(),
    5,
    Int64(5),
    5.0,
    2.5,
    Decimal128("1.10"),
    "5",
    "",
    b"\x00",
    Binary(b"x", 4),
    dt.datetime(1, 1, 1, tzinfo=dt.UTC),
    {"a": 1},
    [1, "x"],
    True,
    None,
    MinKey(),
    MaxKey(),
    Timestamp(1, 2),
    Regex("^a", "i"),
]


@pytest.mark.parametrize("value", BOUNDS, ids=repr)
def test_bounds_round_trip_with_their_exact_type(value: Any):
    back = id_from_json(id_to_json(value))
    assert type(back) is type(value) or (isinstance(value, bytes) and isinstance(back, bytes))
    assert back == value


def test_malformed_stored_bounds_are_refused():
    with pytest.raises(MirrorError):
        IdRange.from_json({"lower": "{not json", "upper": None})
    with pytest.raises(MirrorError):
        IdRange.from_json({"lower": None})


def raw_collection(client: MongoClient, database: str, name: str) -> Any:
    """The collection as the engine reads it: raw documents."""
    options = client.codec_options.with_options(document_class=RawBSONDocument)
    return client[database].get_collection(name, codec_options=options)


def ids(collection: Any, id_range: IdRange, **options: Any) -> list[Any]:
    chunks = read_chunks(collection, id_range, batch_size=7, max_rows=10, **options)
    return [RawBSONDocument(raw)["_id"] for chunk in chunks for raw in split_documents(chunk.data)]


MIXED: list[Any] = [
    *range(50),
    *[n + 0.25 for n in range(50)],
    *[f"s{n:03d}" for n in range(50)],
    *[{"k": n} for n in range(20)],
    *[ObjectId() for _ in range(50)],
    *[dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=n) for n in range(50)],
    *[Binary(bytes([n]), 0) for n in range(20)],
    False,
    True,
]


def test_ranges_cover_every_type_bracket_exactly_once(
    mongo_client: MongoClient, mongo_db_name: str
):
    collection = raw_collection(mongo_client, mongo_db_name, "mixed")
    mongo_client[mongo_db_name].mixed.insert_many([{"_id": value} for value in MIXED])
    ranges = split_ranges(collection, 6)
    assert ranges[0].lower is None and ranges[-1].upper is None
    assert len(ranges) >= 3
    seen = [_id for id_range in ranges for _id in ids(collection, id_range)]
    assert len(seen) == len(MIXED)
    assert sorted(map(id_to_json, seen)) == sorted(map(id_to_json, MIXED))


def test_read_range_resumes_after_the_last_published_id(
    mongo_client: MongoClient, mongo_db_name: str
):
    collection = raw_collection(mongo_client, mongo_db_name, "mixed")
    mongo_client[mongo_db_name].mixed.insert_many([{"_id": value} for value in MIXED])
    everything = ids(collection, IdRange())
    resumed = ids(collection, IdRange(), after=everything[99])
    assert [id_to_json(v) for v in resumed] == [id_to_json(v) for v in everything[100:]]


def test_dates_beyond_python_range_survive_as_bounds():
    from bson.datetime_ms import DatetimeMS

    far = DatetimeMS(2**62)
    assert id_from_json(id_to_json(far)) == far


@pytest.mark.parametrize(("max_rows", "max_bytes"), [(10, 10**9), (1000, 200), (3, 64), (1, 1)])
def test_chunks_respect_row_and_byte_limits(
    mongo_client: MongoClient, mongo_db_name: str, max_rows: int, max_bytes: int
):
    collection = raw_collection(mongo_client, mongo_db_name, "sized")
    mongo_client[mongo_db_name].sized.insert_many(
        [{"_id": n, "pad": "x" * (n % 40)} for n in range(95)]
    )
    chunks = list(
        read_chunks(collection, IdRange(), max_rows=max_rows, max_bytes=max_bytes, batch_size=13)
    )
    documents = [split_documents(chunk.data) for chunk in chunks]
    assert [RawBSONDocument(raw)["_id"] for part in documents for raw in part] == list(range(95))
    for chunk, part in zip(chunks, documents, strict=True):
        assert chunk.count == len(part) <= max_rows
        assert len(part) == 1 or len(chunk.data) <= max_bytes
        assert chunk.last_id == RawBSONDocument(part[-1])["_id"]
