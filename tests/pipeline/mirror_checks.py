"""Judging a mirrored table: the replayer's result must equal the source, row by row."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pymongo.collection import Collection

from shared.conversion import BatchConverter, TableSchema
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef, sequence_of
from shared.pipeline.schema_registry import SCHEMA_KIND
from shared.state.base import StateStore


def expected_rows(collection: Collection[Any], schema: TableSchema) -> pa.Table:
    """The source converted with the table's stored schema, so column types match exactly."""
    converter = BatchConverter(TableSchema.from_json(schema.to_json()))
    raws = [bytes(batch) for batch in collection.find_raw_batches({}, sort=[("_id", 1)])]
    return converter.convert(b"".join(raws), marker=4).drop_columns(["__rowMarker__"])


def assert_mirrors(
    store: LandingZoneStore, state: StateStore, table: TableRef, collection: Collection[Any]
) -> pa.Table:
    """The table conforms, and its replay equals the source; returns the replayed rows."""
    report = inspect_table(store, table)
    assert report.conforms, report.problems
    assert report.rows is not None
    record = state.get(SCHEMA_KIND, table.folder)
    schema = TableSchema() if record is None else TableSchema.from_json(record.value["schema"])
    expected = expected_rows(collection, schema)
    actual = report.rows.sort_by("_id")
    expected = expected.sort_by("_id")
    assert actual.num_rows == expected.num_rows
    assert sorted(actual.column_names) == sorted(expected.column_names)
    for name in expected.column_names:
        assert actual.column(name).equals(expected.column(name)), f"column {name} differs"
    return actual


def rows_in_files(store: LandingZoneStore, table: TableRef) -> int:
    """Rows across every published file: equal to the source count when nothing was duplicated."""
    total = 0
    for stored in store.list_files(table.folder):
        if sequence_of(stored.path.rsplit("/", 1)[-1]) is not None:
            total += pq.read_metadata(io.BytesIO(store.read(stored.path))).num_rows
    return total
