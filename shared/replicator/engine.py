"""The replicator: landing-zone files in, Delta tables out, applied files moved, then aged out.

It does what Microsoft documents of Fabric's open-mirroring replicator (the "landing zone
format", "best practices" and "troubleshooting" pages; gathered in
shared/spec/landing-zone-contract.md). One pass (``Replicator.run_once``), per table folder:

1. ``_metadata.json`` gives the merge keys (``keyColumns``). No file yet: the table waits. Keys
   can never change: a change stops the table. A folder recreated since the last pass (its
   ``_metadata.json`` is another file: Fabric tracks the folder's ETag) drops the Delta table
   and replicates the folder from scratch.
2. The table's progress is the last sequence number applied. It is recorded in the very Delta
   commit that applied the file (commit metadata ``SEQUENCE_KEY``): applying a file and
   recording it are one atomic commit, so a restart never applies a file twice.
3. Each numbered file after it, in sequence order, while the next number is present (a missing
   number blocks every later file, as it blocks Fabric's): read, checked (a column whose type
   changes stops the table; the others go on), applied in one commit, then moved to
   ``_ProcessedFiles/`` or ``_FilesReadyToDelete/``. A file applied but still in the folder (a
   crash between commit and move) is only moved.
4. A moved file is deleted once it has been moved for the retention (7 days, as Fabric's).
Then the Delta table of a folder that disappeared is dropped. What status shows (rows, bytes,
errors, when each file was moved) is kept in ``_replicator/state.json`` under the tables' root,
written after each table; a crash between a step and that write is completed by the next pass.

Rows (format page, "row marker"): rows apply in file order, files in sequence order;
``__rowMarker__`` 0 inserts (no duplicate check), 1 updates (inserting a missing row), 2 deletes
(nothing if missing), 4 upserts. Without the column every row is an insert: the file is appended
(Fabric's "direct staging" path). Update and upsert rows carry the full row: a column the file
lacks becomes NULL. New columns are added to the table.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake

from shared.delta_tables import DeltaTablesLocation
from shared.errors import MirrorError
from shared.landing_zone.parquet_files import ROW_MARKER, RowMarker
from shared.landing_zone.replayer import find_tables
from shared.landing_zone.stores.base import (
    LandingZoneStore,
    PathExistsError,
    PathNotFoundError,
    StoredFile,
)
from shared.landing_zone.tables import (
    METADATA_FILE,
    PROCESSED_FOLDER,
    READY_TO_DELETE_FOLDER,
    TableRef,
    published_files,
)

log = logging.getLogger(__name__)

DAY_SECONDS = 86400
SEQUENCE_KEY = "mongoFabricMirror.replicatedSequence"
STATE_FILE = "_replicator/state.json"
# OneLake names a table without a schema folder in the mirrored database's default schema.
DEFAULT_SCHEMA = "dbo"
# TableMirroringStatus values of getTablesMirroringStatus (Fabric REST API reference).
INITIALIZED, REPLICATING, FAILED = "Initialized", "Replicating", "Failed"
_POSITION = "__replicator_position__"
_LAST_CHANGE = "__replicator_last_change__"
_KEEPS_ROW = (int(RowMarker.INSERT), int(RowMarker.UPDATE), int(RowMarker.UPSERT))
_CHANGES_ROW = (int(RowMarker.UPDATE), int(RowMarker.UPSERT))
_HISTORY_SEARCHED = 100  # commits searched for the progress (ours are the newest but a user's)

ReadyToDelete = Callable[[TableRef, int], bool]
"""Whether file ``number`` of a table goes to ``_FilesReadyToDelete/`` (else ``_ProcessedFiles/``).
Fabric documents both folders but not when it picks which: callers choose a deterministic rule."""


def never(table: TableRef, number: int) -> bool:
    return False


def every_nth(count: int) -> ReadyToDelete:
    """Every ``count``-th file goes to ``_FilesReadyToDelete/``."""
    return lambda table, number: number % count == 0


@dataclass
class TableState:
    """The replicator's record of one table (key = the landing-zone folder)."""

    folder: str
    delta_path: str
    status: str = INITIALIZED
    applied: int = 0
    rows: int = 0
    bytes: int = 0
    last_sync: float | None = None
    error: str | None = None
    error_code: str | None = None
    stopped: bool = False  # stopped for good: only recreating the folder resumes it
    keys: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # established types, from the files
    metadata_version: str = ""
    moved: dict[str, float] = field(default_factory=dict)  # moved file path -> when

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "deltaPath": self.delta_path,
            "status": self.status,
            "applied": self.applied,
            "rows": self.rows,
            "bytes": self.bytes,
            "lastSync": self.last_sync,
            "error": self.error,
            "errorCode": self.error_code,
            "stopped": self.stopped,
            "keys": self.keys,
            "columns": self.columns,
            "metadataVersion": self.metadata_version,
            "moved": self.moved,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TableState:
        return cls(
            folder=str(value["folder"]),
            delta_path=str(value["deltaPath"]),
            status=str(value["status"]),
            applied=int(value["applied"]),
            rows=int(value["rows"]),
            bytes=int(value["bytes"]),
            last_sync=None if value.get("lastSync") is None else float(value["lastSync"]),
            error=value.get("error"),
            error_code=value.get("errorCode"),
            stopped=bool(value.get("stopped", False)),
            keys=[str(key) for key in value.get("keys", [])],
            columns={str(k): str(v) for k, v in value.get("columns", {}).items()},
            metadata_version=str(value.get("metadataVersion", "")),
            moved={str(k): float(v) for k, v in value.get("moved", {}).items()},
        )

    @property
    def table(self) -> TableRef:
        return TableRef.from_folder(self.folder)

    def reset(self) -> None:
        """Forget everything but where the table is: it is replicated from scratch."""
        fresh = TableState(self.folder, self.delta_path)
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def mirroring_status(self) -> dict[str, Any]:
        """This table as ``getTablesMirroringStatus`` reports one (Fabric REST API reference,
        "Mirroring - Get Tables Mirroring Status": ``sourceSchemaName``, ``sourceTableName``,
        ``status``, ``metrics`` {processedBytes, processedRows, lastSyncDateTime}, ``error``)."""
        table = self.table
        metrics: dict[str, Any] = {"processedBytes": self.bytes, "processedRows": self.rows}
        if self.last_sync is not None:
            moment = datetime.datetime.fromtimestamp(self.last_sync, datetime.UTC)
            metrics["lastSyncDateTime"] = moment.isoformat().replace("+00:00", "Z")
        entry: dict[str, Any] = {
            "sourceSchemaName": table.schema or DEFAULT_SCHEMA,
            "sourceTableName": table.name,
            "status": self.status,
            "metrics": metrics,
        }
        if self.error is not None:
            entry["error"] = {"errorCode": self.error_code or "Error", "message": self.error}
        return entry


