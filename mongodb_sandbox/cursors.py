"""Server-side cursors: what `find`/`aggregate` open and `getMore`/`killCursors` continue."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from mongodb_sandbox.errors import CommandError, ErrorCode

# MongoDB's defaults: 101 documents in a first batch, and no batch past 16 MiB of documents.
DEFAULT_FIRST_BATCH = 101
MAX_BATCH_BYTES = 16 * 1024 * 1024


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


class CursorRegistry:
    """Open cursors by id; ids are never reused within a server's life.

    ``first_id`` lets each router of a sharded stand-in number its cursors apart (a real mongos
    draws random 64-bit ids), so an id sent to the wrong router is never another's cursor.
    """

    def __init__(self, first_id: int = 1_000_001) -> None:
        self._lock = threading.Lock()
        self._cursors: dict[int, Cursor] = {}
        self._ids = itertools.count(first_id)

    def register(self, cursor: Cursor) -> int:
        with self._lock:
            cursor_id = next(self._ids)
            self._cursors[cursor_id] = cursor
            return cursor_id

    def get(self, cursor_id: int) -> Cursor:
        with self._lock:
            cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(ErrorCode.CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        return cursor

    def kill(self, cursor_id: int) -> bool:
        with self._lock:
            return self._cursors.pop(cursor_id, None) is not None


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
