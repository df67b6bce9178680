"""The sandbox's oplog: a bounded, ordered log of changes that change streams read.

Every entry gets a sequence number and a cluster time (a BSON Timestamp that strictly increases).
With a size limit the oldest entries fall off, which is how tests provoke
`ChangeStreamHistoryLost`. Waiting readers sleep on a condition variable that every append wakes.
"""

from __future__ import annotations

import bisect
import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp


@dataclass(slots=True)
class Entry:
    """One change; `coll` is None for dropDatabase, `to` is the rename target namespace."""

    seq: int
    cluster_time: Timestamp
    wall_time: datetime.datetime
    operation: str
    db: str
    coll: str | None
    document_key: dict[str, Any] | None = None
    full_document: RawBSONDocument | None = None
    update_description: dict[str, Any] | None = None
    to: dict[str, str] | None = None
    # The document before and after the change, kept only for collections with
    # changeStreamPreAndPostImages enabled (what a real server writes to its pre-image
    # collection, and reads back for fullDocument/fullDocumentBeforeChange).
    pre_image: RawBSONDocument | None = None
    post_image: RawBSONDocument | None = None
    # The collection's UUID (an oplog entry's `ui`), and what a DDL entry did (create,
    # createIndexes, dropIndexes, modify): what showExpandedEvents streams report.
    collection_uuid: Any = None
    operation_description: dict[str, Any] | None = None
    state_before_change: dict[str, Any] | None = None


class ClusterClock:
    """Hands out strictly increasing Timestamps (seconds, counter) from wall-clock seconds."""

    def __init__(self) -> None:
        self._seconds = int(time.time())
        self._increment = 0

    def tick(self) -> Timestamp:
        now = int(time.time())
        if now > self._seconds:
            self._seconds, self._increment = now, 1
        else:
            self._increment += 1
        return Timestamp(self._seconds, self._increment)

    def current(self) -> Timestamp:
        return Timestamp(self._seconds, self._increment)


class Oplog:
    """Entries with seq > `dropped_through` are retained. Use under `condition`'s lock."""

    def __init__(self, condition: threading.Condition, max_entries: int | None) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("oplog_size must be at least 1")
        self.condition = condition
        self.max_entries = max_entries
        self.clock = ClusterClock()
        self._entries: list[Entry] = []
        self._first_seq = 1
        self.last_seq = 0
        self.dropped_through = 0
        self.dropped_time = Timestamp(0, 0)
        # The UUID of a namespace's collection now (None: no such collection).
        self.uuid_of: Callable[[str, str], Any] = lambda db, coll: None

    def append(self, operation: str, db: str, coll: str | None, **fields: Any) -> Entry:
        if coll is not None and "collection_uuid" not in fields:
            fields["collection_uuid"] = self.uuid_of(db, coll)
        self.last_seq += 1
        entry = Entry(
            seq=self.last_seq,
            cluster_time=self.clock.tick(),
            wall_time=datetime.datetime.now(datetime.UTC),
            operation=operation,
            db=db,
            coll=coll,
            **fields,
        )
        self._entries.append(entry)
        self._trim()
        self.condition.notify_all()
        return entry

    def _trim(self) -> None:
        if self.max_entries is None or len(self._entries) <= self.max_entries:
            return
        excess = len(self._entries) - self.max_entries
        self.dropped_through = self._entries[excess - 1].seq
        self.dropped_time = self._entries[excess - 1].cluster_time
        del self._entries[:excess]
        self._first_seq = self.dropped_through + 1

    def entry(self, seq: int) -> Entry | None:
        index = seq - self._first_seq
        return self._entries[index] if 0 <= index < len(self._entries) else None

    def lost_after(self, seq: int) -> bool:
        """Whether entries following `seq` have already fallen off."""
        return seq < self.dropped_through

    def first_seq_at(self, cluster_time: Timestamp) -> int | None:
        """The position just before the first entry at or after `cluster_time`; None if lost."""
        if self.dropped_through and self.dropped_time >= cluster_time:
            return None
        index = bisect.bisect_left(self._entries, cluster_time, key=lambda e: e.cluster_time)
        return self._entries[index].seq - 1 if index < len(self._entries) else self.last_seq
