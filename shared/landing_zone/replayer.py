"""The replayer: what Fabric's replicator would make of a landing zone, without Fabric.

It checks each table folder against the landing-zone contract and applies the files in sequence
order with the row-marker semantics, in DuckDB, to produce the mirrored table. Tests compare
that table with the source; users run it as ``mongo-fabric-mirror inspect``.

A file without ``__rowMarker__`` is all inserts (landing-zone format page, "Initial load": the
whole file is treated as INSERT; we never set ``isUpsertDefaultRowMarker``), the way snapshot
files are written for the replicator's direct staging. An insert has no duplicate-key check in
Fabric (the format page's marker table), so a key that ends up in the table more than once is a
problem: the mirrored table would hold that row twice.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from shared.landing_zone.parquet_files import KEY_COLUMN, ROW_MARKER, RowMarker
from shared.landing_zone.stores.base import LandingZoneStore, StoredFile
from shared.landing_zone.tables import (
    METADATA_FILE,
    SCHEMA_SUFFIX,
    TableRef,
    published_files,
)

_SEQUENCE = "__replay_sequence__"
_ROW = "__replay_row__"
_VALID_MARKERS = tuple(int(marker) for marker in RowMarker)
_SHOWN_DUPLICATES = 5


@dataclass(frozen=True)
class Problem:
    """One contract violation; ``code`` is stable for tests, ``message`` is for people."""

    code: str
    message: str


@dataclass
class TableReport:
    table: TableRef
    files: int = 0
    problems: list[Problem] = field(default_factory=list)
    rows: pa.Table | None = None
    # The first file still in the landing zone. Above 1, the replicator applied and deleted the
    # files before it (after their retention): ``rows`` replays only the files present, which
    # is not the mirrored table. None when no numbered file is present.
    first_file: int | None = None
    history_removed: bool = False

    @property
    def conforms(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        """Whether ``rows`` is the whole mirrored table (every file since 1 is present)."""
        return self.rows is not None and not self.history_removed

    @property
    def row_count(self) -> int:
        return 0 if self.rows is None else self.rows.num_rows

    def add(self, code: str, message: str) -> None:
        self.problems.append(Problem(code, message))


def find_tables(store: LandingZoneStore) -> list[TableRef]:
    """Every table folder: ``<table>`` or ``<schema>.schema/<table>`` below the root."""
    tables: list[TableRef] = []
    for folder in store.list_folders(""):
        name = folder.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("_"):
            continue
        if name.endswith(SCHEMA_SUFFIX):
            tables.extend(
                TableRef.from_folder(inner)
                for inner in store.list_folders(folder)
                if not inner.rstrip("/").rsplit("/", 1)[-1].startswith("_")
            )
        else:
            tables.append(TableRef.from_folder(folder))
    return sorted(tables, key=lambda table: table.folder)


def inspect_table(store: LandingZoneStore, table: TableRef) -> TableReport:
    """Check one table folder against the contract and replay it if its files can be read."""
    report = TableReport(table)
    _check_metadata(store, table, report)
    numbered = _numbered_files(store, table, report)
    report.files = len(numbered)
    batches: list[pa.Table] = []
    established: dict[str, tuple[pa.DataType, int]] = {}
    for number, stored in numbered:
        batch = _read_data_file(store, number, stored, report)
        if batch is None:
            continue
        _check_schema(number, batch.schema, established, report)
        batches.append(
            batch.append_column(
                _SEQUENCE, pa.array([number] * batch.num_rows, pa.int64())
            ).append_column(_ROW, pa.array(range(batch.num_rows), pa.int64()))
        )
    if not any(problem.code in {"type-change", "unreadable"} for problem in report.problems):
        report.rows, duplicates = _apply(batches)
        for key, files in duplicates[:_SHOWN_DUPLICATES]:
            where = ", ".join(str(number) for number in files)
            report.add(
                "duplicate-key",
                f"{KEY_COLUMN} {key} is inserted more than once (files {where}): inserts have "
                "no duplicate check, so the mirrored table holds that row twice",
            )
        if len(duplicates) > _SHOWN_DUPLICATES:
            report.add(
                "duplicate-key",
                f"{len(duplicates) - _SHOWN_DUPLICATES} more keys are inserted more than once",
            )
    return report


def _check_metadata(store: LandingZoneStore, table: TableRef, report: TableReport) -> None:
    if store.size(table.metadata_file) is None:
        report.add("missing-metadata", f"{METADATA_FILE} is missing")
        return
    try:
        metadata = json.loads(store.read(table.metadata_file))
    except ValueError:
        report.add("invalid-metadata", f"{METADATA_FILE} is not valid JSON")
        return
    keys = metadata.get("keyColumns") if isinstance(metadata, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        report.add("invalid-metadata", f"{METADATA_FILE} has no valid keyColumns list")
    elif keys != [KEY_COLUMN]:
        report.add("invalid-metadata", f"{METADATA_FILE} keyColumns is {keys}, expected ['_id']")


def _numbered_files(
    store: LandingZoneStore, table: TableRef, report: TableReport
) -> list[tuple[int, StoredFile]]:
    # Files the replicator already processed move to _ProcessedFiles/ or _FilesReadyToDelete/
    # and still count; it deletes them after their retention, so the numbering is checked from
    # the lowest file present: the numbers below it were consumed.
    published = published_files(store, table)
    for name in published.unexpected:
        report.add("unexpected-file", f"{name} is not a 20-digit .parquet name")
    numbered = published.files
    report.first_file = published.lowest
    report.history_removed = published.history_removed
    expected = published.lowest if published.history_removed and published.lowest else 1
    for number in sorted(numbered):
        if number > expected:
            missing = f"{expected}" if number == expected + 1 else f"{expected}-{number - 1}"
            report.add("gap", f"gap at {missing}: files after it will never be applied")
        expected = number + 1
    return sorted(numbered.items())


def _read_data_file(
    store: LandingZoneStore, number: int, stored: StoredFile, report: TableReport
) -> pa.Table | None:
    if stored.size == 0:
        report.add("zero-byte", f"zero-byte file {number}")
        return None
    try:
        batch = pq.read_table(io.BytesIO(store.read(stored.path)))
    except (pa.ArrowException, OSError) as error:
        report.add("unreadable", f"file {number} is not readable parquet: {error}")
        return None
    names = batch.schema.names
    if ROW_MARKER in names and names[-1] != ROW_MARKER:
        report.add("marker-not-last", f"{ROW_MARKER} is not the last column in file {number}")
    if KEY_COLUMN not in names:
        report.add("missing-key", f"file {number} has no {KEY_COLUMN} column")
        return None
    if ROW_MARKER not in names:
        # Without the column every row is an insert (we never set isUpsertDefaultRowMarker).
        inserts = pa.array([RowMarker.INSERT] * batch.num_rows, pa.int32())
        return batch.append_column(ROW_MARKER, inserts)
    markers = batch.column(ROW_MARKER)
    if not pa.types.is_integer(markers.type):
        report.add("invalid-marker", f"{ROW_MARKER} in file {number} is {markers.type}, not int32")
        return None
    unknown = set(markers.to_pylist()) - set(_VALID_MARKERS)
    if unknown:
        report.add("invalid-marker", f"file {number} has row markers {sorted(unknown, key=str)}")
        return None
    return batch.set_column(names.index(ROW_MARKER), ROW_MARKER, markers.cast(pa.int32()))


def _check_schema(
    number: int,
    schema: pa.Schema,
    established: dict[str, tuple[pa.DataType, int]],
    report: TableReport,
) -> None:
    for column in schema:
        if not column.nullable:
            report.add("not-nullable", f"column {column.name} is not nullable in file {number}")
        first = established.setdefault(column.name, (column.type, number))
        if first[0] != column.type:
            report.add(
                "type-change",
                f"column {column.name} changes type from {first[0]} (file {first[1]}) "
                f"to {column.type} in file {number}",
            )


def _apply(batches: list[pa.Table]) -> tuple[pa.Table, list[tuple[object, list[int]]]]:
    """Apply rows in (file, row) order with the ``RowMarker`` semantics; also every key that
    ends up in more than one row, with the files of its rows.

    Per key, the last update/upsert/delete decides; a delete removes the key. Inserts have no
    duplicate check, so every insert after a key's last update/upsert/delete adds a row.
    """
    if not batches:
        return pa.table({KEY_COLUMN: pa.array([], pa.string())}), []
    history = pa.concat_tables(batches, promote_options="default")
    keep = [name for name in history.schema.names if name not in {ROW_MARKER, _SEQUENCE, _ROW}]
    columns = ", ".join('"' + name.replace('"', '""') + '"' for name in keep)
    order = f"{_SEQUENCE}, {_ROW}"
    insert = int(RowMarker.INSERT)
    keeps_row = f"{int(RowMarker.UPDATE)}, {int(RowMarker.UPSERT)}"
    # The rows that survive, each with its file number and row position.
    surviving = f"""
        WITH ranked AS (
            SELECT *,
                max(CASE WHEN {ROW_MARKER} <> {insert} THEN ({order}) END)
                    OVER (PARTITION BY {KEY_COLUMN}) AS last_change,
                ({order}) AS position
            FROM history
        )
        SELECT * FROM ranked
        WHERE (position = last_change AND {ROW_MARKER} IN ({keeps_row}))
           OR ({ROW_MARKER} = {insert} AND (last_change IS NULL OR position > last_change))
    """  # noqa: S608 - names come from parquet schemas and are quoted; numbers from RowMarker
    duplicated = f"""
        SELECT {KEY_COLUMN}, list(DISTINCT {_SEQUENCE} ORDER BY {_SEQUENCE}) FROM surviving
        GROUP BY {KEY_COLUMN} HAVING count(*) > 1 ORDER BY {KEY_COLUMN}
    """  # noqa: S608 - constant names
    connection = duckdb.connect()
    try:
        connection.register("history", history)
        connection.sql(surviving).create_view("surviving")
        applied = connection.sql(
            f"SELECT {columns} FROM surviving ORDER BY {KEY_COLUMN}, {order}"  # noqa: S608
        ).to_arrow_table()
        duplicates = [(key, list(files)) for key, files in connection.sql(duplicated).fetchall()]
    finally:
        connection.close()
    # DuckDB renames time zones (UTC → Etc/UTC); give back the files' own column types.
    return applied.cast(pa.schema([history.schema.field(name) for name in keep])), duplicates
