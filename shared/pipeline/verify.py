"""The ``verify`` step: does each mirrored table equal its collection now, value by value?

Two kinds of mirrored table are judged the same way:

- the landing zone's folder, replayed as Fabric would (:func:`inspect_table`), for local use;
- the Delta table users query, at ``<schema>/<table>`` under a ``Tables`` location
  (:func:`verify_delta`), which still holds a table whose landing-zone files Fabric has deleted.

The expected side is never converted by the converter being checked (``shared.conversion``): a
conversion bug would otherwise convert both sides alike and stay invisible. Each source document
is decoded by PyMongo and each stored cell is read back into a BSON value (timestamps to
milliseconds, decimal text to Decimal128, Extended JSON through ``bson.json_util``), and the two
are compared by value, as ``/work/shared/spec/type-mapping.md`` documents the mapping:

- int32 and int64 are one integer class (the mapping stores both as int64, and relaxed Extended
  JSON writes both as a plain number), but never equal to a double or a boolean;
- doubles compare exactly: NaN equals NaN, -0.0 differs from 0.0, no tolerance;
- Decimal128 compares by its exact representation (``1.10`` differs from ``1.1``); all NaNs are
  alike (the text form has no payload);
- dates compare as milliseconds over their whole range (decoded as ``DatetimeMS``, never as
  ``datetime``, whose years stop at 9999); one outside years 1 to 9999, which the timestamp
  column does not take, belongs in the twin column;
- embedded documents compare field by field in order, arrays item by item, both recursively
  with these same rules;
- a field whose value does not fit its column's type belongs in the column's twin
  (``<column>__json``), as its Extended JSON; null and a missing field are alike at the top level
  (the mapping stores both as NULL) but not inside a document;
- in a table past its column budget (it has the column ``__overflow__``), every non-null value
  that has no column or twin to go to belongs in the row's overflow object, under its field
  name, compared with these same rules (the object's key order is not compared: top-level field
  order is not kept by columns either).

The rows are matched on the ``_id`` text (the documented key form); the row's ``_id`` text is
then read back with :func:`parse_id_text` and compared with the document's ``_id`` by value.

Memory stays bounded for big collections: the collection is read in raw BSON batches and spilled
with its ``_id`` texts as parquet into a temporary folder; DuckDB joins both sides with a FULL
OUTER JOIN under a memory limit, spilling to that folder; the joined rows stream back in batches
of :data:`_BATCH_ROWS` and only the first few differences are kept.

Which column holds which field is rebuilt from the table's own columns (names, order, types) and
a few source documents (:func:`rebuild_schema`), so verify needs no state store.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import math
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from bson import Binary, Decimal128, Int64, ObjectId, json_util
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.json_util import RELAXED_JSON_OPTIONS, JSONOptions
from pymongo.collection import Collection
from pymongo.database import Database

from shared.conversion import (
    KEY_COLUMN,
    ROW_MARKER,
    TWIN_SUFFIX,
    FieldSpec,
    TableSchema,
    id_text,
    parse_id_text,
)
from shared.conversion.names import OVERFLOW_COLUMN, column_name
from shared.conversion.values import (
    ARROW_TYPES,
    BINARY,
    BOOL,
    DECIMAL,
    DECODE_OPTIONS,
    FLOAT64,
    INT64,
    JSON,
    MAX_MS,
    MIN_MS,
    OBJECTID,
    STRING,
    TIMESTAMP,
    UUID,
    kind_of,
)
from shared.landing_zone.replayer import TableReport, find_tables, inspect_table
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef, collection_folder, collection_name
from shared.pipeline.inspect import history_note
from shared.source.collections import select_collections

if TYPE_CHECKING:
    import pyarrow.dataset as pa_dataset

    from shared.delta_tables import DeltaTables

SHOWN_DIFFERENCES = 10  # per table
SPILL_BYTES = 32 * 1024**2  # BSON spilled at a time: bounds the source side's memory
DUCKDB_MEMORY_LIMIT = "512MB"  # the join spills to the table's temporary folder beyond this
EVIDENCE_ROWS = 8  # rows per text/binary column whose documents settle its kind and field
_ID_BATCH = 1_000  # _id values per $in lookup
_BATCH_ROWS = 10_000  # joined rows compared at a time
_SHOWN_VALUE_CHARS = 80
# Column types the converter writes whose kind the type alone decides.
_KIND_OF_TYPE = {ARROW_TYPES[kind]: kind for kind in (INT64, FLOAT64, BOOL, TIMESTAMP)}
_LANDING = "landing"
_SOURCE = "source"
_SOURCE_KEY = "k"
_SOURCE_DOCUMENT = "doc"

MISSING = "missing"  # in the source, not in the mirrored table
EXTRA = "extra"  # in the mirrored table, not in the source
VALUE = "value"  # in both, a column differs
DUPLICATE = "duplicate"  # the mirrored table holds the _id more than once

LANDING_ZONE = "landing zone"
DELTA_TABLE = "Delta table"

# The expected side: documents as PyMongo decodes them, dates as milliseconds (their full range),
# binary subtype 4 left as Binary (UuidRepresentation.UNSPECIFIED, PyMongo 4's default), plain
# dicts, whose insertion order is the document's field order.
SOURCE_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)
# Extended JSON read back the same way (relaxed, as the mapping writes it).
JSON_OPTIONS: JSONOptions = RELAXED_JSON_OPTIONS.with_options(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)
# The dates a timestamp column holds, in milliseconds, as the mapping documents them: years 1 to
# 9999, the range of Spark's TimestampType and T-SQL's datetime2 (README, "Dates: years 1 to
# 9999").
_FIRST_MS = (dt.datetime.min - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
_LAST_MS = (dt.datetime.max - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
_INTEGERS = (int, Int64)
_NUMBERS = (int, Int64, float, Decimal128)


@dataclass(frozen=True)
class Difference:
    kind: str
    id_text: str
    column: str | None = None
    landing: str | None = None  # the values, shown for a VALUE difference
    source: str | None = None
    target: str = field(default=LANDING_ZONE, compare=False)  # the mirrored table's kind
    # The source field behind ``column`` when its name differs (an odd field name): shown only.
    # (Declared last: from here on, ``field`` in this class body is this attribute.)
    field: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.kind == MISSING:
            return f"missing in the {self.target}: _id {self.id_text}"
        if self.kind == EXTRA:
            return f"extra in the {self.target}: _id {self.id_text}"
        if self.kind == DUPLICATE:
            return f"duplicate in the {self.target}: _id {self.id_text}"
        named = f"column {self.column}"
        if self.field is not None and self.field != self.column:
            named += f" (field {self.field!r})"
        return (
            f"value differs: _id {self.id_text}, {named}: "
            f"{self.target} {self.landing}, source {self.source}"
        )


@dataclass
class TableVerification:
    table: TableRef
    landing_rows: int | None = None  # None: no mirrored table, or it cannot be read
    source_rows: int | None = None  # None: no collection
    problems: list[str] = field(default_factory=list)  # the table as a whole
    counts: Counter[str] = field(default_factory=Counter)  # rows per difference kind
    differences: list[Difference] = field(default_factory=list)  # the first few, in _id order
    schema: TableSchema | None = None  # the schema rebuilt from the mirrored table's columns
    target: str = LANDING_ZONE  # what was compared with the source: LANDING_ZONE or DELTA_TABLE
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
    """The mirrored table holds something the mirror never writes; rows cannot be compared."""


# --- the landing zone -----------------------------------------------------------------------


def verify_mirror(
    store: LandingZoneStore, database: Database[Any], wanted: list[str] | None
) -> VerifyReport:
    """Compare every selected collection of ``database`` with its table, and flag stale tables.

    Tables of this database's schema folder that no selected collection maps to are differences,
    except those of existing collections left out of an explicit selection.
    """
    landing = {ref.name: ref for ref in find_tables(store) if ref.schema == database.name}
    return _verify_all(
        database,
        wanted,
        landing,
        lambda ref, collection: verify_table(store, ref, collection),
        lambda ref: inspect_table(store, ref).row_count,
        LANDING_ZONE,
        "no table folder in the landing zone",
    )


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
    _compare(report.rows, collection, result)
    return result


# --- the Delta tables -----------------------------------------------------------------------


def verify_delta(
    tables: DeltaTables, database: Database[Any], wanted: list[str] | None
) -> VerifyReport:
    """:func:`verify_mirror` against the Delta tables at ``<database>/<table>`` in ``tables``."""
    present = {name: TableRef(database.name, name) for name in tables.list_tables(database.name)}

    def rows(ref: TableRef) -> int:
        dataset = tables.open(ref)
        return 0 if dataset is None else dataset.count_rows()

    return _verify_all(
        database,
        wanted,
        present,
        lambda ref, collection: compare_delta_table(tables, ref, collection),
        rows,
        DELTA_TABLE,
        f"no Delta table at {database.name}/<table> in {tables.description}",
        # Fabric creates a mirrored table from the table's first data file (its _metadata.json
        # names the keys, not the columns), and the snapshot of an empty collection publishes
        # none: until a document arrives there is no Delta table, and nothing to hold.
        empty_needs_table=False,
    )


def compare_delta_table(
    tables: DeltaTables, table: TableRef, collection: Collection[Any]
) -> TableVerification:
    """Compare one Delta table with the collection, row by row and value by value."""
    result = TableVerification(table, target=DELTA_TABLE)
    dataset = tables.open(table)
    if dataset is None:
        result.source_rows = collection.count_documents({})
        result.problems.append(f"no Delta table at {tables.path_of(table)}")
        return result
    if ROW_MARKER in dataset.schema.names:
        # The replicator consumes the markers: a Delta table that keeps them was not applied.
        result.problems.append(f"the Delta table has a {ROW_MARKER} column")
    result.landing_rows = dataset.count_rows()
    _compare(dataset, collection, result)
    return result


# --- both -----------------------------------------------------------------------------------


def _verify_all(
    database: Database[Any],
    wanted: list[str] | None,
    present: dict[str, TableRef],
    verify_one: Callable[[TableRef, Collection[Any]], TableVerification],
    count_rows: Callable[[TableRef], int],
    target: str,
    absent_problem: str,
    *,
    empty_needs_table: bool = True,
) -> VerifyReport:
    selected = [source.name for source in select_collections(database, wanted)]
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
        if table.name in present:
            results.append(verify_one(present.pop(table.name), collection))
        else:
            absent = TableVerification(table, target=target)
            absent.source_rows = collection.count_documents({})
            if absent.source_rows == 0 and not empty_needs_table:
                absent.landing_rows = 0
            else:
                absent.problems.append(absent_problem)
            results.append(absent)
    for folder, ref in present.items():
        if folder in existing:
            continue  # an existing collection left out of the selection: neither judged nor stale
        stale = TableVerification(ref, target=target)
        stale.landing_rows = count_rows(ref)
        name = collection_name(folder) or folder
        stale.problems.append(f"no selected collection {database.name}.{name} maps to it")
        results.append(stale)
    results.sort(key=lambda result: result.table.name)
    return VerifyReport(results)


def _compare(
    rows: pa.Table | pa_dataset.Dataset, collection: Collection[Any], result: TableVerification
) -> None:
    """Join ``rows`` (the mirrored table) with the collection and judge every pair."""
    landing = _plain_schema(rows.schema)
    with tempfile.TemporaryDirectory(prefix="mongo-fabric-mirror-verify-") as work:
        connection = duckdb.connect(str(Path(work) / "verify.duckdb"))
        try:
            connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
            connection.execute(f"SET temp_directory = {_literal(work)}")
            connection.execute("SET preserve_insertion_order = false")
            connection.register(_LANDING, rows)
            try:
                schema = rebuild_schema(connection, landing, collection)
            except _Unverifiable as error:
                result.problems.append(str(error))
                result.source_rows = collection.count_documents({})
                return
            result.schema = schema
            result.source_rows = _spill_source(collection, Path(work))
            connection.execute(
                f"CREATE VIEW {_SOURCE} AS SELECT * FROM read_parquet("  # noqa: S608
                f"{_literal(str(Path(work) / 'source-*.parquet'))})"
            )
            _find_duplicates(connection, result)
            _join(connection, landing, schema, result)
        finally:
            connection.close()


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    """The table's columns with the types the mirror writes: a Delta reader may hand back the
    large or view variants of string and binary, which hold the same values."""
    plain = {
        pa.large_string(): pa.string(),
        pa.string_view(): pa.string(),
        pa.large_binary(): pa.binary(),
        pa.binary_view(): pa.binary(),
    }
    return pa.schema(
        [
            pa.field(column.name, plain.get(column.type, column.type))
            for column in schema
            if column.name != ROW_MARKER
        ]
    )


def rebuild_schema(
    connection: duckdb.DuckDBPyConnection, landing: pa.Schema, collection: Collection[Any]
) -> TableSchema:
    """The table's schema as the snapshot recorded it, from the table's columns alone, with a
    few source documents to settle text/binary kinds and names of renamed fields."""
    if KEY_COLUMN not in landing.names:
        raise _Unverifiable(f"the table has no {KEY_COLUMN} column")
    evidence = _evidence(connection, landing, collection)
    schema = TableSchema()
    taken = {KEY_COLUMN.casefold(), ROW_MARKER.casefold()}
    field_of: dict[str, str] = {}
    for column in landing:
        name = column.name
        if name == KEY_COLUMN:
            continue
        if name == OVERFLOW_COLUMN:
            if column.type != pa.string():
                raise _Unverifiable(f"column {name} is not the overflow column the mirror writes")
            schema.open_overflow()
        elif name.endswith(TWIN_SUFFIX):
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
        if column.name not in (KEY_COLUMN, OVERFLOW_COLUMN) and not column.name.endswith(
            TWIN_SUFFIX
        ):
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


# --- the source side ------------------------------------------------------------------------


def _spill_source(collection: Collection[Any], folder: Path) -> int:
    """Spill the collection as (``_id`` text, raw BSON document) parquet files; its count."""
    count = 0
    files = 0
    schema = pa.schema([(_SOURCE_KEY, pa.string()), (_SOURCE_DOCUMENT, pa.binary())])

    def spill(raw: list[bytes]) -> None:
        nonlocal count, files
        documents = _split(b"".join(raw))
        keys = [id_text(_id_of(document)) for document in documents]
        table = pa.table([pa.array(keys, pa.string()), pa.array(documents, pa.binary())], schema)
        pq.write_table(table, folder / f"source-{files:08d}.parquet")
        count += table.num_rows
        files += 1

    pending: list[bytes] = []
    size = 0
    for raw in collection.find_raw_batches({}):
        pending.append(bytes(raw))
        size += len(raw)
        if size >= SPILL_BYTES:
            spill(pending)
            pending, size = [], 0
    if pending or not files:  # at least one file, so the view has its columns
        spill(pending)
    return count


# BSON types of the usual _id values (bsonspec.org): how many bytes the value takes.
_FIXED_ID_SIZES = {0x07: 12, 0x10: 4, 0x12: 8, 0x01: 8}  # ObjectId, int32, int64, double
_STRING = 0x02
_ID_ELEMENT = b"_id\x00"


def _id_of(document: bytes) -> Any:
    """The document's ``_id``, decoding only that element when it comes first (the server
    always stores ``_id`` first) and has a usual type; else the whole document."""
    kind = document[4]
    if document[5:9] == _ID_ELEMENT:
        size = _FIXED_ID_SIZES.get(kind)
        if kind == _STRING:
            size = 4 + int.from_bytes(document[9:13], "little")
        if size is not None and 9 + size < len(document):
            element = document[4 : 9 + size]
            alone = (len(element) + 5).to_bytes(4, "little") + element + b"\x00"
            return bson.decode(alone, SOURCE_CODEC)[KEY_COLUMN]
    return bson.decode(document, SOURCE_CODEC)[KEY_COLUMN]


def _split(buffer: bytes) -> list[bytes]:
    """Each BSON document of a concatenation (sizes checked by the decoder that reads them)."""
    documents = []
    position = 0
    while position < len(buffer):
        size = int.from_bytes(buffer[position : position + 4], "little")
        if size < 5:
            raise ValueError(f"corrupt BSON document at byte {position}")
        documents.append(buffer[position : position + size])
        position += size
    return documents


def _find_duplicates(connection: duckdb.DuckDBPyConnection, result: TableVerification) -> None:
    rows = connection.sql(
        f"SELECT {KEY_COLUMN} FROM {_LANDING} GROUP BY {KEY_COLUMN} HAVING count(*) > 1 "  # noqa: S608
        f"ORDER BY {KEY_COLUMN}"
    ).fetchall()
    if rows:
        result.counts[DUPLICATE] = len(rows)
        result.differences += [
            Difference(DUPLICATE, row[0], target=result.target) for row in rows[:SHOWN_DIFFERENCES]
        ]


# --- the join and the comparison ------------------------------------------------------------


def _join(
    connection: duckdb.DuckDBPyConnection,
    landing: pa.Schema,
    schema: TableSchema,
    result: TableVerification,
) -> None:
    """Stream the joined rows: count the differing ones, keep the first few in ``_id`` order.

    Columns are selected by position (source key, source document, then the table's columns in
    order), so no column name of the table can clash with the source's.
    """
    columns = ", ".join(f"l.{_ident(name)}" for name in landing.names)
    query = (
        f"SELECT s.{_SOURCE_KEY}, s.{_SOURCE_DOCUMENT}, {columns} "  # noqa: S608
        f"FROM {_LANDING} l FULL OUTER JOIN {_SOURCE} s ON l.{KEY_COLUMN} = s.{_SOURCE_KEY}"
    )
    judge = _Judge(landing, schema, result.target)
    # The first differences by (_id text, order found): trimmed now and then, so memory stays
    # bounded however many rows differ. Python orders str by code point, as DuckDB orders UTF-8.
    first: list[tuple[str, int, Difference]] = []
    found = itertools.count()
    for batch in connection.sql(query).to_arrow_reader(_BATCH_ROWS):
        for kind, differences in judge.batch(batch):
            result.counts[kind] += 1
            first += [(d.id_text, next(found), d) for d in differences]
        if len(first) > 4 * SHOWN_DIFFERENCES:
            first = heapq.nsmallest(SHOWN_DIFFERENCES, first)
    room = SHOWN_DIFFERENCES - len(result.differences)
    result.differences += [difference for _, _, difference in sorted(first)[:room]]


@dataclass(frozen=True)
class _Column:
    """One field of the schema and where its values are in a joined batch."""

    spec: FieldSpec
    main: int | None  # batch column index of the main column (None: not in the table)
    twin: int | None  # of its twin


class _Judge:
    """Compares joined batches: which rows differ, and in which columns."""

    def __init__(self, landing: pa.Schema, schema: TableSchema, target: str) -> None:
        self._target = target
        position = {name: 2 + index for index, name in enumerate(landing.names)}
        self._key = position[KEY_COLUMN]
        self._columns = [
            _Column(spec, position.get(spec.column), position.get(spec.twin))
            for spec in sorted(
                schema.fields.values(), key=lambda spec: schema.order.index(spec.column)
            )
        ]
        self._known = {spec.field for spec in schema.fields.values()} | {KEY_COLUMN}
        # Past its column budget: the overflow column's position (None: the table has none).
        self._overflow = position.get(OVERFLOW_COLUMN) if schema.overflow else None
        self._taken = {name.casefold() for name in landing.names} | {ROW_MARKER.casefold()}
        self._would_be: dict[str, str] = {}  # column names of fields the table never received

    def batch(self, batch: pa.RecordBatch) -> Iterator[tuple[str, list[Difference]]]:
        """(kind, differences to show) of every differing row of the batch."""
        keys = batch.column(0).to_pylist()
        landing_keys = batch.column(self._key).to_pylist()
        pairs = [
            i
            for i, (s, k) in enumerate(zip(keys, landing_keys, strict=True))
            if s is not None and k is not None
        ]
        for s, k in zip(keys, landing_keys, strict=True):
            if s is None:
                yield EXTRA, [Difference(EXTRA, k, target=self._target)]
            elif k is None:
                yield MISSING, [Difference(MISSING, s, target=self._target)]
        if not pairs:
            return
        matched = batch.take(pa.array(pairs, pa.int64()))
        raw = matched.column(1).to_pylist()
        documents: list[dict[str, Any]] = bson.decode_all(b"".join(raw), SOURCE_CODEC)
        found: dict[int, list[Difference]] = {}
        ids = matched.column(self._key).to_pylist()

        def differs(row: int, column: str, stored: Any, source: Any, name: str | None) -> None:
            found.setdefault(row, []).append(
                Difference(
                    VALUE,
                    ids[row],
                    column,
                    _shown(stored),
                    _shown(source),
                    field=name,
                    target=self._target,
                )
            )

        for row, (text, document) in enumerate(zip(ids, documents, strict=True)):
            stored_id = _parsed_id(text)
            if not _same(stored_id, document.get(KEY_COLUMN), numbers_by_value=True):
                differs(row, KEY_COLUMN, text, document.get(KEY_COLUMN), None)
        # Per row, what its overflow object should hold: {field: value}.
        overflow: list[dict[str, Any]] | None = (
            [{} for _ in documents] if self._overflow is not None else None
        )
        for column in self._columns:
            self._compare_column(matched, column, documents, differs, overflow)
        for row, document in enumerate(documents):
            if self._known.issuperset(document):
                continue
            for name, value in document.items():
                if value is not None and name not in self._known:
                    if overflow is not None:
                        overflow[row][name] = value
                    else:
                        differs(row, self._column_for(name), None, value, name)
        if overflow is not None:
            self._compare_overflow(matched, overflow, differs)
        for row in sorted(found):
            yield VALUE, found[row]

    def _column_for(self, name: str) -> str:
        """The column a field the table never received would have (named as the mirror names
        columns), so the difference reads like one about a column that is there."""
        if name not in self._would_be:
            self._would_be[name] = column_name(name, self._taken)
        return self._would_be[name]

    def _compare_overflow(
        self,
        batch: pa.RecordBatch,
        expected: list[dict[str, Any]],
        differs: Callable[[int, str, Any, Any, str | None], None],
    ) -> None:
        """Each row's overflow object against the fields that belong in it, field by field."""
        cells = _cells(batch, self._overflow)
        assert cells is not None
        for row, (cell, wanted) in enumerate(zip(cells, expected, strict=True)):
            if cell is None:
                for name, value in wanted.items():
                    differs(row, OVERFLOW_COLUMN, None, value, name)
                continue
            stored = _loaded(cell)
            if type(stored) is not dict or not stored:  # the mirror writes NULL, never {}
                differs(row, OVERFLOW_COLUMN, _Unreadable(cell), wanted or None, None)
                continue
            for name in dict.fromkeys([*stored, *wanted]):
                if name not in wanted or name not in stored:
                    differs(row, OVERFLOW_COLUMN, stored.get(name), wanted.get(name), name)
                elif not _same_value(stored[name], wanted[name]):
                    differs(row, OVERFLOW_COLUMN, stored[name], wanted[name], name)

    def _compare_column(
        self,
        batch: pa.RecordBatch,
        column: _Column,
        documents: list[dict[str, Any]],
        differs: Callable[[int, str, Any, Any, str | None], None],
        overflow: list[dict[str, Any]] | None = None,
    ) -> None:
        """Main column and twin against the field's values; with ``overflow`` (a table past its
        column budget), a value that fits neither the column nor a twin is noted there."""
        spec = column.spec
        name = spec.field
        values = [document.get(name) for document in documents]
        if _column_equal(batch, column, values):
            return
        fits = _FITS[spec.kind]
        same = _SAME_MAIN[spec.kind]
        named = name if spec.column != name else None  # a field the column's name does not say
        mains = _cells(batch, column.main)
        twins = _cells(batch, column.twin)
        subtype = spec.binary_subtype
        for row, value in enumerate(values):
            main = mains[row] if mains is not None else None
            twin = twins[row] if twins is not None else None
            if value is None:
                in_main = in_twin = None
            elif fits(value, subtype):
                in_main, in_twin = value, None
            elif column.twin is None and overflow is not None:
                in_main = in_twin = None
                overflow[row][name] = value  # no twin to go to: the overflow object's
            else:
                in_main, in_twin = None, value
            if main is None:
                if in_main is not None:
                    differs(row, spec.column, None, in_main, named)
            elif in_main is None or not same(main, in_main):
                differs(row, spec.column, _stored(spec.kind, main), in_main, named)
            if twin is None:
                if in_twin is not None:
                    differs(row, spec.twin, None, in_twin, named)
            elif in_twin is None or not _same_value(_loaded(twin), in_twin):
                differs(row, spec.twin, twin, in_twin, named)


