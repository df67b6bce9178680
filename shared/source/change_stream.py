"""Change streams: where a table's stream starts (type-exact JSON tokens) and reading its events."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from contextlib import suppress
from enum import IntEnum
from itertools import accumulate
from threading import Condition, Event, Thread
from typing import Any, cast

import bson
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from shared.errors import MirrorError
from shared.source.bson_elements import Element, fields
from shared.source.change_events import ChangeEvent, event_position, read_event, read_events
from shared.source.client import ServerPin, pinned
from shared.source.resume_tokens import token_from_json, token_to_json
from shared.source.retry import describe


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


# Error codes after which a stream cannot resume from its checkpoint (the table must be
# snapshotted again): ChangeStreamHistoryLost (4.4+), CappedPositionLost (a lagging cursor) and
# ChangeStreamFatalError, which a server answers when the checkpoint's event is not in the oplog
# ("cannot resume stream; the resume token was not found", ensure_resume_token_present) and
# which 4.2 answered for lost history. A refused stage is never one of these: a stage a change
# stream may not hold is IllegalOperation (20), an unknown one 40324 — plain errors, so a bad
# pipeline fails loudly instead of rebuilding tables.
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


class HistoryLost(MirrorError):
    """The stream's resume point fell off the oplog (or the stream died for good)."""


# Events per getMore: small enough that the server prepares the next batch while the reader
# converts this one, large enough that a round trip per batch costs nothing.
BATCH_EVENTS = 1_000
# Replies fetched ahead wait for the reader up to this many bytes (one reply, up to 16 MB, is
# always let in): enough to keep the server busy while the reader publishes a whole window.
READ_AHEAD_BYTES = 32 * 1024 * 1024
EMPTY_DOCUMENT_BYTES = 5
RAW_REPLIES: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


def open_stream(
    database: Database[RawBSONDocument],
    collections: list[str] | None,
    token: str,
    *,
    start_after: bool = False,
    max_await_ms: int = 200,
    split_large_events: bool = True,
) -> ChangeCursor:
    """A database stream from ``token``, limited to ``collections`` (None: every collection).

    Raises HistoryLost when the resume point is gone.
    """
    stage: dict[str, Any] = {"fullDocument": "updateLookup"}
    stage["startAfter" if start_after else "resumeAfter"] = token_from_json(token)
    pipeline: list[dict[str, Any]] = [{"$changeStream": stage}]
    if collections is not None:
        # A rename onto a selected collection too: its event names the source in ``ns`` and
        # is the only sign that the selected collection was replaced (no drop: SERVER-53478).
        selected = {"$in": collections}
        pipeline.append(
            {
                "$match": {
                    "$or": [
                        {"ns.coll": selected},
                        {"to.coll": selected},
                        {"ns.coll": {"$exists": False}},
                    ]
                }
            }
        )
    if split_large_events:
        pipeline.append(SPLIT_LARGE_EVENTS)
    try:
        return ChangeCursor(database, pipeline, max_await_ms)
    except OperationFailure as error:
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