@dataclass
class PassSummary:
    files: int = 0
    rows: int = 0
    moved: int = 0
    deleted: int = 0
    dropped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class _Stop(MirrorError):
    """The table cannot go on (Fabric stops it); ``code`` is the error code status shows."""

    def __init__(self, code: str, message: str, *, for_good: bool) -> None:
        super().__init__(message)
        self.code, self.for_good = code, for_good


class Replicator:
    def __init__(
        self,
        landing: LandingZoneStore,
        tables: DeltaTablesLocation,
        *,
        retention_seconds: float = 7 * DAY_SECONDS,
        clock: Callable[[], float] = time.time,
        ready_to_delete: ReadyToDelete = never,
    ) -> None:
        self.landing = landing
        self.tables = tables
        self.retention_seconds = retention_seconds
        self.clock = clock
        self.ready_to_delete = ready_to_delete
        self._side = tables.store()  # reached with what --tables holds: no token
        self._options = dict(tables.storage_options)

    # --- state -----------------------------------------------------------------------------

    def load_state(self) -> dict[str, TableState]:
        try:
            document = json.loads(self._side.read(STATE_FILE))
        except PathNotFoundError:
            return {}
        except ValueError:
            raise MirrorError(
                f"{STATE_FILE} in {self.tables.description} is not valid JSON"
            ) from None
        return {folder: TableState.from_json(value) for folder, value in document["tables"].items()}

    def _save(self, states: dict[str, TableState]) -> None:
        document = {"tables": {folder: state.to_json() for folder, state in states.items()}}
        self._side.write(STATE_FILE, json.dumps(document, indent=1, sort_keys=True).encode())

    def tables_mirroring_status(self) -> list[dict[str, Any]]:
        """Every table as Fabric's ``getTablesMirroringStatus`` lists it."""
        return [state.mirroring_status() for _, state in sorted(self.load_state().items())]

    def delta_uri(self, table: TableRef) -> str:
        return self.tables.table_uri(delta_path(table))

    # --- one pass --------------------------------------------------------------------------

    def run_once(self) -> PassSummary:
        summary = PassSummary()
        states = self.load_state()
        present = {table.folder: table for table in find_tables(self.landing)}
        for folder, table in present.items():
            state = states.get(folder) or TableState(folder, delta_path(table))
            states[folder] = state
            try:
                self._replicate(table, state, summary)
            finally:
                self._save(states)
            if state.status == FAILED:
                summary.failed.append(str(table))
        for folder in sorted(set(states) - set(present)):
            # The folder is gone: Fabric drops the table from the mirrored database.
            self._side.delete_folder(states[folder].delta_path)
            summary.dropped.append(str(states.pop(folder).table))
            self._save(states)
        return summary

    def run(self, stop: threading.Event, interval_seconds: float) -> PassSummary:
        """Passes until ``stop`` is set; the totals of every pass."""
        total = PassSummary()
        while True:
            summary = self.run_once()
            total.files += summary.files
            total.rows += summary.rows
            total.moved += summary.moved
            total.deleted += summary.deleted
            total.dropped += summary.dropped
            total.failed = summary.failed
            if stop.wait(interval_seconds):
                return total

    def _replicate(self, table: TableRef, state: TableState, summary: PassSummary) -> None:
        listing = {file.path: file for file in self.landing.list_files(table.folder)}
        metadata = listing.get(table.metadata_file)
        if metadata is None:
            return  # Fabric waits for _metadata.json before it reads any data
        if state.metadata_version and metadata.version != state.metadata_version:
            log.warning("%s: the folder was recreated; its Delta table is rebuilt", table)
            self._side.delete_folder(state.delta_path)
            state.reset()
        state.metadata_version = metadata.version
        if state.stopped:
            self._age_out(table, state, summary)
            return
        try:
            keys = self._keys(table)
            if state.keys and keys != state.keys:
                raise _Stop(
                    "KeyColumnsChanged",
                    f"keyColumns changed from {state.keys} to {keys}; keys can never change: "
                    "rebuild the table (delete the folder, wait for the table to drop, recreate)",
                    for_good=True,
                )
            state.keys = keys
            state.applied = self._progress(table, state)
            self._apply_pending(table, state, summary)
            if state.status != REPLICATING:
                state.status, state.error, state.error_code = REPLICATING, None, None
        except _Stop as stop:
            log.error("%s: %s", table, stop)
            state.status, state.error, state.error_code = FAILED, str(stop), stop.code
            state.stopped = stop.for_good
        self._age_out(table, state, summary)

    def _keys(self, table: TableRef) -> list[str]:
        try:
            value = json.loads(self.landing.read(table.metadata_file))
        except ValueError:
            raise _Stop("InvalidMetadata", f"{METADATA_FILE} is not JSON", for_good=False) from None
        keys = value.get("keyColumns") if isinstance(value, dict) else None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            # Without keys Fabric can only insert; this mirror always declares them.
            raise _Stop("InvalidMetadata", f"{METADATA_FILE} has no keyColumns", for_good=False)
        return keys

    def _progress(self, table: TableRef, state: TableState) -> int:
        """The last sequence number applied, as the newest commit that applied one says."""
        uri = self.delta_uri(table)
        if not DeltaTable.is_deltatable(uri, self._options):
            return 0
        history = DeltaTable(uri, storage_options=self._options).history(_HISTORY_SEARCHED)
        for commit in history:
            if SEQUENCE_KEY in commit:
                return int(commit[SEQUENCE_KEY])
        return state.applied

    def _apply_pending(self, table: TableRef, state: TableState, summary: PassSummary) -> None:
        files = published_files(self.landing, table).files
        # Files still in the table folder (the first copy found is the folder's).
        in_folder = {
            number: stored
            for number, stored in files.items()
            if stored.path == table.data_file(number)
        }
        for number in sorted(in_folder):
            stored = in_folder[number]
            if number <= state.applied:
                self._move(table, number, stored, state, summary)
                continue
            if number != state.applied + 1:
                return  # a missing number blocks every later file
            self._apply(table, number, stored, state, summary)
            self._move(table, number, stored, state, summary)

    def _apply(
        self,
        table: TableRef,
        number: int,
        stored: StoredFile,
        state: TableState,
        summary: PassSummary,
    ) -> None:
        if stored.size == 0:
            raise _Stop("InvalidFile", f"file {number} has zero bytes", for_good=False)
        try:
            batch = pq.read_table(io.BytesIO(self.landing.read(stored.path)))
        except (pa.ArrowException, OSError) as error:
            raise _Stop(
                "InvalidFile", f"file {number} is not readable parquet: {error}", for_good=False
            ) from None
        missing = [key for key in state.keys if key not in batch.schema.names]
        if missing:
            raise _Stop("MissingKeyColumn", f"file {number} lacks {missing}", for_good=False)
        self._check_types(number, batch, state)
        commit = CommitProperties(custom_metadata={SEQUENCE_KEY: str(number)})
        uri, options = self.delta_uri(table), self._options
        exists = DeltaTable.is_deltatable(uri, options)
        markers = batch.column(ROW_MARKER) if ROW_MARKER in batch.schema.names else None
        if markers is None or pc.all(pc.equal(markers, int(RowMarker.INSERT))).as_py() in (
            True,
            None,  # a file of zero rows
        ):
            rows = batch.drop_columns([ROW_MARKER]) if markers is not None else batch
            if exists:
                self._add_columns(uri, rows)
            write_deltalake(
                uri,
                rows,
                mode="append",
                schema_mode="merge" if exists else None,
                storage_options=options,
                commit_properties=commit,
            )
        else:
            final = _final_rows(
                batch.set_column(
                    batch.schema.get_field_index(ROW_MARKER),
                    ROW_MARKER,
                    markers.cast(pa.int32()),
                ),
                state.keys,
            )
            if not exists:
                # Nothing to update or delete yet: the rows that remain are the table.
                kept = final.filter(pc.is_in(final.column(ROW_MARKER), pa.array(_KEEPS_ROW)))
                write_deltalake(
                    uri,
                    kept.drop_columns([ROW_MARKER]),
                    mode="append",
                    storage_options=options,
                    commit_properties=commit,
                )
            else:
                self._add_columns(uri, batch)
                self._merge(uri, _with_all_columns(final, state), state.keys, commit)
        for name, column_type in _types(batch).items():
            state.columns.setdefault(name, column_type)
        state.applied = number
        state.rows += batch.num_rows
        state.bytes += stored.size
        state.last_sync = self.clock()
        summary.files += 1
        summary.rows += batch.num_rows

    def _add_columns(self, uri: str, batch: pa.Table) -> None:
        """Add the file's new columns to the table first, in the file's order. Delta's schema
        merge on ``merge`` adds them in an order of its own (x__json, y, y__json, x for a file's
        x, x__json, y, y__json); the table must keep the order in which the landing zone first
        carried its columns (as a replay of the files has it), by which ``verify`` tells a twin
        from its column and one renamed field's column from another's."""
        table = DeltaTable(uri, storage_options=self._options)
        present = {column.name for column in table.schema().fields}
        new = [
            pa.field(column.name, column.type)  # nullable: earlier rows have no value
            for column in batch.schema
            if column.name != ROW_MARKER and column.name not in present
        ]
        if new:
            # Its own commit, without SEQUENCE_KEY: a crash before the data commit leaves the
            # columns added and the file to apply again, which adds none.
            table.alter.add_columns(list(Schema.from_arrow(pa.schema(new)).fields))

    def _merge(self, uri: str, source: pa.Table, keys: list[str], commit: CommitProperties) -> None:
        marker = _ident(ROW_MARKER)
        match = " AND ".join(f"t.{_ident(key)} = s.{_ident(key)}" for key in keys)
        changes = ", ".join(str(value) for value in _CHANGES_ROW)
        kept = ", ".join(str(value) for value in _KEEPS_ROW)
        table = DeltaTable(uri, storage_options=self._options)
        (
            # Inserts never match (no duplicate check): each becomes a new row.
            table.merge(
                source,
                predicate=f"{match} AND s.{marker} <> {int(RowMarker.INSERT)}",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=commit,
            )
            .when_matched_update_all(
                predicate=f"s.{marker} IN ({changes})", except_cols=[ROW_MARKER]
            )
            .when_matched_delete(predicate=f"s.{marker} = {int(RowMarker.DELETE)}")
            .when_not_matched_insert_all(
                predicate=f"s.{marker} IN ({kept})", except_cols=[ROW_MARKER]
            )
            .execute()
        )

    def _check_types(self, number: int, batch: pa.Table, state: TableState) -> None:
        for name, column_type in _types(batch).items():
            established = state.columns.get(name)
            if established is not None and established != column_type:
                raise _Stop(
                    "ColumnTypeChanged",
                    f"column {name} changes type from {established} to {column_type} in file "
                    f"{number}: the table stops, as Fabric's does; rebuild it (delete the "
                    "folder, wait for the table to drop, recreate it with a full load)",
                    for_good=True,
                )

    def _move(
        self,
        table: TableRef,
        number: int,
        stored: StoredFile,
        state: TableState,
        summary: PassSummary,
    ) -> None:
        folder = READY_TO_DELETE_FOLDER if self.ready_to_delete(table, number) else PROCESSED_FOLDER
        name = stored.path.rsplit("/", 1)[-1]
        target = f"{table.folder}/{folder}/{name}"
        try:
            self.landing.rename_new(stored.path, target)
        except PathExistsError:
            self.landing.delete(stored.path)  # moved before a crash; this is a leftover copy
        state.moved.setdefault(target, self.clock())
        summary.moved += 1

    def _age_out(self, table: TableRef, state: TableState, summary: PassSummary) -> None:
        now = self.clock()
        present: set[str] = set()
        for folder in (PROCESSED_FOLDER, READY_TO_DELETE_FOLDER):
            for stored in self.landing.list_files(f"{table.folder}/{folder}"):
                present.add(stored.path)
                moved = state.moved.setdefault(stored.path, now)  # moved before a crash
                if now - moved >= self.retention_seconds:
                    self.landing.delete(stored.path)
                    present.discard(stored.path)
                    summary.deleted += 1
        state.moved = {path: when for path, when in state.moved.items() if path in present}