def _column_equal(batch: pa.RecordBatch, column: _Column, values: list[Any]) -> bool:
    """Whether the column holds exactly ``values`` and its twin nothing, judged in Arrow: the
    fast path for the usual column, whose values all have its type. False means "look row by
    row", not "differs"."""
    spec = column.spec
    expected = _EXPECTED.get((spec.kind, spec.binary_subtype))
    if expected is None:
        return False
    if column.twin is not None and batch.column(column.twin).null_count != batch.num_rows:
        return False
    accepted, build = expected
    if not set(map(type, values)) <= accepted:
        return False
    try:
        wanted = build(values)
    except (pa.ArrowException, OverflowError, ValueError):
        return False  # a date that a timestamp[us] column cannot hold: its twin's
    if column.main is None:
        return wanted.null_count == len(wanted)
    stored = batch.column(column.main)
    if spec.kind == FLOAT64:
        # Bit for bit: -0.0 is not 0.0 (NaNs of other payloads take the row-by-row path).
        return bool(stored.view(pa.int64()).equals(wanted.view(pa.int64())))
    if spec.kind == TIMESTAMP:
        stored = stored.cast(pa.int64())
    elif stored.type != wanted.type:
        stored = stored.cast(wanted.type)  # a large_string column holds the same strings
    return bool(stored.equals(wanted))