class ChangeCursor:
    """A database's change stream, read batch by batch through the aggregate and getMore commands.

    Why not PyMongo's ChangeStream: it decodes every event into Python objects, which took more
    than half of the reader's time (26 µs of about 50 per event in bench_changes.py). Here a
    batch stays the server's reply buffer and each event is read in place
    (shared/source/bson_elements.py): its full document is sliced out, never decoded. What the
    driver's stream keeps is kept: one session for the cursor's life, the resume token after each
    event and the batch's postBatchResumeToken once the batch is consumed, the cursor killed on
    close. A failed getMore is not resumed here: the caller re-reads its window from the
    checkpoint (shared/pipeline/changes.py), which is how every other fault is recovered.
    Every command of the cursor goes to the server that opened it (``ServerPin``, on a client
    made by ``shared.source.client.connect``): through a sharded cluster's routers, a getMore
    sent to another router would fail with CursorNotFound and cost the window.

    While a stream has a backlog, a thread of the cursor's own keeps batches fetched ahead
    (up to READ_AHEAD_BYTES), so the server prepares the next batches while the reader converts and
    publishes a window; that thread only waits on the socket. It stops at the first empty batch
    (an idle stream is not polled behind the reader's back). The cursor's session passes between
    the two threads, never used by both at once: the caller's thread opens and kills the cursor
    only while no fetching runs. The fetching thread is a daemon, so an abandoned cursor never
    holds a process open.
    """

    def __init__(
        self, database: Database[RawBSONDocument], pipeline: list[dict[str, Any]], await_ms: int
    ) -> None:
        self._database = database
        self._await_ms = await_ms
        stage = pipeline[0]["$changeStream"]
        self._token: dict[str, Any] = stage.get("resumeAfter") or stage["startAfter"]
        self._session = database.client.start_session(causal_consistency=False)
        self._pin = ServerPin()  # the router the aggregate went to; its getMores follow
        self._cursor_id = 0
        self._collection = ""
        self._buffer = b""
        self._offsets: list[int] = []
        self._events: list[ChangeEvent | None] = []  # read ahead for the batch; None: by hand
        self._slow: list[int] = []  # where the Nones are
        self._next = 0
        self._batch_token: dict[str, Any] | None = None
        self._closed = False
        # Batches fetched ahead: (reply, whether the fetching stopped after it, its error).
        self._fetched = _Replies(READ_AHEAD_BYTES)
        self._fetching = False
        self._closing = Event()
        try:
            opening = {"aggregate": 1, "pipeline": pipeline, "cursor": {"batchSize": BATCH_EVENTS}}
            cursor = self._take(self._command(opening), "first")
            self._collection = cursor["ns"].string().partition(".")[2]
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        """Whether the server may send more (False once closed, invalidated or killed)."""
        return not self._closed and self._cursor_id != 0

    @property
    def resume_token(self) -> str:
        """Where a new stream would go on from: after the last event returned, or the consumed
        batch's postBatchResumeToken (which moves on while the stream is idle)."""
        return token_to_json(self._token)

    def next_events(self, max_events: int, max_bytes: int) -> list[ChangeEvent]:
        """The next events ready now: either a run of insert/update/replace events (each with
        its collection and document) read in one go, or one event of any kind; [] when none
        is ready. The run stops after ``max_events`` events or at the event whose size reaches
        ``max_bytes`` (that one included), as reading one event at a time would."""
        start = self._next
        slow = bisect_left(self._slow, start)
        stop = min(len(self._offsets), start + max_events)
        if slow < len(self._slow):
            stop = min(stop, self._slow[slow])
        if stop - start < 2:
            event = self.next_event()
            return [] if event is None else [event]
        run = cast("list[ChangeEvent]", self._events[start:stop])
        totals = list(accumulate(event.size for event in run))
        run = run[: bisect_left(totals, max_bytes) + 1]
        self._next = start + len(run)
        self._token = {"_data": run[-1].position}
        return run

    def next_event(self) -> ChangeEvent | None:
        """The next complete event, reassembling split fragments; None when none is ready now."""
        fragments: dict[str, Element] = {}
        size = 0
        while True:
            index = self._next_index()
            if index is None:
                if not fragments:
                    return None
                if not self.alive:
                    raise MirrorError("the change stream ended inside a split event")
                continue  # the rest of a split event is on its way
            ready = self._events[index]
            if ready is not None and not fragments:
                self._token = {"_data": ready.position}
                return ready
            offset = self._offsets[index]
            event = fields(self._buffer, offset)
            size += int.from_bytes(self._buffer[offset : offset + 4], "little")
            position = event_position(event)
            self._token = {"_data": position}
            split = event.get("splitEvent")
            if split is None and not fragments:
                return read_event(event, position, size)
            fragments.update(event)
            if split is not None:
                parts = split.document()
                if parts["fragment"].int32() != parts["of"].int32():
                    continue
            return read_event(fragments, position, size)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        try:
            while self._fetching:  # free the fetching thread, which then stops
                _, stopped, _ = self._fetched.get()
                self._fetching = not stopped
            if self._cursor_id:
                kill = {"killCursors": self._collection, "cursors": [Int64(self._cursor_id)]}
                with suppress(PyMongoError):
                    self._command(kill)
        finally:
            self._cursor_id = 0
            self._session.end_session()

    def _next_index(self) -> int | None:
        if self._next < len(self._offsets):
            self._next += 1
            return self._next - 1
        if self._batch_token is not None:
            self._token = self._batch_token
        if not self.alive:
            return None
        if not self._fetching:
            name = f"change-stream-{self._database.name}"
            Thread(
                target=self._fetch_ahead, args=(self._cursor_id,), name=name, daemon=True
            ).start()
            self._fetching = True
        reply, stopped, error = self._fetched.get()
        self._fetching = not stopped
        if error is not None:
            raise error
        self._take(reply, "next")
        if not self._offsets:
            if self._batch_token is not None:
                self._token = self._batch_token
            return None
        return self._next_index()

    def _fetch_ahead(self, cursor_id: int) -> None:
        """getMore after getMore into the queue, until a batch is empty, the cursor ends, the
        cursor closes or a command fails (on the cursor's thread)."""
        try:
            while True:
                command = {
                    "getMore": Int64(cursor_id),
                    "collection": self._collection,
                    "batchSize": BATCH_EVENTS,
                    "maxTimeMS": self._await_ms,
                }
                reply = self._command(command)
                cursor = fields(reply)["cursor"].document()
                cursor_id = cursor["id"].int64()
                batch = cursor["nextBatch"]
                empty = batch.end - batch.value <= EMPTY_DOCUMENT_BYTES
                stop = empty or cursor_id == 0 or self._closing.is_set()
                self._fetched.put((reply, stop, None))
                if stop:
                    return
        except BaseException as error:
            self._fetched.put((b"", True, error))

    def _command(self, command: dict[str, Any]) -> bytes:
        try:
            with pinned(self._pin):
                reply = self._database.command(
                    command, session=self._session, codec_options=RAW_REPLIES
                )
        except OperationFailure as error:
            if error.code in HISTORY_LOST_CODES:
                raise HistoryLost(f"{self._database.name}: {describe(error)}") from None
            raise
        return bytes(reply.raw)

    def _take(self, reply: bytes, batch: str) -> dict[str, Element]:
        """Make ``reply`` the current batch (its ``firstBatch`` or ``nextBatch``)."""
        self._buffer = reply
        cursor = fields(reply)["cursor"].document()
        self._cursor_id = cursor["id"].int64()
        self._offsets = cursor[f"{batch}Batch"].document_offsets()
        self._next = 0
        token = cursor.get("postBatchResumeToken")
        self._batch_token = None if token is None else bson.decode(token.raw_document())
        self._events = read_events(reply, self._offsets)
        self._slow = [index for index, event in enumerate(self._events) if event is None]
        return cursor


class _Replies:
    """Replies fetched ahead, with whether the fetching stopped after each and its error; a
    queue bounded by the bytes it holds."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: deque[tuple[bytes, bool, BaseException | None]] = deque()
        self._bytes = 0
        self._changed = Condition()

    def put(self, item: tuple[bytes, bool, BaseException | None]) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self._items or self._bytes < self._max_bytes)
            self._items.append(item)
            self._bytes += len(item[0])
            self._changed.notify_all()

    def get(self) -> tuple[bytes, bool, BaseException | None]:
        with self._changed:
            self._changed.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
            self._bytes -= len(item[0])
            self._changed.notify_all()
            return item
