"""Backpressure: change windows grow while Fabric's replicator falls behind, and shrink back.

Fabric moves each file it has applied out of the table folder, into ``_ProcessedFiles/`` or
``_FilesReadyToDelete/`` (landing-zone format page, "Cleanup process"), and applies a table's
files in sequence order. So the numbered files still in a table folder are the ones it has not
applied yet: the table's replicator backlog. One change window publishes one file per table it
touched, a window lasts CHANGE_WINDOW_SECONDS (1 s) at most and closes at once when the stream
is idle: a busy table can pile up files faster than the replicator takes them, and each file
costs the replicator a fixed overhead whatever its size.

What the reader does about it, and why it is cheap:
1. it keeps per table an estimate of the backlog: the numbered files found by the last listing
   of the folder, plus every file it published since (it learns each number from the publisher).
   The replicator only ever removes files, so the estimate is an upper bound, and exact right
   after a listing;
2. it lists a table folder only while that bound is above half of REPLICATOR_BACKLOG_FILES, and
   then at most once every REPLICATOR_BACKLOG_CHECK_SECONDS (and once for a table it has no
   estimate of). A replicator that keeps up costs one listing per threshold/2 files published,
   not one per window per table;
3. while any table of the database is above REPLICATOR_BACKLOG_FILES, each window that
   published a file doubles the growth factor (up to MAX_GROWTH): windows allow that many times
   more events, bytes (up to MAX_GROWN_BYTES, which bounds memory) and seconds (up to half the
   reader lease and half the timer budget, so a grown window never outlives either), and a
   window that has events waits for more until its deadline instead of closing on the first
   idle read. Fewer, larger files.
   Once every table is at or below half the threshold, windows are back to normal at once (the
   hysteresis keeps them from flapping at the threshold).
The estimates and the factor are saved in the database's stream record, in the compare-and-swap
that advances its checkpoint (no write of their own), so a new reader (the next timer tick)
starts where the last one stopped and ``status`` shows them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared import telemetry
from shared.config import Settings
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef, sequence_of
from shared.state.base import JsonObject

log = logging.getLogger(__name__)

BACKLOG_KEY = "backlog"  # in the stream record: {folder: TableBacklog.to_json()}
GROWTH_KEY = "window_growth"
MAX_GROWTH = 64  # 1 s windows become at most 64 s (within the lease and budget caps below)
MAX_GROWN_BYTES = 256 * 1024**2  # a grown window holds its events in memory until it publishes
MAX_EVENTS = 1_000_000  # CHANGE_WINDOW_EVENTS's own upper limit


@dataclass
class TableBacklog:
    """One table's replicator backlog as this reader knows it."""

    files: int  # unprocessed numbered files: at the last listing, plus those published since
    next_number: int  # the table's next sequence number when ``files`` was last right
    listed_at: float  # wall-clock time of the last listing

    def to_json(self) -> JsonObject:
        return {"files": self.files, "next": self.next_number, "listed_at": self.listed_at}

    @classmethod
    def from_json(cls, value: object) -> TableBacklog | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(int(value["files"]), int(value["next"]), float(value["listed_at"]))
        except (KeyError, TypeError, ValueError):
            return None  # an unreadable estimate is only a listing more


@dataclass(frozen=True)
class WindowLimits:
    """When a window closes: events, bytes and seconds; ``patient`` windows do not close on an
    idle read once they have events, only at their deadline."""

    events: int
    bytes: int
    seconds: float
    patient: bool