_NONE = type(None)
# Per (kind, binary subtype): the source types a column's values may all have for the fast path,
# and the Arrow array of the values as the mapping stores them (built by pyarrow from PyMongo's
# values, not by the converter).
_EXPECTED: dict[tuple[str, int | None], tuple[frozenset[type], Callable[[list[Any]], pa.Array]]] = {
    (INT64, None): (frozenset({int, Int64, _NONE}), lambda v: pa.array(v, pa.int64())),
    (FLOAT64, None): (frozenset({float, _NONE}), lambda v: pa.array(v, pa.float64())),
    (BOOL, None): (frozenset({bool, _NONE}), lambda v: pa.array(v, pa.bool_())),
    (STRING, None): (frozenset({str, _NONE}), lambda v: pa.array(v, pa.string())),
    (TIMESTAMP, None): (
        frozenset({DatetimeMS, _NONE}),
        lambda v: pa.array([None if x is None else int(x) * 1000 for x in v], pa.int64()),
    ),
    (OBJECTID, None): (
        frozenset({ObjectId, _NONE}),
        lambda v: pa.array([None if x is None else str(x) for x in v], pa.string()),
    ),
    (BINARY, 0): (frozenset({bytes, _NONE}), lambda v: pa.array(v, pa.binary())),
}


