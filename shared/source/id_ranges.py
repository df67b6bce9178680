"""Splitting a collection into `_id` ranges of about equal size, covering every BSON type.

Ranges are bounds on the `_id` index (cursor ``min``/``max`` with an `_id` hint), not `$gte`/`$lt`
filters: index bounds follow MongoDB's cross-type order (numbers < strings < objects < ... <
ObjectId < dates ...), while a filter only matches values of its bound's own type bracket. So a
collection with mixed `_id` types is covered completely, and the first and last ranges are open.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from bson import json_util
from bson.codec_options import DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from shared.errors import MirrorError
from shared.source.retry import Retrier

SAMPLES_PER_RANGE = 16
ID_INDEX = [("_id", 1)]
# Type-exact, and dates come back as they went in: aware, and beyond Python's range if need be.
_EXACT = json_util.CANONICAL_JSON_OPTIONS.with_options(
    tz_aware=True, tzinfo=dt.UTC, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def id_to_json(value: Any) -> str:
    """A type-exact text form of an `_id` for state records (canonical Extended JSON)."""
    return json_util.dumps({"v": value}, json_options=_EXACT)


def id_from_json(text: str) -> Any:
    try:
        return json_util.loads(text, json_options=_EXACT)["v"]
    except (ValueError, KeyError, TypeError) as error:
        raise MirrorError(f"stored _id bound {text[:80]!r} is not valid: {error}") from None


@dataclass(frozen=True)
class IdRange:
    """``lower`` inclusive, ``upper`` exclusive; None means unbounded."""

    lower: Any = None
    upper: Any = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "lower": None if self.lower is None else id_to_json(self.lower),
            "upper": None if self.upper is None else id_to_json(self.upper),
        }

    @classmethod
    def from_json(cls, value: Any) -> IdRange:
        if not isinstance(value, dict) or set(value) != {"lower", "upper"}:
            raise MirrorError(f"stored _id range {value!r} is not valid")
        lower, upper = value["lower"], value["upper"]
        return cls(
            None if lower is None else id_from_json(lower),
            None if upper is None else id_from_json(upper),
        )


def split_ranges(collection: Collection[RawBSONDocument], partitions: int) -> list[IdRange]:
    """``partitions`` ranges (fewer if the collection is small) from a random sample of `_id`s.

    `$sample` reads a random subset, not the collection: the split costs a few thousand reads
    however big the collection is. The server sorts the sample, so its cross-type order is used.
    """
    if partitions <= 1:
        return [IdRange()]
    sample = collection.aggregate(
        [
            {"$sample": {"size": partitions * SAMPLES_PER_RANGE}},
            {"$project": {"_id": 1}},
            {"$sort": {"_id": 1}},
        ]
    )
    ids = [document["_id"] for document in sample]
    if len(ids) < 2:
        return [IdRange()]
    points: list[Any] = []
    for index in range(1, partitions):
        candidate = ids[math.floor(index * len(ids) / partitions)]
        if not points or not _same_id(points[-1], candidate):
            points.append(candidate)
    bounds = [None, *points, None]
    return [IdRange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


@dataclass(frozen=True)
class RawChunk:
    """Consecutive documents of a range, as concatenated BSON, and the `_id` of the last one."""

    data: bytes
    count: int
    last_id: Any


def read_chunks(
    collection: Collection[RawBSONDocument],
    id_range: IdRange,
    after: Any = None,
    max_rows: int = 100_000,
    max_bytes: int = 128 * 1024**2,
    batch_size: int = 10_000,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[RawChunk]:
    """The range in `_id` order as chunks of at most ``max_rows`` documents and ``max_bytes``
    (a single larger document still makes a chunk), starting after ``after`` when resuming.

    Raw batches straight from the wire: no per-document objects, only their lengths are read.
    ``on_batch`` is told, as each batch arrives, how many documents were read past the last
    chunk yielded (for progress: a chunk may take several batches to fill).
    """
    cursor = collection.find_raw_batches({}, sort=ID_INDEX, batch_size=batch_size).hint(ID_INDEX)
    lower = id_range.lower if after is None else after
    if lower is not None:
        cursor = cursor.min([("_id", lower)])
    if id_range.upper is not None:
        cursor = cursor.max([("_id", id_range.upper)])
    parts: list[bytes] = []
    rows = size = 0
    last = b""
    resuming = after is not None
    for batch in cursor:
        buffer = cast(bytes, batch)  # raw batch cursors yield bytes, whatever the stubs say
        starts = _document_starts(buffer)
        index = 0
        if resuming and len(starts) > 1:
            resuming = False
            if _same_id(_id_of(buffer[: starts[1]], collection), after):
                index = 1  # min is inclusive; the resume point itself was published already
        if on_batch is not None:
            on_batch(rows + len(starts) - 1 - index)
        while index < len(starts) - 1:
            end = min(len(starts) - 1, index + max_rows - rows)
            while end > index + 1 and size + starts[end] - starts[index] > max_bytes:
                end -= 1
            if rows and size + starts[end] - starts[index] > max_bytes:
                end = index  # not even one more fits: close this chunk first
            else:
                parts.append(buffer[starts[index] : starts[end]])
                rows += end - index
                size += starts[end] - starts[index]
                last = buffer[starts[end - 1] : starts[end]]
            if end == index or rows >= max_rows or size >= max_bytes:
                yield RawChunk(b"".join(parts), rows, _id_of(last, collection))
                parts, rows, size = [], 0, 0
            index = max(end, index)
    if rows:
        yield RawChunk(b"".join(parts), rows, _id_of(last, collection))


def read_chunks_resuming(
    collection: Collection[RawBSONDocument],
    id_range: IdRange,
    after: Any,
    retrier: Retrier,
    on_batch: Callable[[int], None] | None = None,
    **sizes: int,
) -> Iterator[RawChunk]:
    """`read_chunks` through transient faults: a failed read is opened again after the last
    `_id` of the last chunk the caller took, so nothing is read twice or skipped."""
    last = after
    while True:
        try:
            for chunk in read_chunks(collection, id_range, last, on_batch=on_batch, **sizes):
                yield chunk
                last = chunk.last_id  # asked for the next one: the caller has this chunk
                retrier.progressed()
            return
        except PyMongoError as error:
            retrier.recover(error)


def _document_starts(buffer: bytes) -> list[int]:
    """Offsets of each document in a concatenation, and its end."""
    starts = []
    position = 0
    while position < len(buffer):
        starts.append(position)
        position += struct.unpack_from("<i", buffer, position)[0]
    starts.append(len(buffer))
    return starts


def _id_of(document: bytes, collection: Collection[RawBSONDocument]) -> Any:
    return RawBSONDocument(document, collection.codec_options)["_id"]


def _same_id(left: Any, right: Any) -> bool:
    # 5, 5.0 and Int64(5) are one `_id` to MongoDB; True == 1 in Python but not in BSON.
    return (type(left) is type(right) and left == right) or (
        _is_number(left) and _is_number(right) and left == right
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
