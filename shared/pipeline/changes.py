"""Change windows: one reader per database turns its change stream into one file per table.

A window, and why each step is where it is:
1. read complete events (split fragments reassembled) from the database checkpoint until the
   window closes: CHANGE_WINDOW_EVENTS events, CHANGE_WINDOW_BYTES bytes or
   CHANGE_WINDOW_SECONDS seconds, or nothing more is ready now (all grown, and no early close
   once it has events, while Fabric's replicator is behind: shared/pipeline/backpressure.py);
2. per table touched, in stream order: a streaming table publishes one parquet file (upserts of
   full documents, deletes by `_id` text) and records the last event's token as its progress in
   the same compare-and-swap that allocates the file's number; a table still being snapshotted
   holds its events in the landing zone (``_held-changes/``, ignored by the replicator, never
   local disk), recording them the same way, and publishes them right after its snapshot;
3. advance the database checkpoint (the stream's resume token, ``postBatchResumeToken`` when
   idle) and renew the reader's lease, in one compare-and-swap fenced by the lease (which also
   saves the replicator backlog estimates and the window growth).
A crash after 2 replays the window from the old checkpoint: each table skips the events up to its
own recorded token (resume tokens order like stream positions), so no window is published twice
and none is skipped. One stream per database, filtered to the selected collections: one cursor
and one oplog scan however many tables, so 200 idle tables cost one getMore per window.

A selected collection that is dropped or renamed, or another renamed onto it, the database
dropped, or the stream's history lost, rebuilds the tables concerned (shared/pipeline/rebuild.py)
while the others keep streaming.

Fencing. Each ``acquire`` takes a new lease epoch (one more than the last) in the stream record,
and the reader claims each table's ``changes`` writer with that epoch: a claim of an older epoch
is refused, so a reader that was paused while another took the lease can never take a table
back, and every write it still attempts (files, held changes, progress) fails the claim check
made in the same compare-and-swap. Held changes go to files named after the claim that wrote
them, so a paused reader can never replace a newer reader's held file. Rebuilds carry the stream
position they rest on (see rebuild.py). Therefore a reader that finds its table claim gone while
it still holds the lease knows the table was rebuilt under it (``resync``): it claims the new
table and gives it the window's events; the other tables never stop.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any

import bson
import pyarrow as pa
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure, PyMongoError

from shared import telemetry
from shared.errors import MirrorError
from shared.landing_zone.parquet_files import ROW_MARKER, RowMarker
from shared.landing_zone.publisher import (
    SEQUENCE_KIND,
    AwaitingDrop,
    LeaseHeld,
    Superseded,
    TableRebuilding,
)
from shared.landing_zone.tables import TableRef
from shared.pipeline.backpressure import Backpressure, WindowLimits
from shared.pipeline.plans import CHANGES_WRITER, Phase, TablePlan, all_plans, load_plan
from shared.pipeline.rebuild import rebuild_table
from shared.pipeline.schema_registry import SchemaRegistry
from shared.pipeline.stream_checkpoint import STREAM_KIND, ensure_checkpoint
from shared.pipeline.wiring import MirrorContext
from shared.source.change_events import ROW_OPERATIONS, TABLE_ENDING_OPERATIONS, ChangeEvent
from shared.source.change_stream import ChangeCursor, HistoryLost, current_position, open_stream
from shared.source.collections import is_rename_staging
from shared.source.resume_tokens import token_order
from shared.source.retry import ErrorCode as MongoErrorCode
from shared.source.retry import describe
from shared.state.base import JsonObject, update

log = logging.getLogger(__name__)

__all__ = ["CHANGES_WRITER", "ChangeReader", "TableActivity", "WindowResult"]

HELD_FOLDER = "_held-changes"


@dataclass
class TableActivity:
    """What one window did to one table (for progress lines and the caller's decisions)."""

    events: int = 0
    rows: int = 0
    lag_seconds: float = 0.0


@dataclass
class WindowResult:
    events: int = 0
    idle: bool = True  # nothing more was ready when the window closed
    tables: dict[str, TableActivity] = field(default_factory=dict)
    rebuilt: list[str] = field(default_factory=list)
    # Collections with events and no plan, or renamed onto: to be planned now.
    discovered: list[str] = field(default_factory=list)
    rereads: int = 0  # failed windows just before this one, whose events it read again


class ChangeReader:
    """The single reader of one database's stream (a lease in the state store makes it single).

    ``collections`` None mirrors every collection (new ones are reported as discovered).
    ``clock`` (wall-clock seconds) paces the backlog listings; tests pass their own.
    """

    def __init__(
        self,
        ctx: MirrorContext,
        database: str,
        collections: list[str] | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._backpressure = Backpressure(ctx.settings, ctx.publisher.store, clock)
        self._database = database
        self._collections = collections
        self._owner = ""
        self._epoch = 0
        self._lease_seconds = ctx.settings.integer("CHANGE_LEASE_SECONDS")
        self._stream: ChangeCursor | None = None
        self._table_owners: dict[str, str] = {}
        self._registries: dict[str, SchemaRegistry] = {}
        # Rebuilt tables seen waiting for Fabric's drop: reported once for planning (which
        # checks the drop and schedules its next check), not at every window of their events.
        self._awaiting_drop: set[str] = set()
        # Windows that failed (their events are read again from the checkpoint), by cause:
        # all of this reader's, and those not yet added to the stream record's count.
        self.rereads: Counter[str] = Counter()
        self._unrecorded: Counter[str] = Counter()

    @property
    def database(self) -> str:
        return self._database

    @property
    def window_limits(self) -> WindowLimits:
        """When the next window closes (grown while the replicator is behind)."""
        return self._backpressure.limits

    # -- the lease ---------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the database's reader lease; LeaseHeld while another live reader has it."""
        ensure_checkpoint(self._ctx, self._database)
        owner = bson.ObjectId().binary.hex()
        now = time.time()
        epochs: list[int] = []

        def take(value: JsonObject | None) -> JsonObject:
            current = dict(value or {})
            held_until = current.get("lease_expires")
            if not isinstance(held_until, int | float):
                held_until = 0.0
            if current.get("owner") and held_until > now and not _died_here(current.get("holder")):
                raise LeaseHeld(
                    f"database {self._database} is being mirrored by another process (its lease "
                    f"runs {held_until - now:.0f} s more); only one reader may stream it"
                )
            epoch = int(current.get("epoch", 0)) + 1
            epochs[:] = [epoch]
            return {
                **current,
                "owner": owner,
                "epoch": epoch,
                "lease_expires": now + self._lease_seconds,
                "holder": {"host": socket.gethostname(), "pid": os.getpid()},
            }

        # A lost answer to this write is recognised by update() reading back its own operation,
        # so the reader never locks itself out with its own lease.
        record = update(self._ctx.state, STREAM_KIND, self._database, take)
        self._backpressure.load(record.value)  # what the previous reader knew of the backlog
        self._owner = owner
        self._epoch = epochs[0]
        self._table_owners.clear()

    def release(self) -> None:
        """Give the lease back (after the window in hand) so a successor need not wait."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if not self._owner:
            return

        def drop(value: JsonObject | None) -> JsonObject:
            current = dict(value or {})
            if current.get("owner") == self._owner:
                current.pop("lease_expires", None)
            return current

        update(self._ctx.state, STREAM_KIND, self._database, drop)
        self._owner = ""

    def _checkpoint(self, token: str, start_after: bool) -> None:
        def advance(value: JsonObject | None) -> JsonObject:
            current = dict(value or {})
            if current.get("owner") != self._owner:
                raise self._lease_lost()
            if self._unrecorded:  # in the same write: a count costs no write of its own
                current["rereads"] = _add_counts(current.get("rereads"), self._unrecorded)
            return {
                **current,
                **self._backpressure.to_json(),
                "token": token,
                "start_after": start_after,
                "lease_expires": time.time() + self._lease_seconds,
                "checkpoint_at": time.time(),
            }

        update(self._ctx.state, STREAM_KIND, self._database, advance)
        self._unrecorded.clear()

    # -- one window --------------------------------------------------------------------------

    def window(self) -> WindowResult:
        """Read, publish and checkpoint one window (see the module docstring)."""
        if not self._owner:
            raise MirrorError("acquire the reader lease before reading windows")
        try:
            return self._window()
        except BaseException as error:
            # This window's events are dropped with it: the next window must read them again
            # from the checkpoint, not go on from where the open stream has got to; and claim
            # its tables afresh, which finishes any publish this one left pending.
            self._close_stream()
            self._table_owners.clear()
            self._registries.clear()
            telemetry.record("errors", 1, database=self._database, step="window")
            if isinstance(error, Exception):
                # Counted where status and the run's summary show it: a cause that keeps
                # coming back (a getMore sent to the wrong router) must not stay hidden.
                self._count_reread(_cause(error))
            if isinstance(error, Superseded) and not self._holds_lease():
                raise self._lease_lost() from error  # the cause, whichever write found it
            raise

    def _count_reread(self, cause: str) -> None:
        self.rereads[cause] += 1
        self._unrecorded[cause] += 1
        telemetry.record("window_rereads", 1, database=self._database, cause=cause)

    def _window(self) -> WindowResult:
        self.release_held_changes()
        limits = self._backpressure.limits
        max_events, max_bytes = limits.events, limits.bytes
        deadline = time.monotonic() + limits.seconds
        result = WindowResult(rereads=sum(self._unrecorded.values()))
        groups: dict[str, list[ChangeEvent]] = {}
        size = 0
        start_after = False
        try:
            reused = self._stream is not None
            stream = self._open()
            result.idle = False
            while result.events < max_events and size < max_bytes:
                try:
                    events = stream.next_events(max_events - result.events, max_bytes - size)
                except OperationFailure as error:
                    expired = error.code == MongoErrorCode.CURSOR_NOT_FOUND
                    if not (expired and reused and result.events == 0):
                        raise
                    # The cursor outlived its idle timeout between windows (the server kills
                    # idle cursors, and those of idle sessions): nothing of it was consumed in
                    # this window, so the checkpoint is exactly where it stood. Go on from there.
                    # Counted all the same: a getMore sent to the wrong router looks alike.
                    log.info("%s: the change stream's cursor was gone; reopened", self._database)
                    self._count_reread(f"{_cause(error)}, cursor reopened")
                    self._close_stream()
                    stream, reused = self._open(), False
                    continue
                if not events:
                    # Drained up to the present, or the server ended the cursor: then the
                    # next window reopens it.
                    result.idle = stream.alive
                    if not (limits.patient and result.events and stream.alive):
                        break
                    # The replicator is behind: fewer, larger files, so this window waits for
                    # more events until its deadline.
                    if time.monotonic() >= deadline:
                        break
                    continue
                result.idle = False
                result.events += len(events)
                size += sum(event.size for event in events)
                if len(events) > 1:
                    self._route_rows(events, groups)
                elif events[0].operation == "invalidate":
                    start_after = True  # the database was dropped; only startAfter goes on
                    break
                else:
                    self._route(events[0], groups, result)
                if time.monotonic() >= deadline:
                    break
            token = stream.resume_token
        except HistoryLost as error:
            self._history_lost(str(error), result)
            return result
        for collection, events in groups.items():
            name = str(TableRef.for_collection(self._database, collection))
            result.tables[name] = self._apply(collection, events, result)
        self._backpressure.refresh(self._next_number)
        self._checkpoint(token, start_after)
        if start_after or not stream.alive:
            self._close_stream()
        return result

    def _route_rows(self, rows: list[ChangeEvent], groups: dict[str, list[ChangeEvent]]) -> None:
        """A run of row events (see ChangeCursor.next_events), grouped by collection at once."""
        for collection, run in groupby(rows, key=_collection):
            if collection is not None and self._selected(collection):
                groups.setdefault(collection, []).extend(run)

    def _route(
        self, event: ChangeEvent, groups: dict[str, list[ChangeEvent]], result: WindowResult
    ) -> None:
        collection = event.collection
        if event.operation == "dropDatabase":
            groups.clear()
            for table in self._tables():
                self._rebuild(table, "the database was dropped", result, event.position)
            return
        if collection is None:
            return
        if event.operation == "rename":
            self._renamed_onto(event, groups, result)
        if not self._selected(collection):
            return
        if event.operation in TABLE_ENDING_OPERATIONS:
            groups.pop(collection, None)  # rows of the old collection must not reach the new
            cause = (
                "the collection was dropped"
                if event.operation == "drop"
                else f"the collection was renamed to {event.target}"
            )
            # Planned or not: a table that only holds changes so far goes too.
            table = TableRef.for_collection(self._database, collection)
            self._rebuild(table, cause, result, event.position)
            return
        if event.operation in ROW_OPERATIONS:
            groups.setdefault(collection, []).append(event)

    def _renamed_onto(
        self, event: ChangeEvent, groups: dict[str, list[ChangeEvent]], result: WindowResult
    ) -> None:
        """A rename onto a selected collection replaces whatever had that name, and is the only
        event that says so: a real server emits no drop for a target it overwrites
        (SERVER-53478), and a collection renamed in from another database arrives as the
        rename of its staging copy (SERVER-107688). So the target's table is rebuilt (its
        old rows go) and reported as discovered, to be planned and snapshotted now."""
        target = event.target
        if target is None or event.target_database not in (None, self._database):
            return  # renamed out of this database: only its source concerns this stream
        if not self._selected(target):
            return
        groups.pop(target, None)  # rows of the replaced collection must not reach the new one
        table = TableRef.for_collection(self._database, target)
        cause = f"another collection was renamed onto it: {event.collection}"
        self._rebuild(table, cause, result, event.position)
        result.discovered.append(target)

    def _apply(
        self, collection: str, events: list[ChangeEvent], result: WindowResult
    ) -> TableActivity:
        table = TableRef.for_collection(self._database, collection)
        try:
            return self._apply_fenced(table, collection, events, result)
        except Superseded as error:
            if not self._holds_lease():
                raise
            # Our lease stands, so no other reader has the table: it was rebuilt under us (an
            # operator's resync). The events go to its new generation, claimed afresh.
            log.warning("%s: %s; its changes go to the rebuilt table", table, error)
            self._forget(table)
            result.rebuilt.append(str(table))
        try:
            return self._apply_fenced(table, collection, events, result)
        except TableRebuilding:
            # Still being rebuilt: its next plan starts after everything read so far.
            self._forget(table)
            return TableActivity(events=len(events))

    def _apply_fenced(
        self, table: TableRef, collection: str, events: list[ChangeEvent], result: WindowResult
    ) -> TableActivity:
        activity = TableActivity(events=len(events))
        plan = load_plan(self._ctx.state, table)
        if plan is None:
            # A collection that appeared after planning: its events are held until its own
            # snapshot is planned (by the orchestrator) and published.
            try:
                self._ctx.publisher.prepare_table(table)
            except Exception as error:  # this table's alone: planning it reports it too
                known = self._ctx.state.get(SEQUENCE_KIND, table.folder)
                if known is not None and CHANGES_WRITER in known.value.get("progress", {}):
                    raise  # changes it already holds must go on unbroken: retry the window
                # Nothing held yet: its snapshot, once it can be planned, starts after these
                # events and reads their documents afresh, so dropping them loses nothing.
                if not isinstance(error, AwaitingDrop):
                    log.warning("%s: changes skipped until it can be planned: %s", table, error)
                elif table.folder not in self._awaiting_drop:
                    log.info("%s: changes skipped until it can be planned: %s", table, error)
                    self._awaiting_drop.add(table.folder)
                    result.discovered.append(collection)  # planning checks the drop now
                return activity
            result.discovered.append(collection)
        self._awaiting_drop.discard(table.folder)
        owner = self._table_owner(table)
        progress = self._ctx.publisher.progress(table, CHANGES_WRITER) or {}
        done = progress.get("token")
        # Until this generation has applied a change, it begins at its plan's start point (the
        # snapshot read everything before it): a paused reader's older events never reach it.
        # Once it has, its changes form one unbroken run from the first: only the last counts.
        floor = done if isinstance(done, str) else plan.start_token if plan is not None else None
        if floor is not None:
            events = [e for e in events if e.position > token_order(floor)]
        rows = [e for e in events if e.document is not None]
        if not events:
            return activity
        last = events[-1]
        activity.lag_seconds = max(0.0, time.time() - last.cluster_seconds)
        telemetry.record("change_events", len(events), table=str(table))
        telemetry.record("lag_seconds", activity.lag_seconds, table=str(table))
        log.debug(
            "%s: %d change events, lag %.1fs",
            table,
            len(events),
            activity.lag_seconds,
            extra={"table": str(table), "window": last.position},
        )
        activity.rows = len(rows)
        totals = _totals(progress, len(events), len(rows), activity.lag_seconds)
        # Where this generation's changes begin: a rebuild decided at a later position is its.
        totals["since"] = progress.get("since", events[0].token)
        if plan is not None and plan.phase == Phase.STREAMING and not _holding(progress):
            if rows:
                batch = self._convert(table, rows)
                number = self._ctx.publisher.publish(
                    table,
                    batch,
                    CHANGES_WRITER,
                    {**progress, **totals, "token": last.token},
                    owner,
                )
                self._backpressure.published(table, number)
            else:
                self._ctx.publisher.record_progress(
                    table, CHANGES_WRITER, {**progress, **totals, "token": last.token}, owner
                )
            return activity
        held = int(progress.get("held", 0))
        writers = _held_writers(progress)
        if rows:
            self._write_held(table, held, owner, rows)
            if not writers or writers[-1][1] != owner:
                writers.append([held, owner])
            held += 1
        self._ctx.publisher.record_progress(
            table,
            CHANGES_WRITER,
            {**progress, **totals, "token": last.token, "held": held, "held_by": writers},
            owner,
        )
        return activity

    def settled(self) -> bool:
        """Every table of the database snapshotted, its held changes published, and its folder
        continuous (no number allocated without its file)."""
        owners = set(self._table_owners.values())
        for plan in self._plans():
            if plan.phase != Phase.STREAMING:
                return False
            if _holding(self._ctx.publisher.progress(plan.table, CHANGES_WRITER) or {}):
                return False
            if self._ctx.publisher.unfinished(plan.table, owners):
                return False
        return True

    # -- held changes (a table whose snapshot is still running) --------------------------------

    def release_held_changes(self) -> None:
        """Publish, in order, the changes held for every table whose snapshot has finished."""
        for plan in self._plans():
            if plan.phase != Phase.STREAMING:
                continue
            try:
                self._release(plan.table)
            except Superseded:
                if not self._holds_lease():
                    raise
                self._forget(plan.table)  # rebuilt under us: the rebuild removes them

    def _release(self, table: TableRef) -> None:
        progress = self._ctx.publisher.progress(table, CHANGES_WRITER) or {}
        if not _holding(progress):
            return
        owner = self._table_owner(table)
        store = self._ctx.publisher.store
        released = int(progress.get("released", 0))
        for number in range(released, int(progress["held"])):
            path = _held_path(table, number, progress)
            rows = list(_read_held(store.read(path)))
            progress = {**progress, "released": number + 1}
            if rows:
                batch = self._convert(table, rows)
                number = self._ctx.publisher.publish(table, batch, CHANGES_WRITER, progress, owner)
                self._backpressure.published(table, number)
            else:
                self._ctx.publisher.record_progress(table, CHANGES_WRITER, progress, owner)
            store.delete(path)
        log.info("%s: published the changes held during its snapshot", table)

    def _write_held(
        self, table: TableRef, number: int, owner: str, rows: list[ChangeEvent]
    ) -> None:
        data = b"".join(
            bson.encode({"m": _marker(event), "d": RawBSONDocument(event.document or b"")})
            for event in rows
        )
        # Under a name that embeds this claim, which only this reader writes: a paused reader
        # writing the same number can only add a file nobody reads, never replace the one that
        # was recorded (the state names the claim that wrote each run of held files).
        path = _held_name(table, number, owner)
        self._ctx.publisher.store.write(path, data)

    # -- helpers ------------------------------------------------------------------------------

    def _convert(self, table: TableRef, rows: list[ChangeEvent]) -> pa.Table:
        registry = self._registries.get(table.folder)
        if registry is None:
            generation = self._ctx.publisher.generation(table)
            registry = SchemaRegistry(
                self._ctx.state, table, generation, self._ctx.settings.column_budget
            )
            self._registries[table.folder] = registry
        documents = [event.document or b"" for event in rows]
        batch = registry.convert(documents, [_marker(event) for event in rows])
        marker = batch.column(ROW_MARKER)
        return batch.drop_columns([ROW_MARKER]).append_column(ROW_MARKER, marker)

    def _table_owner(self, table: TableRef) -> str:
        owner = self._table_owners.get(table.folder)
        if owner is None:
            owner, _ = self._ctx.publisher.claim(table, CHANGES_WRITER, epoch=self._epoch)
            self._table_owners[table.folder] = owner
        return owner

    def _forget(self, table: TableRef) -> None:
        self._table_owners.pop(table.folder, None)
        self._registries.pop(table.folder, None)

    def _next_number(self, table: TableRef) -> int | None:
        """The table's next sequence number; None if this state numbers no files for it now."""
        record = self._ctx.state.get(SEQUENCE_KIND, table.folder)
        if record is None:
            return None
        number = record.value.get("next")
        return number if isinstance(number, int) else None

    def _generation(self, table: TableRef) -> str:
        """The table's generation now; "" if it has none (then no rebuild can match it)."""
        record = self._ctx.state.get(SEQUENCE_KIND, table.folder)
        return "" if record is None else str(record.value.get("generation", ""))

    def _lease_lost(self) -> Superseded:
        return Superseded(
            f"database {self._database}: another reader took over the stream; "
            "this one stops without publishing"
        )

    def _holds_lease(self) -> bool:
        record = self._ctx.state.get(STREAM_KIND, self._database)
        return record is not None and record.value.get("owner") == self._owner

    def _rebuild(self, table: TableRef, cause: str, result: WindowResult, before: str) -> None:
        """Rebuild ``table`` for an event at stream position ``before`` (see rebuild.py)."""
        if rebuild_table(self._ctx.publisher, table, cause, before=before) is not None:
            result.rebuilt.append(str(table))
        self._forget(table)

    def _history_lost(self, reason: str, result: WindowResult) -> None:
        """The checkpoint fell off the oplog: every table of the database starts again."""
        log.error("database %s lost its change history (%s)", self._database, reason)
        self._close_stream()
        # Every table misses changes, however late it was planned; the generations are read
        # before the lease is checked, so a reader paused after the check retires none that a
        # successor made since.
        generations = {table: self._generation(table) for table in self._tables()}
        if not self._holds_lease():
            raise self._lease_lost()
        for table, generation in generations.items():
            cause = f"change history lost: {reason}"
            if rebuild_table(self._ctx.publisher, table, cause, generation=generation):
                result.rebuilt.append(str(table))
            self._forget(table)
        self._checkpoint(current_position(self._ctx.mongo[self._database]), False)

    def _plans(self) -> list[TablePlan]:
        return [plan for plan in all_plans(self._ctx.state) if plan.database == self._database]

    def _tables(self) -> list[TableRef]:
        """Every table of the database this state numbers files for, planned or only held."""
        tables = {plan.table for plan in self._plans()}
        for folder, _ in self._ctx.state.list(SEQUENCE_KIND):
            table = TableRef.from_folder(folder)
            if table.schema == self._database:
                tables.add(table)
        return sorted(tables, key=str)

    def _selected(self, collection: str) -> bool:
        if collection.startswith("system."):
            return False
        if self._collections is None:
            # The staging copy of a rename from another database: its inserts pass by, and
            # the rename onto the target that ends the copy brings the data in as a new table.
            return not is_rename_staging(collection)
        return collection in self._collections

    def _open(self) -> ChangeCursor:
        if self._stream is None:
            record = self._ctx.state.get(STREAM_KIND, self._database)
            if record is None:
                raise MirrorError(f"database {self._database} has no stream checkpoint")
            self._stream = open_stream(
                self._ctx.mongo[self._database],
                self._collections,
                str(record.value["token"]),
                start_after=bool(record.value.get("start_after")),
                max_await_ms=self._ctx.settings.integer("CHANGE_AWAIT_MS"),
            )
        return self._stream

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _cause(error: Exception) -> str:
    """A failed window's cause as a short name: ``CursorNotFound (43)``, ``AutoReconnect``."""
    if isinstance(error, PyMongoError):
        return describe(error).split(":", 1)[0]
    return type(error).__name__


def _add_counts(recorded: object, more: Counter[str]) -> dict[str, int]:
    counts = Counter(
        {str(k): int(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
    )
    counts.update(more)
    return dict(counts)


def _died_here(holder: object) -> bool:
    """The lease holder ran on this machine and its process is gone: provably not reading, so
    a restart after a crash need not wait for the lease to expire."""
    if not isinstance(holder, dict) or holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet: signals reach it, it runs nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux): counted as alive, the lease then expires
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


_collection = attrgetter("collection")


def _marker(event: ChangeEvent) -> int:
    return int(RowMarker.DELETE if event.operation == "delete" else RowMarker.UPSERT)


def _holding(progress: JsonObject) -> bool:
    return int(progress.get("held", 0)) > int(progress.get("released", 0))


def _totals(progress: JsonObject, events: int, rows: int, lag: float) -> JsonObject:
    return {
        "events": int(progress.get("events", 0)) + events,
        "rows": int(progress.get("rows", 0)) + rows,
        "lag_seconds": round(lag, 3),
        "checkpoint_at": time.time(),
    }


def _held_writers(progress: JsonObject) -> list[list[Any]]:
    """[first held number, claim] for each run of held files one claim wrote."""
    writers = progress.get("held_by", [])
    if not isinstance(writers, list) or any(
        not isinstance(run, list) or len(run) != 2 or not isinstance(run[1], str) for run in writers
    ):
        raise MirrorError("the held changes' writers are malformed in the state")
    return [list(run) for run in writers]


def _held_name(table: TableRef, number: int, owner: str) -> str:
    return f"{table.folder}/{HELD_FOLDER}/{number:020d}-{owner}.bson"


def _held_path(table: TableRef, number: int, progress: JsonObject) -> str:
    """The recorded file of held number ``number``."""
    writers = [owner for first, owner in _held_writers(progress) if int(first) <= number]
    if not writers:  # held before files were named after their claim
        return f"{table.folder}/{HELD_FOLDER}/{number:020d}.bson"
    return _held_name(table, number, writers[-1])


def _read_held(data: bytes) -> Iterator[ChangeEvent]:
    """Held rows back as events; the file is ours, but storage is validated like any input."""
    position = 0
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "little")
        if length < 5 or position + length > len(data):
            raise MirrorError("a held-changes file is truncated or damaged")
        entry = RawBSONDocument(data[position : position + length])
        position += length
        marker = entry.get("m")
        document = entry.get("d")
        if marker not in (RowMarker.UPSERT, RowMarker.DELETE) or not isinstance(
            document, RawBSONDocument
        ):
            raise MirrorError("a held-changes file has a malformed row")
        operation = "delete" if marker == RowMarker.DELETE else "replace"
        yield ChangeEvent("", operation, 0, None, bytes(document.raw), len(document.raw))
