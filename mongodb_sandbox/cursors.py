"""Server-side cursors: what `find`/`aggregate` open and `getMore`/`killCursors` continue.

Idle cursors die as on a real server: a cursor opened outside a session after
`cursorTimeoutMillis` (10 minutes) without a getMore (SERVER-8188), a cursor opened in a session
when its session has been idle for `logicalSessionTimeoutMinutes` (30) or is ended (from 4.4.8
and 5.0, DOCS-13976: "cursors created within a client session close when the corresponding server
session ends ... or times out"). A real server's reaper runs every few seconds; the sandbox reaps
when a cursor is next asked for, which a client cannot tell apart. Either way the next getMore
fails with CursorNotFound.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from mongodb_sandbox.errors import CommandError, ErrorCode

# MongoDB's defaults: 101 documents in a first batch, and no batch past 16 MiB of documents.
DEFAULT_FIRST_BATCH = 101
MAX_BATCH_BYTES = 16 * 1024 * 1024
# cursorTimeoutMillis and logicalSessionTimeoutMinutes, the server's defaults.
CURSOR_TIMEOUT_SECONDS = 10 * 60.0
SESSION_TIMEOUT_SECONDS = 30 * 60.0


@dataclass
class Batch:
    documents: list[RawBSONDocument]
    exhausted: bool
    extra: dict[str, Any] = field(default_factory=dict)


class Cursor(Protocol):
    namespace: str

    def next_batch(self, batch_size: int | None, max_time_ms: int | None, first: bool) -> Batch:
        """The next batch; `first` marks the reply to the command that opened the cursor."""
        ...


def take_batch(
    documents: list[RawBSONDocument], start: int, count: int
) -> tuple[list[RawBSONDocument], int]:
    """Up to `count` documents from `start`, stopping at the byte budget (at least one)."""
    end = min(start + count, len(documents))
    budget = MAX_BATCH_BYTES
    for index in range(start, end):
        budget -= len(documents[index].raw)
        if budget < 0 and index > start:
            end = index
            break
    return documents[start:end], end


class ListCursor:
    """A cursor over results computed when the command ran."""

    def __init__(self, namespace: str, documents: list[RawBSONDocument], limit: int = 0) -> None:
        self.namespace = namespace
        self._documents = documents[:limit] if limit else documents
        self._position = 0

    def next_batch(self, batch_size: int | None, max_time_ms: int | None, first: bool) -> Batch:
        if first and batch_size == 0:
            return Batch([], exhausted=not self._documents)
        if batch_size is None or batch_size <= 0:
            batch_size = DEFAULT_FIRST_BATCH if first else len(self._documents)
        batch, self._position = take_batch(self._documents, self._position, batch_size)
        return Batch(batch, exhausted=self._position >= len(self._documents))


@dataclass
class _Open:
    cursor: Cursor
    used: float  # when its last getMore finished (or it was opened)
    session: bytes | None = None  # the lsid it was opened under
    in_use: int = 0  # getMores running on it now (an awaiting cursor is not idle)


class CursorRegistry:
    """Open cursors by id; ids are never reused within a server's life.

    ``first_id`` lets each router of a sharded stand-in number its cursors apart (a real mongos
    draws random 64-bit ids), so an id sent to the wrong router is never another's cursor.
    """

    def __init__(
        self,
        first_id: int = 1_000_001,
        *,
        cursor_timeout_seconds: float = CURSOR_TIMEOUT_SECONDS,
        session_timeout_seconds: float = SESSION_TIMEOUT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._cursors: dict[int, _Open] = {}
        self._ids = itertools.count(first_id)
        self._cursor_timeout = cursor_timeout_seconds
        self._session_timeout = session_timeout_seconds
        self._monotonic = monotonic
        self._session_used: dict[bytes, float] = {}

    def another(self, first_id: int) -> CursorRegistry:
        """An empty registry with the same timeouts (another router's)."""
        return CursorRegistry(
            first_id,
            cursor_timeout_seconds=self._cursor_timeout,
            session_timeout_seconds=self._session_timeout,
            monotonic=self._monotonic,
        )

    def register(self, cursor: Cursor) -> int:
        with self._lock:
            cursor_id = next(self._ids)
            self._cursors[cursor_id] = _Open(cursor, self._monotonic())
            return cursor_id

    def bind_session(self, cursor_id: int, session: bytes) -> None:
        """Tie a just-opened cursor to the session its command ran in."""
        with self._lock:
            opened = self._cursors.get(cursor_id)
            if opened is not None:
                opened.session = session

    def session_used(self, session: bytes) -> None:
        """Any command naming a session keeps it (and its cursors) alive."""
        with self._lock:
            self._session_used[session] = self._monotonic()

    def end_sessions(self, sessions: Iterable[bytes]) -> None:
        """endSessions/killSessions: the sessions' cursors die with them."""
        ended = set(sessions)
        with self._lock:
            for cursor_id, opened in list(self._cursors.items()):
                if opened.session in ended:
                    del self._cursors[cursor_id]
            for session in ended:
                self._session_used.pop(session, None)

    def get(self, cursor_id: int) -> Cursor:
        """The cursor, marked in use until `release`; CursorNotFound once it is gone."""
        with self._lock:
            self._reap()
            opened = self._cursors.get(cursor_id)
            if opened is not None:
                opened.in_use += 1
        if opened is None:
            raise CommandError(ErrorCode.CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        return opened.cursor

    def release(self, cursor_id: int) -> None:
        """A getMore on the cursor finished: its idle time starts now."""
        with self._lock:
            opened = self._cursors.get(cursor_id)
            if opened is not None:
                opened.in_use -= 1
                opened.used = self._monotonic()

    def kill(self, cursor_id: int) -> bool:
        with self._lock:
            return self._cursors.pop(cursor_id, None) is not None

    def expire_idle(self) -> int:
        """Kill every cursor not running a getMore now, as the reaper does once they have been
        idle past their timeout (a test hook: the timeouts are minutes); returns how many."""
        with self._lock:
            idle = [cursor_id for cursor_id, opened in self._cursors.items() if not opened.in_use]
            for cursor_id in idle:
                del self._cursors[cursor_id]
            return len(idle)

    def _reap(self) -> None:
        now = self._monotonic()
        for cursor_id, opened in list(self._cursors.items()):
            if opened.in_use:
                continue
            if opened.session is None:
                expired = now - opened.used > self._cursor_timeout
            else:
                used = max(self._session_used.get(opened.session, 0.0), opened.used)
                expired = now - used > self._session_timeout
            if expired:
                del self._cursors[cursor_id]


def cursor_reply(
    registry: CursorRegistry,
    cursor: Cursor,
    batch_size: int | None,
    max_time_ms: int | None = None,
    cursor_id: int | None = None,
) -> dict[str, Any]:
    """Run one batch and shape MongoDB's `{cursor: {...}, ok: 1}` reply, closing when done."""
    first = cursor_id is None
    batch = cursor.next_batch(batch_size, max_time_ms, first)
    if batch.exhausted:
        if cursor_id is not None:
            registry.kill(cursor_id)
        reply_id = 0
    else:
        reply_id = registry.register(cursor) if cursor_id is None else cursor_id
    body: dict[str, Any] = {
        "firstBatch" if first else "nextBatch": batch.documents,
        "id": Int64(reply_id),
        "ns": cursor.namespace,
        **batch.extra,
    }
    return {"cursor": body, "ok": 1.0}