def _cells(batch: pa.RecordBatch, index: int | None) -> list[Any] | None:
    if index is None:
        return None
    cells = batch.column(index)
    if pa.types.is_timestamp(cells.type):
        # As integer microseconds: Python's datetime stops at year 9999, the column does not.
        cells = cells.cast(pa.int64())
    return cells.to_pylist()


def _parsed_id(text: str) -> Any:
    try:
        return parse_id_text(text)
    except (ValueError, TypeError, bson.errors.BSONError):
        return _Unreadable(text)


# What ``json_util.loads(text, json_options=JSON_OPTIONS)`` does (its object hook on plain
# dicts), with the decoder built once rather than per call: a third of the cost per value.
_JSON_DECODER = json.JSONDecoder(object_hook=lambda obj: json_util.object_hook(obj, JSON_OPTIONS))


def _loaded(text: str) -> Any:
    """A cell's Extended JSON read back into a value, or a marker that it cannot be read."""
    try:
        return _JSON_DECODER.decode(text)
    except (ValueError, TypeError, KeyError, bson.errors.BSONError):
        return _Unreadable(text)


class _Unreadable:
    """Stored text that is not what the mirror writes: equal to no value."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


# Which source values a column of each kind holds (the rest go to its twin), per the mapping.
def _fits_timestamp(value: Any, subtype: int | None) -> bool:
    return type(value) is DatetimeMS and _FIRST_MS <= int(value) <= _LAST_MS


def _is_uuid(value: Any) -> bool:
    return type(value) is Binary and value.subtype == 4 and len(value) == 16


def _fits_binary(value: Any, subtype: int | None) -> bool:
    if subtype == 0:
        return type(value) is bytes  # PyMongo 4 decodes subtype 0 as bytes
    return type(value) is Binary and value.subtype == subtype and not _is_uuid(value)


_NOT_JSON = (int, Int64, float, bool, str, DatetimeMS, Decimal128, ObjectId, bytes, Binary)

_FITS: dict[str, Callable[[Any, int | None], bool]] = {
    INT64: lambda value, _: type(value) in _INTEGERS,
    FLOAT64: lambda value, _: type(value) is float,
    BOOL: lambda value, _: type(value) is bool,
    STRING: lambda value, _: type(value) is str,
    TIMESTAMP: _fits_timestamp,
    DECIMAL: lambda value, _: type(value) is Decimal128,
    OBJECTID: lambda value, _: type(value) is ObjectId,
    UUID: lambda value, _: _is_uuid(value),
    BINARY: _fits_binary,
    # Documents, arrays and the rest (regex, code, timestamp, min/max key, DBRef...).
    JSON: lambda value, _: type(value) not in _NOT_JSON,
}


def _same_decimal_text(stored: str, value: Decimal128) -> bool:
    """Whether decimal text is exactly the Decimal128: same sign, digits and exponent."""
    high = int.from_bytes(value.bid[8:], "little")
    if (high >> 61) & 3 != 3 and stored.strip() == stored and "_" not in stored:
        # The usual form (IEEE 754-2008 BID, not NaN, infinity or a 114-bit coefficient):
        # sign, 14-bit biased exponent, then the coefficient's high bits and the low 64 bits.
        try:
            sign, digits, exponent = Decimal(stored).as_tuple()
        except ArithmeticError:
            return False
        coefficient = ((high & (2**49 - 1)) << 64) | int.from_bytes(value.bid[:8], "little")
        return (
            sign == high >> 63
            and exponent == ((high >> 49) & 0x3FFF) - 6176
            and digits == tuple(map(int, str(coefficient)))
        )
    try:
        read = Decimal128(stored)
    except (ValueError, TypeError, ArithmeticError):
        return False
    return _same_decimal(read, value)


def _same_decimal(a: Decimal128, b: Decimal128) -> bool:
    if a.bid == b.bid:
        return True  # the exact representation: 1.10 is not 1.1, -0 is not 0
    return a.to_decimal().is_nan() and b.to_decimal().is_nan()  # text keeps no NaN payload


def _same_uuid_text(stored: str, value: Binary) -> bool:
    # The documented form: the canonical UUID text, as Python's uuid module writes it.
    return stored == str(uuid.UUID(bytes=bytes(value)))


# Whether a cell of a main column holds the (fitting) source value.
_SAME_MAIN: dict[str, Callable[[Any, Any], bool]] = {
    INT64: lambda stored, value: stored == int(value),
    FLOAT64: lambda stored, value: _same_float(stored, value),
    BOOL: lambda stored, value: stored is value,
    STRING: lambda stored, value: stored == value,
    TIMESTAMP: lambda stored, value: stored == int(value) * 1000,
    DECIMAL: _same_decimal_text,
    OBJECTID: lambda stored, value: stored == str(value),  # 24 lowercase hex digits
    UUID: _same_uuid_text,
    BINARY: lambda stored, value: stored == bytes(value),
    JSON: lambda stored, value: _same_value(_loaded(stored), value),
}


class _Shown:
    """A value shown as given text (not its repr)."""

    def __init__(self, text: str) -> None:
        self.text = text


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _date_text(microseconds: int) -> _Shown:
    """A date as ISO text in UTC, to the microsecond; outside datetime's years, the number."""
    try:
        moment = _EPOCH + dt.timedelta(microseconds=microseconds)
    except OverflowError:
        return _Shown(f"{microseconds} µs since 1970")
    return _Shown(moment.replace(tzinfo=None).isoformat() + "Z")