def delta_path(table: TableRef) -> str:
    """The Delta table of a landing-zone table, as in OneLake's ``Tables/<schema>/<table>``."""
    return f"{table.schema or DEFAULT_SCHEMA}/{table.name}"


def read_delta_table(tables: DeltaTablesLocation, table: TableRef) -> pa.Table:
    """A replicated table's rows (pyarrow), e.g. to query them with DuckDB."""
    uri = tables.table_uri(delta_path(table))
    return DeltaTable(uri, storage_options=dict(tables.storage_options)).to_pyarrow_table()


def _types(batch: pa.Table) -> dict[str, str]:
    return {f.name: str(f.type) for f in batch.schema if f.name != ROW_MARKER}


def _final_rows(batch: pa.Table, keys: list[str]) -> pa.Table:
    """The rows of a marker file that decide the table, in file order: per key, its last
    update/upsert/delete row, and the inserts after it (an earlier insert of the key is undone
    by that change, as applying the rows one by one would)."""
    positions = pa.array(range(batch.num_rows), pa.int64())
    index = batch.select(keys).append_column(_POSITION, positions)
    markers = batch.column(ROW_MARKER)
    changes = index.filter(pc.not_equal(markers, int(RowMarker.INSERT)))
    last = changes.group_by(keys).aggregate([(_POSITION, "max")])
    last = last.rename_columns([*keys, _LAST_CHANGE])
    joined = index.append_column(ROW_MARKER, markers).join(last, keys=keys, join_type="left outer")
    joined = joined.sort_by(_POSITION)
    is_insert = pc.equal(joined.column(ROW_MARKER), int(RowMarker.INSERT))
    last_change = joined.column(_LAST_CHANGE)
    position = joined.column(_POSITION)
    keep = pc.if_else(
        is_insert,
        pc.or_kleene(pc.is_null(last_change), pc.greater(position, last_change)),
        pc.equal(position, last_change),
    )
    return batch.take(joined.filter(keep).column(_POSITION))


def _with_all_columns(rows: pa.Table, state: TableState) -> pa.Table:
    """``rows`` with a NULL column for each column of the table the file lacks: an update or
    upsert row is the full row, so a column it does not carry becomes NULL (format page)."""
    marker_at = rows.schema.get_field_index(ROW_MARKER)
    for name, column_type in state.columns.items():
        if name not in rows.schema.names:
            rows = rows.add_column(
                marker_at, name, pa.nulls(rows.num_rows, _parse_type(column_type))
            )
            marker_at += 1
    return rows


def _parse_type(text: str) -> pa.DataType:
    # The types our files carry (shared/spec/type-mapping.md), by their pyarrow names.
    simple = {
        "string": pa.string(),
        "large_string": pa.large_string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "int16": pa.int16(),
        "double": pa.float64(),
        "float": pa.float32(),
        "bool": pa.bool_(),
        "binary": pa.binary(),
        "large_binary": pa.large_binary(),
        "date32[day]": pa.date32(),
    }
    if text in simple:
        return simple[text]
    if text.startswith("timestamp["):
        unit, _, zone = text[len("timestamp[") : -1].partition(", tz=")
        return pa.timestamp(unit, tz=zone or None)
    return pa.string()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
