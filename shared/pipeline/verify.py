"""The ``verify`` step: does each table, replayed as Fabric would, equal its collection now?

Per table the folder is replayed (:func:`inspect_table`); the collection is read in ``_id`` order
as raw BSON batches, converted by the snapshot's own converter and spilled as parquet files into a
temporary folder, so no document becomes a Python object. DuckDB then joins both sides on the
``_id`` text with a FULL OUTER JOIN — the text form sorts differently from MongoDB's ``_id`` order,
so neither side has to be read in the other's order — under a memory limit, spilling to that
folder. Values compare exactly: NULL equals NULL, NaN equals NaN, -0.0 differs from 0.0.

The expected row of a document is the converter's output against a schema rebuilt from the landing
zone itself (its column names, order and types), so verify needs no state store. A column's type
fixes its kind except for text and binary columns (text holds strings, Decimal128, ObjectIds,
UUIDs or JSON; binary has a subtype) and except for names derived from fields with unsafe
characters: those come from the source documents of a few rows that hold a value in the column.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import bson
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pymongo.collection import Collection
from pymongo.database import Database

from shared.conversion import (
    KEY_COLUMN,
    ROW_MARKER,
    TWIN_SUFFIX,
    BatchConverter,
    TableSchema,
    id_text,
    parse_id_text,
)
from shared.conversion.names import column_name
from shared.conversion.values import (
    ARROW_TYPES,
    BINARY,
    BOOL,
    DECODE_OPTIONS,
    FLOAT64,
    INT64,
    MAX_MS,
    MIN_MS,
    STRING,
    TIMESTAMP,
    kind_of,
)
from shared.landing_zone.replayer import TableReport, find_tables, inspect_table
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef, collection_folder, collection_name
from shared.pipeline.inspect import history_note
from shared.source.collections import select_collections

SHOWN_DIFFERENCES = 10  # per table
SPILL_BYTES = 32 * 1024**2  # BSON converted and spilled at a time: bounds the source side's memory
DUCKDB_MEMORY_LIMIT = "512MB"  # the join spills to the table's temporary folder beyond this
EVIDENCE_ROWS = 8  # rows per text/binary column whose documents settle its kind and field
_ID_BATCH = 1_000  # _id values per $in lookup
_SHOWN_VALUE_CHARS = 80
# Column types the converter writes whose kind the type alone decides.
_KIND_OF_TYPE = {ARROW_TYPES[kind]: kind for kind in (INT64, FLOAT64, BOOL, TIMESTAMP)}
_SEPARATOR = "\x1f"
_LANDING = "landing"
_SOURCE = "source"

MISSING = "missing"  # in the source, not in the landing zone
EXTRA = "extra"  # in the landing zone, not in the source
VALUE = "value"  # in both, a column differs
DUPLICATE = "duplicate"  # the landing zone holds the _id more than once


@dataclass(frozen=True)
class Difference:
    kind: str
    id_text: str
    column: str | None = None
    landing: str | None = None  # the values, shown for a VALUE difference
    source: str | None = None

    def __str__(self) -> str:
        if self.kind == MISSING:
            return f"missing in the landing zone: _id {self.id_text}"
        if self.kind == EXTRA:
            return f"extra in the landing zone: _id {self.id_text}"
        if self.kind == DUPLICATE:
            return f"duplicate in the landing zone: _id {self.id_text}"
        return (
            f"value differs: _id {self.id_text}, column {self.column}: "
            f"landing zone {self.landing}, source {self.source}"
        )


@dataclass
class TableVerification:
    table: TableRef
    landing_rows: int | None = None  # None: no table folder, or it cannot be replayed
    source_rows: int | None = None  # None: no collection
    problems: list[str] = field(default_factory=list)  # the table as a whole
    counts: Counter[str] = field(default_factory=Counter)  # rows per difference kind
    differences: list[Difference] = field(default_factory=list)  # the first few, in _id order
    schema: TableSchema | None = None  # the schema rebuilt from the landing zone
    # Why the landing zone cannot tell (its early files were applied and removed): not a
    # difference, and not a pass either.
    unverifiable: str | None = None

    @property
    def equal(self) -> bool:
        return (
            self.unverifiable is None
            and not self.problems
            and not self.counts
            and self.landing_rows is not None
            and self.landing_rows == self.source_rows
        )


@dataclass
class VerifyReport:
    tables: list[TableVerification]

    @property
    def equal(self) -> bool:
        return all(table.equal for table in self.tables)


class _Unverifiable(Exception):
    """The landing zone holds something the mirror never writes; rows cannot be compared."""


def verify_mirror(
    store: LandingZoneStore, database: Database[Any], wanted: list[str] | None
) -> VerifyReport:
    """Compare every selected collection of ``database`` with its table, and flag stale tables.

    Tables of this database's schema folder that no selected collection maps to are differences,
    except those of existing collections left out of an explicit selection.
    """
    selected = [source.name for source in select_collections(database, wanted)]
    landing = {ref.name: ref for ref in find_tables(store) if ref.schema == database.name}
    # Collections are mapped forward to their folders: a hashed folder name cannot be decoded.
    existing = (
        {collection_folder(name) for name in database.list_collection_names()}
        if wanted is not None
        else set()
    )
    results: list[TableVerification] = []
    for name in selected:
        table = TableRef.for_collection(database.name, name)
        collection = database[name]
        if table.name in landing:
            results.append(verify_table(store, landing.pop(table.name), collection))
        else:
            absent = TableVerification(table)
            absent.source_rows = collection.count_documents({})
            absent.problems.append("no table folder in the landing zone")
            results.append(absent)
    for folder, ref in landing.items():
        if folder in existing:
            continue  # an existing collection left out of the selection: neither judged nor stale
        stale = TableVerification(ref)
        stale.landing_rows = inspect_table(store, ref).row_count
        name = collection_name(folder) or folder
        stale.problems.append(f"no selected collection {database.name}.{name} maps to it")
        results.append(stale)
    results.sort(key=lambda result: result.table.name)
    return VerifyReport(results)


def verify_table(
    store: LandingZoneStore, table: TableRef, collection: Collection[Any]
) -> TableVerification:
    return compare_table(inspect_table(store, table), collection)


def compare_table(report: TableReport, collection: Collection[Any]) -> TableVerification:
    """Compare a replayed table with the collection, row by row and value by value."""
    result = TableVerification(report.table)
    result.problems += [f"does not conform: {problem.message}" for problem in report.problems]
    if report.history_removed:
        # Fabric's replicator deletes applied files after their retention: what is left is the
        # tail of the history, which no comparison with the whole collection can judge.
        result.unverifiable = (
            f"{history_note(report)}; the landing zone cannot be compared with the collection. "
            "Compare the Delta tables instead: mongo-fabric-mirror verify --against delta"
        )
        result.source_rows = collection.count_documents({})
        return result
    if report.rows is None:
        result.source_rows = collection.count_documents({})
        return result
    result.landing_rows = report.rows.num_rows
    with tempfile.TemporaryDirectory(prefix="mongo-fabric-mirror-verify-") as work:
        connection = duckdb.connect(str(Path(work) / "verify.duckdb"))
        try:
            connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
            connection.execute(f"SET temp_directory = {_literal(work)}")
            connection.execute("SET preserve_insertion_order = false")
            connection.register(_LANDING, report.rows)
            try:
                schema = rebuild_schema(connection, report.rows.schema, collection)
            except _Unverifiable as error:
                result.problems.append(str(error))
                result.source_rows = collection.count_documents({})
                return result
            # A copy: the converter grows its schema with fields the landing zone never received.
            result.schema = TableSchema.from_json(schema.to_json())
            converter = BatchConverter(schema)
            result.source_rows = _spill_source(collection, converter, Path(work))
            connection.execute(
                f"CREATE VIEW {_SOURCE} AS SELECT * FROM read_parquet("  # noqa: S608
                f"{_literal(str(Path(work) / 'source-*.parquet'))}, union_by_name = true)"
            )
            _find_duplicates(connection, result)
            _join(connection, report.rows.schema, converter.schema, result)
        finally:
            connection.close()
    return result


def rebuild_schema(
    connection: duckdb.DuckDBPyConnection, landing: pa.Schema, collection: Collection[Any]
) -> TableSchema:
    """The table's schema as the snapshot recorded it, from the landing zone's columns alone,
    with a few source documents to settle text/binary kinds and names of renamed fields."""
    evidence = _evidence(connection, landing, collection)
    schema = TableSchema()
    taken = {KEY_COLUMN.casefold(), ROW_MARKER.casefold()}
    field_of: dict[str, str] = {}
    for column in landing:
        name = column.name
        if name == KEY_COLUMN:
            continue
        if name.endswith(TWIN_SUFFIX):
            main = name[: -len(TWIN_SUFFIX)]
            if main not in field_of or column.type != pa.string():
                raise _Unverifiable(f"column {name} is not a twin the mirror writes")
            schema.add_twin(field_of[main])
        else:
            found, kind, subtype = _field_of_column(name, column.type, evidence[name], taken)
            spec = schema.add_field(found, kind, subtype)
            if spec.column != name:
                raise _Unverifiable(f"column {name} is not a column name the mirror writes")
            field_of[name] = found
        taken.add(name.casefold())
    return schema


def _evidence(
    connection: duckdb.DuckDBPyConnection, landing: pa.Schema, collection: Collection[Any]
) -> dict[str, list[dict[str, Any]]]:
    """Per main column, the source documents of a few rows that hold a value in it."""
    ids: dict[str, list[str]] = {}
    for column in landing:
        if column.name != KEY_COLUMN and not column.name.endswith(TWIN_SUFFIX):
            ids[column.name] = [
                row[0]
                for row in connection.sql(
                    f"SELECT {KEY_COLUMN} FROM {_LANDING} WHERE {_ident(column.name)} IS NOT NULL "  # noqa: S608
                    f"ORDER BY {KEY_COLUMN} LIMIT {EVIDENCE_ROWS}"
                ).fetchall()
            ]
    wanted = sorted({text for texts in ids.values() for text in texts})
    documents: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), _ID_BATCH):
        values = []
        for text in wanted[start : start + _ID_BATCH]:
            try:
                values.append(parse_id_text(text))
            except ValueError:
                continue  # not a mirror's _id: the join reports the row
        for raw in collection.find_raw_batches({KEY_COLUMN: {"$in": values}}):
            for document in bson.decode_all(bytes(raw), DECODE_OPTIONS):
                decoded: dict[str, Any] = dict(document.items())
                documents[id_text(decoded[KEY_COLUMN])] = decoded
    return {
        column: [documents[text] for text in texts if text in documents]
        for column, texts in ids.items()
    }


def _field_of_column(
    column: str, arrow_type: pa.DataType, documents: list[dict[str, Any]], taken: set[str]
) -> tuple[str, str, int | None]:
    """(field, kind, binary subtype) of a main column: the most common among the documents'
    values that would land in it; without any, the column's own name and its type's kind."""
    votes: Counter[tuple[str, str, int | None]] = Counter()
    for document in documents:
        for name, value in document.items():
            if value is None or column_name(name, taken) != column:
                continue
            kind, subtype = kind_of(value)
            if ARROW_TYPES[kind] != arrow_type:
                continue
            if kind == TIMESTAMP and not MIN_MS <= int(value) <= MAX_MS:
                continue
            votes[(name, kind, subtype)] += 1
    if votes:
        return votes.most_common(1)[0][0]
    if arrow_type in _KIND_OF_TYPE:
        return column, _KIND_OF_TYPE[arrow_type], None
    if arrow_type == ARROW_TYPES[STRING]:
        return column, STRING, None
    if arrow_type == ARROW_TYPES[BINARY]:
        return column, BINARY, 0
    raise _Unverifiable(f"column {column} has type {arrow_type}, which the mirror never writes")


def _spill_source(collection: Collection[Any], converter: BatchConverter, folder: Path) -> int:
    """Convert the collection in ``_id`` order into parquet files in ``folder``; its count."""
    count = 0
    files = 0

    def spill(raw: list[bytes]) -> None:
        nonlocal count, files
        rows = converter.convert(b"".join(raw)).drop_columns([ROW_MARKER])
        pq.write_table(rows, folder / f"source-{files:08d}.parquet")
        count += rows.num_rows
        files += 1

    pending: list[bytes] = []
    size = 0
    for raw in collection.find_raw_batches({}, sort=[(KEY_COLUMN, 1)]):
        pending.append(bytes(raw))
        size += len(raw)
        if size >= SPILL_BYTES:
            spill(pending)
            pending, size = [], 0
    if pending or not files:  # at least one file, so the source has its columns
        spill(pending)
    return count


def _find_duplicates(connection: duckdb.DuckDBPyConnection, result: TableVerification) -> None:
    rows = connection.sql(
        f"SELECT {KEY_COLUMN} FROM {_LANDING} GROUP BY {KEY_COLUMN} HAVING count(*) > 1 "  # noqa: S608
        f"ORDER BY {KEY_COLUMN}"
    ).fetchall()
    if rows:
        result.counts[DUPLICATE] = len(rows)
        result.differences += [Difference(DUPLICATE, row[0]) for row in rows[:SHOWN_DIFFERENCES]]


def _join(
    connection: duckdb.DuckDBPyConnection,
    landing: pa.Schema,
    source: TableSchema,
    result: TableVerification,
) -> None:
    """Stream the rows that differ, in ``_id`` text order: count them, keep the first few.

    The source has every landing-zone column (its schema was rebuilt from them) and perhaps
    more: fields the landing zone never received.
    """
    differs = {
        name: _differs(name, name in landing.names, arrow_type)
        for name, arrow_type in source.column_types().items()
    }
    # Column names never hold control characters (the converter replaces them): one separates.
    columns = ", ".join(
        f"CASE WHEN {test} THEN {_literal(name)} END" for name, test in differs.items()
    )
    differing = f"concat_ws(chr({ord(_SEPARATOR)}), {columns})" if columns else "''"
    any_differs = " OR ".join(differs.values()) or "false"
    l_id, s_id = f"l.{KEY_COLUMN}", f"s.{KEY_COLUMN}"
    query = f"""
        SELECT coalesce({l_id}, {s_id}) AS {KEY_COLUMN},
            CASE WHEN {s_id} IS NULL THEN '{EXTRA}' WHEN {l_id} IS NULL THEN '{MISSING}'
                ELSE '{VALUE}' END AS kind,
            {differing} AS columns
        FROM {_LANDING} l FULL OUTER JOIN {_SOURCE} s ON {l_id} = {s_id}
        WHERE {l_id} IS NULL OR {s_id} IS NULL OR {any_differs}
        ORDER BY 1
    """  # noqa: S608 - names come from parquet schemas and are quoted
    first: list[Difference] = []  # values looked up once the stream is drained
    for batch in connection.sql(query).to_arrow_reader(10_000):
        kinds = pc.value_counts(batch.column(1))
        for kind, count in zip(
            kinds.field("values").to_pylist(), kinds.field("counts").to_pylist(), strict=True
        ):
            result.counts[kind] += count
        for row in batch.slice(0, SHOWN_DIFFERENCES).to_pylist():
            key, kind = row[KEY_COLUMN], row["kind"]
            names: list[str | None] = [None]
            if kind == VALUE:
                names = list(row["columns"].split(_SEPARATOR))
            first += [Difference(kind, key, name) for name in names]
    room = SHOWN_DIFFERENCES - len(result.differences)
    result.differences += [
        _with_values(connection, landing, difference) if difference.kind == VALUE else difference
        for difference in first[:room]
    ]


def _with_values(
    connection: duckdb.DuckDBPyConnection, landing: pa.Schema, difference: Difference
) -> Difference:
    key, column = difference.id_text, str(difference.column)
    in_landing = _ident(column) if column in landing.names else "NULL"  # a field never mirrored
    row = connection.execute(
        f"SELECT (SELECT {in_landing} FROM {_LANDING} WHERE {KEY_COLUMN} = $1 LIMIT 1), "  # noqa: S608
        f"(SELECT {_ident(column)} FROM {_SOURCE} WHERE {KEY_COLUMN} = $1 LIMIT 1)",
        [key],
    ).fetchone()
    landing, source = row if row is not None else (None, None)
    return replace(difference, landing=_shown(landing), source=_shown(source))


def _shown(value: Any) -> str:
    text = "NULL" if value is None else repr(value)
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[: _SHOWN_VALUE_CHARS - 1] + "…"


def _differs(name: str, in_landing: bool, arrow_type: pa.DataType) -> str:
    landing, source = f"l.{_ident(name)}", f"s.{_ident(name)}"
    if not in_landing:
        return f"({source} IS NOT NULL)"
    test = f"{landing} IS DISTINCT FROM {source}"
    if pa.types.is_floating(arrow_type):  # = holds 0.0 and -0.0 equal; exact means not
        test += f" OR signbit({landing}) IS DISTINCT FROM signbit({source})"
    return f"({test})"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def format_report(report: VerifyReport) -> str:
    lines = [format_table(table) for table in report.tables]
    unverifiable = sum(
        table.unverifiable is not None and not table.problems for table in report.tables
    )
    differing = sum(not table.equal for table in report.tables) - unverifiable
    if not report.tables:
        lines.append("verify: no tables and no collections to compare")
    elif unverifiable:
        lines.append(
            f"verify: {differing} of {len(report.tables)} tables differ, {unverifiable} cannot be "
            "verified from the landing zone (use verify --against delta)"
        )
    elif differing:
        lines.append(f"verify: {differing} of {len(report.tables)} tables differ")
    else:
        lines.append(f"verify: all {len(report.tables)} tables equal")
    return "\n".join(lines)


def format_table(result: TableVerification) -> str:
    verdict = "equal" if result.equal else "DIFFERENT"
    if result.unverifiable is not None and not result.problems:
        verdict = "NOT VERIFIABLE from the landing zone"
    lines = [
        f"{result.table}: {verdict}; rows: landing zone {_count(result.landing_rows)}, "
        f"source {_count(result.source_rows)}"
    ]
    lines += [f"  - {problem}" for problem in result.problems]
    if result.unverifiable is not None:
        lines.append(f"  - {result.unverifiable}")
    if result.counts:
        summary = ", ".join(
            f"{result.counts[kind]:,} {label}"
            for kind, label in (
                (MISSING, "missing in the landing zone"),
                (EXTRA, "extra in the landing zone"),
                (VALUE, "with different values"),
                (DUPLICATE, "duplicated in the landing zone"),
            )
            if result.counts[kind]
        )
        lines.append(f"  rows differing: {summary}")
    lines += [f"  - {difference}" for difference in result.differences]
    return "\n".join(lines)


def _count(rows: int | None) -> str:
    return "-" if rows is None else f"{rows:,}"
