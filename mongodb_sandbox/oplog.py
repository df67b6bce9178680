"""The sandbox's oplog: a bounded, ordered log of changes that change streams read.

Every entry gets a sequence number and a cluster time (a BSON Timestamp that strictly increases).
With a size limit the oldest entries fall off, which is how tests provoke
`ChangeStreamHistoryLost`. Waiting readers sleep on a condition variable that every append wakes.

An idle replica set's cluster time moves on only through the primary's periodic no-op oplog
writes, every `periodicNoopIntervalSecs` (10 s by default; see the server's
replication_coordinator_impl.idl and DOCS-16392), so an idle change stream's
postBatchResumeToken stands still between them. The sandbox writes its no-op lazily: the first
time anyone looks after the interval has passed since the last write, which no reader can tell
from a timer.
"""

from __future__ import annotations

import bisect
import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bson.binary import Binary
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from mongodb_sandbox import ordering


@dataclass(slots=True)
class Entry:
    """One change; `coll` is None for dropDatabase, `to` is the rename target namespace and
    `drop_target` the UUID of the collection a rename replaced."""

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
    drop_target: Binary | None = None
    # A committed transaction's operations: its session, number, and each one's index in it.
    lsid: dict[str, Any] | None = None
    txn_number: int | None = None
    txn_op_index: int = 0
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


# The server's default periodicNoopIntervalSecs.
DEFAULT_NOOP_INTERVAL_SECONDS = 10.0


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

    def __init__(
        self,
        condition: threading.Condition,
        max_entries: int | None,
        *,
        noop_interval_seconds: float = DEFAULT_NOOP_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("oplog_size must be at least 1")
        if noop_interval_seconds < 0:
            raise ValueError("noop_interval_seconds must not be negative")
        self.condition = condition
        self.max_entries = max_entries
        self.clock = ClusterClock()
        self._noop_interval = noop_interval_seconds
        self._monotonic = monotonic
        self._last_write = monotonic()
        self._entries: list[Entry] = []
        self._first_seq = 1
        self.last_seq = 0
        self.dropped_through = 0
        self.dropped_time = Timestamp(0, 0)
        # While a transaction is open: the last seq that wrote each (db, coll, _id key), and
        # (db, coll, None) for a collection dropped or renamed, to detect write conflicts.
        self.written: dict[tuple[str, str | None, Any], int] | None = None
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
        self._add([entry])
        return entry

    def write_noop_if_due(self) -> None:
        """Advance the cluster time as the primary's periodic no-op write would, when the
        interval has passed since the last write (no change stream sees a no-op)."""
        now = self._monotonic()
        if now - self._last_write >= self._noop_interval:
            self.clock.tick()
            self._last_write = now

    def append_transaction(
        self,
        operations: list[tuple[str, str, str | None, dict[str, Any]]],
        lsid: dict[str, Any],
        txn_number: int,
    ) -> list[Entry]:
        """A committed transaction's operations as one entry each, in their order, sharing one
        cluster time and wall time as a transaction's events do (the manual's change events
        page: events of one transaction share clusterTime; the server unwinds the transaction's
        applyOps entry at its commit timestamp, numbering the operations by txnOpIndex)."""
        cluster_time = self.clock.tick()
        wall_time = datetime.datetime.now(datetime.UTC)
        entries = []
        for index, (operation, db, coll, fields) in enumerate(operations):
            self.last_seq += 1
            entries.append(
                Entry(
                    seq=self.last_seq,
                    cluster_time=cluster_time,
                    wall_time=wall_time,
                    operation=operation,
                    db=db,
                    coll=coll,
                    lsid=lsid,
                    txn_number=txn_number,
                    txn_op_index=index,
                    **fields,
                )
            )
        self._add(entries)
        return entries

    def _add(self, entries: list[Entry]) -> None:
        """Written: noted for an open transaction's conflicts, the oldest trimmed, streams woken."""
        self._last_write = self._monotonic()
        self._entries.extend(entries)
        if self.written is not None:
            for entry in entries:
                self._note_written(entry)
        self._trim()
        self.condition.notify_all()

    def _note_written(self, entry: Entry) -> None:
        assert self.written is not None
        if entry.document_key is not None:
            key = ordering.sort_key(entry.document_key["_id"])
            self.written[(entry.db, entry.coll, key)] = entry.seq
        else:
            self.written[(entry.db, entry.coll, None)] = entry.seq

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
