"""The replicator against hand-written landing zones: row markers, schema, moves, retention."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shared.delta_tables import DeltaTablesLocation, parse_tables_to_write
from shared.landing_zone.parquet_files import ROW_MARKER, RowMarker
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import (
    PROCESSED_FOLDER,
    READY_TO_DELETE_FOLDER,
    TableRef,
    published_files,
)
from shared.replicator.engine import (
    FAILED,
    REPLICATING,
    SEQUENCE_KEY,
    STATE_FILE,
    Replicator,
    every_nth,
    read_delta_table,
)

DAY = 86400.0
ORDERS = TableRef("shop", "orders")
ITEMS = TableRef("shop", "items")


class Clock:
    """A simulated clock the test advances; the replicator reads it for moves and retention."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def landing(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "lz")


@pytest.fixture
def tables(tmp_path: Path) -> DeltaTablesLocation:
    return parse_tables_to_write(str(tmp_path / "Tables"))


def write_table_folder(store: LocalStore, table: TableRef, keys: list[str] | None = None) -> None:
    store.write_new(table.metadata_file, json.dumps({"keyColumns": keys or ["_id"]}).encode())


def write_file(
    store: LocalStore, table: TableRef, number: int, rows: list[dict[str, Any]], **types: Any
) -> None:
    """A numbered file of ``rows``; a row's ``m`` is its marker (no ``m`` anywhere: no column)."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for name in row:
            columns.setdefault(name, [])
    markers = [row.get("m") for row in rows] if "m" in columns else None
    columns.pop("m", None)
    fields = [pa.field(name, types.get(name, _guess(rows, name))) for name in columns]
    data = {name: [row.get(name) for row in rows] for name in columns}
    if markers is not None:
        fields.append(pa.field(ROW_MARKER, pa.int32()))
        data[ROW_MARKER] = markers
    buffer = io.BytesIO()
    pq.write_table(pa.table(data, schema=pa.schema(fields)), buffer)
    store.write_new(table.data_file(number), buffer.getvalue())


def _guess(rows: list[dict[str, Any]], name: str) -> pa.DataType:
    values = [row[name] for row in rows if row.get(name) is not None]
    return pa.array(values).type if values else pa.string()


def rows_of(tables: DeltaTablesLocation, table: TableRef) -> list[dict[str, Any]]:
    rows = read_delta_table(tables, table).to_pylist()
    return sorted(rows, key=lambda row: (str(row["_id"]), json.dumps(row, default=str)))


def test_row_markers_apply_in_file_then_row_order(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    write_table_folder(landing, ORDERS)
    insert, update, delete, upsert = (int(m) for m in RowMarker)
    write_file(
        landing,
        ORDERS,
        1,
        [
            {"_id": "a", "v": 1, "m": upsert},
            {"_id": "b", "v": 2, "m": upsert},
            {"_id": "c", "v": 3, "m": insert},
            {"_id": "c", "v": 4, "m": insert},  # inserts have no duplicate check
        ],
    )
    write_file(
        landing,
        ORDERS,
        2,
        [
            {"_id": "a", "v": 10, "m": update},
            {"_id": "b", "m": delete},
            {"_id": "d", "v": 5, "m": update},  # an update of a missing row inserts it
            {"_id": "e", "m": delete},  # a delete of a missing row does nothing
            {"_id": "f", "v": 6, "m": insert},
            {"_id": "f", "v": 7, "m": upsert},  # a later change undoes the earlier insert
            {"_id": "g", "v": 8, "m": upsert},
            {"_id": "g", "m": delete},
            {"_id": "g", "v": 9, "m": insert},  # an insert after the delete stays
        ],
    )
    summary = Replicator(landing, tables, clock=Clock()).run_once()
    assert (summary.files, summary.rows) == (2, 13)
    assert rows_of(tables, ORDERS) == [
        {"_id": "a", "v": 10},
        {"_id": "c", "v": 3},
        {"_id": "c", "v": 4},
        {"_id": "d", "v": 5},
        {"_id": "f", "v": 7},
        {"_id": "g", "v": 9},
    ]


def test_files_without_markers_are_inserts_appended(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    write_table_folder(landing, ORDERS)
    write_file(landing, ORDERS, 1, [{"_id": "a", "v": 1}, {"_id": "b", "v": 2}])
    write_file(landing, ORDERS, 2, [{"_id": "a", "v": 3}])  # no marker: an insert, a second "a"
    write_file(landing, ORDERS, 3, [{"_id": "b", "v": 4, "m": int(RowMarker.UPSERT)}])
    Replicator(landing, tables, clock=Clock()).run_once()
    assert rows_of(tables, ORDERS) == [
        {"_id": "a", "v": 1},
        {"_id": "a", "v": 3},
        {"_id": "b", "v": 4},
    ]
    operations = [c["operation"] for c in _history(tables, ORDERS)]
    assert operations == ["MERGE", "WRITE", "WRITE"]  # newest first: direct appends, then a merge


def test_new_columns_are_added_and_a_missing_column_of_an_upsert_becomes_null(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    write_table_folder(landing, ORDERS)
    upsert = int(RowMarker.UPSERT)
    write_file(
        landing, ORDERS, 1, [{"_id": "a", "v": 1, "m": upsert}, {"_id": "b", "v": 2, "m": upsert}]
    )
    write_file(landing, ORDERS, 2, [{"_id": "a", "w": "new", "m": upsert}])  # no "v": full row
    Replicator(landing, tables, clock=Clock()).run_once()
    assert rows_of(tables, ORDERS) == [
        {"_id": "a", "v": None, "w": "new"},
        {"_id": "b", "v": 2, "w": None},
    ]


def test_a_changed_column_type_stops_that_table_and_the_others_go_on(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    upsert = int(RowMarker.UPSERT)
    for table in (ORDERS, ITEMS):
        write_table_folder(landing, table)
        write_file(landing, table, 1, [{"_id": "a", "v": 1, "m": upsert}])
    write_file(landing, ORDERS, 2, [{"_id": "a", "v": "one", "m": upsert}])
    write_file(landing, ORDERS, 3, [{"_id": "b", "v": 2, "m": upsert}])
    write_file(landing, ITEMS, 2, [{"_id": "b", "v": 2, "m": upsert}])
    clock = Clock()
    engine = Replicator(landing, tables, clock=clock)
    summary = engine.run_once()
    assert summary.failed == ["shop.orders"]
    assert rows_of(tables, ORDERS) == [{"_id": "a", "v": 1}]
    assert rows_of(tables, ITEMS) == [{"_id": "a", "v": 1}, {"_id": "b", "v": 2}]
    status = {entry["sourceTableName"]: entry for entry in engine.tables_mirroring_status()}
    assert status["orders"]["status"] == FAILED
    assert status["orders"]["error"]["errorCode"] == "ColumnTypeChanged"
    assert (
        "column v changes type from int64 to string in file 2"
        in status["orders"]["error"]["message"]
    )
    assert status["items"]["status"] == REPLICATING
    assert status["items"]["metrics"]["processedRows"] == 2
    # Stopped for good: later passes apply nothing more of it, files 2 and 3 stay unprocessed.
    clock.now += DAY
    assert engine.run_once().files == 0
    assert sorted(published_files(landing, ORDERS).files) == [1, 2, 3]
    assert landing.size(ORDERS.data_file(2)) is not None


def test_applied_files_move_to_both_folders_and_are_deleted_after_the_retention(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    write_table_folder(landing, ORDERS)
    clock = Clock()
    engine = Replicator(landing, tables, clock=clock, ready_to_delete=every_nth(2))
    for number in range(1, 5):
        write_file(landing, ORDERS, number, [{"_id": str(number), "m": int(RowMarker.UPSERT)}])
        engine.run_once()
        clock.now += DAY
    folders = {
        number: stored.path.rsplit("/", 2)[-2]
        for number, stored in published_files(landing, ORDERS).files.items()
    }
    assert folders == {
        1: PROCESSED_FOLDER,
        2: READY_TO_DELETE_FOLDER,
        3: PROCESSED_FOLDER,
        4: READY_TO_DELETE_FOLDER,
    }
    clock.now += 2.5 * DAY  # day 6.5: file 1, moved on day 0, is not 7 days old yet
    assert engine.run_once().deleted == 0
    clock.now += 0.5 * DAY  # day 7: file 1 is 7 days old
    assert engine.run_once().deleted == 1
    clock.now += 2 * DAY  # day 9: files 2 and 3 too
    assert engine.run_once().deleted == 2
    assert sorted(published_files(landing, ORDERS).files) == [4]
    assert rows_of(tables, ORDERS) == [{"_id": str(n)} for n in range(1, 5)]


def test_a_table_is_dropped_when_its_folder_disappears(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    for table in (ORDERS, ITEMS):
        write_table_folder(landing, table)
        write_file(landing, table, 1, [{"_id": "a"}])
    engine = Replicator(landing, tables, clock=Clock())
    engine.run_once()
    assert DeltaTable.is_deltatable(engine.delta_uri(ORDERS))
    landing.delete_folder(ORDERS.folder)
    assert engine.run_once().dropped == ["shop.orders"]
    assert not DeltaTable.is_deltatable(engine.delta_uri(ORDERS))
    assert DeltaTable.is_deltatable(engine.delta_uri(ITEMS))
    assert [e["sourceTableName"] for e in engine.tables_mirroring_status()] == ["items"]


def test_a_recreated_folder_rebuilds_its_table_from_scratch(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    write_table_folder(landing, ORDERS)
    write_file(landing, ORDERS, 1, [{"_id": "a"}])
    write_file(landing, ORDERS, 2, [{"_id": "b"}])
    engine = Replicator(landing, tables, clock=Clock())
    engine.run_once()
    landing.delete_folder(ORDERS.folder)  # between two passes: the replicator never saw it gone
    write_table_folder(landing, ORDERS)
    write_file(landing, ORDERS, 1, [{"_id": "c"}])
    engine.run_once()
    assert rows_of(tables, ORDERS) == [{"_id": "c"}]


def test_a_restart_after_a_crash_between_commit_and_move_never_applies_a_file_twice(
    landing: LocalStore, tables: DeltaTablesLocation, tmp_path: Path
) -> None:
    write_table_folder(landing, ORDERS)
    write_file(landing, ORDERS, 1, [{"_id": "a"}])  # inserts: applied twice they would double
    write_file(landing, ORDERS, 2, [{"_id": "b"}])
    Replicator(landing, tables, clock=Clock()).run_once()
    # The crash: file 2 applied but never moved, and the status file never written.
    landing.rename_new(
        f"{ORDERS.folder}/{PROCESSED_FOLDER}/{Path(ORDERS.data_file(2)).name}", ORDERS.data_file(2)
    )
    tables.store().delete(STATE_FILE)
    write_file(landing, ORDERS, 3, [{"_id": "c"}])
    summary = Replicator(landing, tables, clock=Clock()).run_once()
    assert (summary.files, summary.moved) == (1, 2)
    assert rows_of(tables, ORDERS) == [{"_id": "a"}, {"_id": "b"}, {"_id": "c"}]
    assert _history(tables, ORDERS)[0][SEQUENCE_KEY] == "3"
    assert landing.size(ORDERS.data_file(2)) is None


def test_a_missing_number_blocks_the_later_files(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    write_table_folder(landing, ORDERS)
    write_file(landing, ORDERS, 1, [{"_id": "a"}])
    write_file(landing, ORDERS, 3, [{"_id": "c"}])
    engine = Replicator(landing, tables, clock=Clock())
    assert engine.run_once().files == 1
    write_file(landing, ORDERS, 2, [{"_id": "b"}])
    assert engine.run_once().files == 2
    assert rows_of(tables, ORDERS) == [{"_id": "a"}, {"_id": "b"}, {"_id": "c"}]


def test_status_has_the_shape_of_get_tables_mirroring_status(
    landing: LocalStore, tables: DeltaTablesLocation
) -> None:
    write_table_folder(landing, ORDERS)
    write_file(landing, ORDERS, 1, [{"_id": "a"}, {"_id": "b"}])
    clock = Clock()
    engine = Replicator(landing, tables, clock=clock)
    engine.run_once()
    (entry,) = engine.tables_mirroring_status()
    assert entry == {
        "sourceSchemaName": "shop",
        "sourceTableName": "orders",
        "status": "Replicating",
        "metrics": {
            "processedBytes": landing.list_files(f"{ORDERS.folder}/{PROCESSED_FOLDER}")[0].size,
            "processedRows": 2,
            "lastSyncDateTime": "2023-11-14T22:13:20Z",
        },
    }


def _history(tables: DeltaTablesLocation, table: TableRef) -> list[dict[str, Any]]:
    return DeltaTable(tables.table_uri(f"{table.schema}/{table.name}")).history()


@pytest.mark.parametrize("marked", [False, True], ids=["appended", "merged"])
def test_new_columns_join_the_table_in_the_order_the_file_has_them(
    landing: LocalStore, tables: DeltaTablesLocation, marked: bool
) -> None:
    """Delta's schema merge adds new columns in an order of its own (x__json, y, y__json, x for
    the file's x, x__json, y, y__json): the columns must keep the landing zone's order, which is
    how ``verify`` tells a twin from its column and a renamed field's column from another's."""
    write_table_folder(landing, ORDERS)
    write_file(landing, ORDERS, 1, [{"_id": "a"}, {"_id": "b"}])  # a snapshot of null fields
    new = [{"_id": "a", "x": 5, "x__json": None, "y": "s", "y__json": None, "z": 1.5}]
    if marked:
        new = [{**row, "m": int(RowMarker.UPSERT)} for row in new]
    write_file(landing, ORDERS, 2, new, x__json=pa.string(), y__json=pa.string())
    write_file(landing, ORDERS, 3, [{"_id": "c", "w": True, "y": "t"}])
    Replicator(landing, tables).run_once()
    columns = read_delta_table(tables, ORDERS).column_names
    assert columns == ["_id", "x", "x__json", "y", "y__json", "z", "w"]
