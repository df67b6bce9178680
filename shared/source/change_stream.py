"""Change-stream positions: where a table's stream starts, stored as type-exact JSON."""

from __future__ import annotations

import logging
import threading
from collections import deque
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

log = logging.getLogger(__name__)

_EXACT = json_util.CANONICAL_JSON_OPTIONS
# How long stopping a read-ahead waits for its thread (in a getMore of at most CHANGE_AWAIT_MS).
STOP_WAIT_SECONDS = 30.0


def current_position(collection: Collection[RawBSONDocument]) -> str:
    """A resume token for "now" on ``collection``, taken by opening (and closing) a stream.

    The server answers the opening aggregate with a ``postBatchResumeToken`` for the present, so
    every change after this call is replayable from the returned token.
    """
    with collection.watch(full_document="updateLookup") as stream:
        token = stream.resume_token
    if token is None:
        raise MirrorError(f"{collection.full_name}: the server gave no resume token")
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


def database_position(database: Database[RawBSONDocument]) -> str:
    """A resume token for "now" on a whole database (see ``current_position``)."""
    with database.watch(full_document="updateLookup") as stream:
        token = stream.resume_token
    if token is None:
        raise MirrorError(f"{database.name}: the server gave no resume token")
    return token_to_json(token)


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


@dataclass(frozen=True)
class ReadItem:
    """The next thing a read-ahead has: an event, or (``event`` None) "nothing more is ready".

    ``token`` resumes right after the event (when nothing was ready: the post-batch token, which
    moves on while the stream is idle); ``alive`` False: the cursor died, reopen the stream.
    """

    event: ChangeEvent | None
    token: Mapping[str, Any] | None
    alive: bool = True


class ReadAhead:
    """Reads a change stream on a thread of its own, ahead of the window that consumes it.

    While a window converts and publishes, the server is already rendering the next events and
    this thread receiving them, instead of each side waiting for the other. Each event is paired
    with the resume token right after it, so a checkpoint names exactly the events consumed,
    never the ones read ahead. At most ``max_events`` events or ``max_bytes`` bytes wait
    (one window's worth); "nothing ready" is kept once, with the newest post-batch token. An
    error reading the stream reaches the consumer in order, after the events before it. The
    stream belongs to the thread from here on: only it reads and closes it.
    """

    def __init__(
        self,
        stream: ChangeStream[RawBSONDocument],
        *,
        max_events: int,
        max_bytes: int,
        name: str,
    ) -> None:
        self._stream = stream
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._items: deque[ReadItem | Exception] = deque()
        self._events = 0
        self._bytes = 0
        self._stopping = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def next(self) -> ReadItem:
        """The next item in stream order, waiting for the thread if it has none yet."""
        with self._condition:
            while not self._items:
                if not self._thread.is_alive():
                    raise MirrorError("the change stream's reading thread has stopped")
                self._condition.wait(1.0)
            item = self._items.popleft()
            if isinstance(item, ReadItem) and item.event is not None:
                self._events -= 1
                self._bytes -= item.event.size
                self._condition.notify_all()
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self) -> None:
        """Stop reading, drop what was read ahead and close the stream (on its thread)."""
        with self._condition:
            self._stopping = True
            self._items.clear()
            self._condition.notify_all()
        self._thread.join(STOP_WAIT_SECONDS)
        if self._thread.is_alive():
            log.warning("a change stream read did not finish in %.0f s", STOP_WAIT_SECONDS)

    def _run(self) -> None:
        stream = self._stream
        try:
            while not self._stopping:
                event = next_event(stream)
                if event is None:
                    alive = stream.alive
                    self._put_idle(ReadItem(None, stream.resume_token, alive))
                    if not alive:
                        return
                else:
                    # The event's own token, not the stream's (a deep copy each time, and
                    # resuming after the event is all a checkpoint needs).
                    self._put_event(ReadItem(event, {"_data": event.position}))
        except Exception as error:
            with self._condition:
                self._items.append(error)
                self._condition.notify_all()
        finally:
            stream.close()

    def _put_event(self, item: ReadItem) -> None:
        assert item.event is not None
        with self._condition:
            while self._events and (
                self._events >= self._max_events or self._bytes >= self._max_bytes
            ):
                if self._stopping:
                    return
                self._condition.wait()
            if self._stopping:
                return
            self._items.append(item)
            self._events += 1
            self._bytes += item.event.size
            self._condition.notify_all()

    def _put_idle(self, item: ReadItem) -> None:
        with self._condition:
            last = self._items[-1] if self._items else None
            if isinstance(last, ReadItem) and last.event is None:
                self._items[-1] = item  # one "nothing ready", with the newest token
            else:
                self._items.append(item)
            self._condition.notify_all()


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