class Backpressure:
    """The backlog estimates and the window growth of one database's reader."""

    def __init__(
        self,
        settings: Settings,
        store: LandingZoneStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self.threshold = settings.integer("REPLICATOR_BACKLOG_FILES")
        self._check_seconds = settings.integer("REPLICATOR_BACKLOG_CHECK_SECONDS")
        self._base_events = settings.integer("CHANGE_WINDOW_EVENTS")
        self._base_bytes = settings.integer("CHANGE_WINDOW_BYTES")
        self._base_seconds = settings.integer("CHANGE_WINDOW_SECONDS")
        # A grown window must end well inside the reader's lease (renewed once per window) and
        # the timer's budget (a tick leaves room for one more window).
        longest = min(
            settings.integer("CHANGE_LEASE_SECONDS"), settings.integer("CHANGE_BUDGET_SECONDS")
        )
        self._max_seconds = max(self._base_seconds, longest // 2)
        self.growth = 1
        self.tables: dict[str, TableBacklog] = {}
        self._published = False  # since the last decision

    # -- state, saved with the checkpoint ------------------------------------------------------

    def load(self, record: JsonObject) -> None:
        """Take over what the previous reader knew (from the database's stream record)."""
        saved = record.get(BACKLOG_KEY)
        self.tables = {}
        if isinstance(saved, dict):
            for folder, value in saved.items():
                backlog = TableBacklog.from_json(value)
                if backlog is not None:
                    self.tables[str(folder)] = backlog
        growth = record.get(GROWTH_KEY)
        self.growth = growth if isinstance(growth, int) and 1 <= growth <= MAX_GROWTH else 1

    def to_json(self) -> JsonObject:
        return {
            BACKLOG_KEY: {folder: backlog.to_json() for folder, backlog in self.tables.items()},
            GROWTH_KEY: self.growth,
        }

    # -- the window's limits -------------------------------------------------------------------

    @property
    def limits(self) -> WindowLimits:
        growth = self.growth
        return WindowLimits(
            events=min(self._base_events * growth, max(self._base_events, MAX_EVENTS)),
            bytes=min(self._base_bytes * growth, max(self._base_bytes, MAX_GROWN_BYTES)),
            seconds=min(self._base_seconds * growth, self._max_seconds),
            patient=growth > 1,
        )

    # -- observations --------------------------------------------------------------------------

    def published(self, table: TableRef, number: int) -> None:
        """The reader published file ``number`` of ``table`` (the reader is a streaming table's
        only publisher, so the table's next number is ``number + 1``)."""
        self._published = True
        backlog = self.tables.get(table.folder)
        if backlog is None or number < backlog.next_number:
            # Never listed, or numbered afresh (the table was rebuilt): list it now.
            self._list(table, number + 1)
            return
        backlog.files += number + 1 - backlog.next_number
        backlog.next_number = number + 1

    def refresh(self, next_number: Callable[[TableRef], int | None]) -> None:
        """List the tables whose bound is above half the threshold and whose listing is due,
        then set the growth factor for the next window. ``next_number`` reads a table's next
        sequence number (None: the table is gone, its estimate is dropped)."""
        now = self._clock()
        for folder, backlog in list(self.tables.items()):
            if backlog.files * 2 <= self.threshold:
                continue
            if now - backlog.listed_at < self._check_seconds:
                continue
            table = TableRef.from_folder(folder)
            current = next_number(table)
            if current is None:
                del self.tables[folder]
                continue
            self._list(table, current)
        for folder, backlog in self.tables.items():
            name = str(TableRef.from_folder(folder))
            telemetry.record("replicator_backlog", backlog.files, table=name)
        self._decide()

    def _list(self, table: TableRef, next_number: int) -> None:
        # The next number is read before the folder is listed: a file published in between is
        # in the listing and counted once.
        files = sum(
            1
            for stored in self._store.list_files(table.folder)
            if sequence_of(stored.path.rsplit("/", 1)[-1]) is not None
        )
        self.tables[table.folder] = TableBacklog(files, next_number, self._clock())

    def _decide(self) -> None:
        worst = max((backlog.files for backlog in self.tables.values()), default=0)
        before = self.growth
        if worst > self.threshold:
            # Only a window that added files grows the next: idle windows add none.
            if self._published:
                self.growth = min(MAX_GROWTH, self.growth * 2)
        elif worst * 2 <= self.threshold:
            self.growth = 1
        self._published = False
        if self.growth != before:
            log.warning(
                "replicator backlog: %d unprocessed files in the fullest table (threshold %d); "
                "change windows now %dx",
                worst,
                self.threshold,
                self.growth,
            )
            telemetry.record("window_growth", self.growth)