def _stored(kind: str, cell: Any) -> Any:
    """A main column's cell as shown: timestamps (integer microseconds here) as dates."""
    return _date_text(cell) if kind == TIMESTAMP else cell


def _same_float(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _same_value(a: Any, b: Any) -> bool:
    """:func:`_same`, first tried through ``repr``, which Python writes in C for the usual
    values. Equal reprs mean the same value under the mapping's rules: a repr names what
    ``==`` blurs (``1``, ``1.0`` and ``True``; ``0.0`` and ``-0.0``; a document's field order;
    ``Decimal128('1.10')`` and ``Decimal128('1.1')``; a binary's subtype), and PyMongo's types
    all name their type and fields in it. Unequal reprs are looked at closely: ``nan`` is
    ``nan`` either way, but a relaxed-JSON int64 comes back as ``int``."""
    return repr(a) == repr(b) or _same(a, b)


def _same(a: Any, b: Any, *, numbers_by_value: bool = False) -> bool:
    """Whether two BSON values are the same value, recursively, under the mapping's rules.

    With ``numbers_by_value`` (``_id`` keys), numbers of any type are the same when MongoDB
    would call them equal: ``5``, ``Int64(5)``, ``5.0`` and ``Decimal128("5.00")`` are one key.
    """
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is float:
            return _same_float(a, b)
        if ta is dict:
            if list(a) != list(b):
                return False
            for key, item in a.items():
                if not _same(item, b[key], numbers_by_value=numbers_by_value):
                    return False
            return True
        if ta is list:
            if len(a) != len(b):
                return False
            for x, y in zip(a, b, strict=True):
                if not _same(x, y, numbers_by_value=numbers_by_value):
                    return False
            return True
        if ta is Decimal128:
            return _same_decimal(a, b)
        # Strings, booleans, integers, dates, ObjectId, binary, regex, code, timestamps,
        # min/max keys, DBRef, None: the same type and an equal value.
        return bool(a == b)
    if numbers_by_value and ta in _NUMBERS and tb in _NUMBERS:
        return _number(a) == _number(b)
    return ta in _INTEGERS and tb in _INTEGERS and int(a) == int(b)


def _number(value: Any) -> Decimal | str:
    if type(value) is Decimal128:
        number = value.to_decimal()
    else:
        number = Decimal(value)  # exact for a double
    # Decimal compares exact values whatever their exponent (never rounding, unlike normalize).
    return "NaN" if number.is_nan() else number


def _shown(value: Any) -> str:
    if value is None:
        text = "NULL"
    elif type(value) is DatetimeMS:
        text = _date_text(int(value) * 1000).text
    elif isinstance(value, _Shown):
        text = value.text
    elif isinstance(value, _Unreadable):
        text = repr(value.text)
    else:
        text = repr(value)
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[: _SHOWN_VALUE_CHARS - 1] + "…"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- the report -----------------------------------------------------------------------------


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
    target = result.target
    if result.unverifiable is not None and not result.problems:
        verdict = "NOT VERIFIABLE from the landing zone"
    lines = [
        f"{result.table.label}: {verdict}; rows: {target} {_count(result.landing_rows)}, "
        f"source {_count(result.source_rows)}"
    ]
    lines += [f"  - {problem}" for problem in result.problems]
    if result.unverifiable is not None:
        lines.append(f"  - {result.unverifiable}")
    if result.counts:
        summary = ", ".join(
            f"{result.counts[kind]:,} {label}"
            for kind, label in (
                (MISSING, f"missing in the {target}"),
                (EXTRA, f"extra in the {target}"),
                (VALUE, "with different values"),
                (DUPLICATE, f"duplicated in the {target}"),
            )
            if result.counts[kind]
        )
        lines.append(f"  rows differing: {summary}")
    lines += [f"  - {difference}" for difference in result.differences]
    return "\n".join(lines)


def _count(rows: int | None) -> str:
    return "-" if rows is None else f"{rows:,}"
