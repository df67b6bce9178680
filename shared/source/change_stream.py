"""Change-stream positions: where a table's stream starts, stored as type-exact JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import bson
from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo.change_stream import ChangeStream
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from shared.errors import MirrorError

_EXACT = json_util.CANONICAL_JSON_OPTIONS


def current_position(watched: Collection[RawBSONDocument] | Database[RawBSONDocument]) -> str:
    """A resume token for "now" on a collection or a whole database, taken by opening (and
    closing) a stream: the server answers the opening aggregate with a ``postBatchResumeToken``
    for the present, so every change after this call is replayable from the returned token.
    """
    with watched.watch(full_document="updateLookup") as stream:
        token = stream.resume_token
    if token is None:
        name = watched.full_name if isinstance(watched, Collection) else watched.name
        raise MirrorError(f"{name}: the server gave no resume token")
    return token_to_json(token)


def token_to_json(token: Any) -> str:
    return json_util.dumps(token, json_options=_EXACT)


def token_from_json(text: str) -> dict[str, Any]:
    try:
        token = json_util.loads(text, json_options=_EXACT)
    except ValueError as error:
        raise MirrorError(f"stored resume token is not valid JSON: {error}") from None
    if not isinstance(token, dict) or "_data" not in token:
        raise MirrorError("stored resume token has no _data field")
    return token


# Error codes after which a stream cannot resume: its history is gone (the table must be
# snapshotted again). CappedPositionLost and ChangeStreamFatalError are older servers' forms.
class StreamErrorCode(IntEnum):
    CAPPED_POSITION_LOST = 136
    CHANGE_STREAM_FATAL_ERROR = 280
    CHANGE_STREAM_HISTORY_LOST = 286
    UNRECOGNIZED_PIPELINE_STAGE = 40324


HISTORY_LOST_CODES = frozenset(
    {
        StreamErrorCode.CAPPED_POSITION_LOST,
        StreamErrorCode.CHANGE_STREAM_FATAL_ERROR,
        StreamErrorCode.CHANGE_STREAM_HISTORY_LOST,
    }
)
SPLIT_LARGE_EVENTS: dict[str, Any] = {"$changeStreamSplitLargeEvent": {}}
ROW_OPERATIONS = frozenset({"insert", "update", "replace", "delete"})
# Events that end a table's history: its folder must be rebuilt (or removed).
TABLE_ENDING_OPERATIONS = frozenset({"drop", "rename"})


class HistoryLost(MirrorError):
    """The stream's resume point fell off the oplog (or the stream died for good)."""


def token_order(token_json: str) -> str:
    """A sort key for a stored token. A resume token's ``_data`` is a hex KeyString whose order
    is the order of the stream positions it encodes, so tokens compare as their ``_data``."""
    return str(token_from_json(token_json)["_data"])


@dataclass(frozen=True)
class ChangeEvent:
    """One complete change event, with what a table needs of it."""

    position: str  # the resume token's ``_data``: orders like the stream (see token_order)
    operation: str
    cluster_seconds: int  # when the change happened (the event's clusterTime)
    collection: str | None
    document: bytes | None  # full document (upserts) or {_id} (deletes), raw BSON
    size: int
    target: str | None = None  # a rename's new collection name

    @property
    def token(self) -> str:
        """The event's resume token as stored (built on demand: most events never need it)."""
        return token_to_json({"_data": self.position})


def open_stream(
    database: Database[RawBSONDocument],
    collections: list[str] | None,
    token: str,
    *,
    start_after: bool = False,
    max_await_ms: int = 200,
    split_large_events: bool = True,
) -> ChangeStream[RawBSONDocument]:
    """A database stream from ``token``, limited to ``collections`` (None: every collection).

    Raises HistoryLost when the resume point is gone.
    """
    pipeline: list[dict[str, Any]] = []
    if collections is not None:
        pipeline.append(
            {
                "$match": {
                    "$or": [{"ns.coll": {"$in": collections}}, {"ns.coll": {"$exists": False}}]
                }
            }
        )
    if split_large_events:
        pipeline.append(SPLIT_LARGE_EVENTS)
    position = token_from_json(token)
    try:
        return database.watch(
            pipeline,
            full_document="updateLookup",
            max_await_time_ms=max_await_ms,
            resume_after=None if start_after else position,
            start_after=position if start_after else None,
        )
    except OperationFailure as error:
        if error.code in HISTORY_LOST_CODES:
            raise HistoryLost(f"{database.name}: {_first_line(error)}") from None
        if error.code == StreamErrorCode.UNRECOGNIZED_PIPELINE_STAGE and split_large_events:
            # Servers before 6.0.9/7.0 cannot split events over 16 MB; stream without it.
            return open_stream(
                database,
                collections,
                token,
                start_after=start_after,
                max_await_ms=max_await_ms,
                split_large_events=False,
            )
        raise


def next_event(stream: ChangeStream[RawBSONDocument]) -> ChangeEvent | None:
    """The next complete event, reassembling split fragments; None when none is ready now."""
    fragments: list[RawBSONDocument] = []
    while True:
        try:
            raw = stream.try_next()
        except OperationFailure as error:
            if error.code in HISTORY_LOST_CODES:
                raise HistoryLost(_first_line(error)) from None
            raise
        if raw is None:
            if not fragments:
                return None
            continue  # the rest of a split event is on its way
        split = raw.get("splitEvent")
        if split is None:
            return _event(raw, raw)
        fragments.append(raw)
        if int(split["fragment"]) == int(split["of"]):
            merged: dict[str, Any] = {}
            for fragment in fragments:
                merged.update({k: v for k, v in fragment.items() if k != "splitEvent"})
            return _event(merged, raw)


def _event(event: Mapping[str, Any], last: RawBSONDocument) -> ChangeEvent:
    operation = str(event["operationType"])
    namespace = event.get("ns") or {}
    collection = namespace.get("coll")
    document: bytes | None = None
    if operation == "delete":
        document = bson.encode({"_id": event["documentKey"]["_id"]})
    elif operation in ROW_OPERATIONS:
        full = event.get("fullDocument")
        # An update looked up after a later delete has no document: the delete follows.
        document = None if full is None else _raw(full)
    target = event.get("to", {}).get("coll") if operation == "rename" else None
    size = len(last.raw) if document is None else len(document)
    cluster_time = event.get("clusterTime")
    position = last["_id"].get("_data")
    if not isinstance(position, str):
        raise MirrorError("the server sent a resume token without a hex _data (MongoDB < 4.2?)")
    return ChangeEvent(
        position,
        operation,
        int(getattr(cluster_time, "time", 0)),
        None if collection is None else str(collection),
        document,
        size,
        None if target is None else str(target),
    )


def _raw(value: Any) -> bytes:
    if isinstance(value, RawBSONDocument):
        return bytes(value.raw)
    return bson.encode(value)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:300]
