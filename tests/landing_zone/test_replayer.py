"""The replayer finds each contract defect in hand-made folders and applies row markers right."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.landing_zone.parquet_files import KEY_COLUMN, ROW_MARKER, RowMarker
from shared.landing_zone.replayer import find_tables, inspect_table
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.inspect import format_report

TABLE = TableRef("shop", "orders")


def parquet(columns: dict[str, pa.Array], nullable: bool = True) -> bytes:
    schema = pa.schema([pa.field(n, a.type, nullable=nullable) for n, a in columns.items()])
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns, schema), buffer)
    return buffer.getvalue()


def rows(ids: list[str], markers: list[int], **extra: pa.Array) -> bytes:
    return parquet(
        {KEY_COLUMN: pa.array(ids, pa.string()), **extra, ROW_MARKER: pa.array(markers, pa.int32())}
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path)
    store.write(TABLE.metadata_file, b'{"keyColumns": ["_id"]}')
    return store


def put(store: LocalStore, number: int, data: bytes) -> None:
    store.write(TABLE.data_file(number), data)


def codes(store: LocalStore) -> list[str]:
    return [problem.code for problem in inspect_table(store, TABLE).problems]


def test_valid_folder_conforms_and_replays(store: LocalStore):
    put(store, 1, rows(["a", "b", "c"], [4, 4, 4], n=pa.array([1, 2, 3])))
    put(store, 2, rows(["a", "b"], [4, 2], n=pa.array([10, None])))
    store.write(f"{TABLE.folder}/_staging-1-x.parquet", b"ignored: underscore")
    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.files == 2
    assert report.rows is not None
    assert report.rows.to_pydict() == {"_id": ["a", "c"], "n": [10, 3]}


def test_gap_is_named(store: LocalStore):
    for number in (1, 2, 5):
        put(store, number, rows(["a"], [RowMarker.UPSERT]))
    report = inspect_table(store, TABLE)
    assert [p.code for p in report.problems] == ["gap"]
    assert "gap at 3-4" in report.problems[0].message


def test_sequence_must_start_at_one(store: LocalStore):
    put(store, 2, rows(["a"], [RowMarker.UPSERT]))
    assert codes(store) == ["gap"]


def test_zero_byte_file_is_named(store: LocalStore):
    put(store, 1, rows(["a"], [RowMarker.UPSERT]))
    put(store, 2, b"")
    report = inspect_table(store, TABLE)
    assert [p.code for p in report.problems] == ["zero-byte"]
    assert "zero-byte file 2" in report.problems[0].message


def test_unreadable_file_is_named(store: LocalStore):
    put(store, 1, b"PAR1 not really")
    assert codes(store) == ["unreadable"]


def test_marker_not_last_is_named(store: LocalStore):
    put(
        store,
        1,
        parquet({ROW_MARKER: pa.array([RowMarker.UPSERT], pa.int32()), "_id": pa.array(["a"])}),
    )
    assert codes(store) == ["marker-not-last"]


def test_missing_metadata_is_named(tmp_path: Path):
    store = LocalStore(tmp_path)
    put(store, 1, rows(["a"], [RowMarker.UPSERT]))
    assert codes(store) == ["missing-metadata"]


def test_invalid_metadata_is_named(store: LocalStore):
    store.write(TABLE.metadata_file, b"{keyColumns: [_id]}")
    assert codes(store) == ["invalid-metadata"]


def test_type_change_between_files_is_named(store: LocalStore):
    put(store, 1, rows(["a"], [RowMarker.UPSERT], price=pa.array([1], pa.int64())))
    put(store, 2, rows(["b"], [RowMarker.UPSERT], price=pa.array([1.5], pa.float64())))
    report = inspect_table(store, TABLE)
    assert [p.code for p in report.problems] == ["type-change"]
    assert "price" in report.problems[0].message and "file 2" in report.problems[0].message


def test_non_nullable_column_is_named(store: LocalStore):
    put(
        store,
        1,
        parquet(
            {"_id": pa.array(["a"]), ROW_MARKER: pa.array([RowMarker.UPSERT], pa.int32())}, False
        ),
    )
    assert set(codes(store)) == {"not-nullable"}


def test_unknown_marker_and_stray_file_are_named(store: LocalStore):
    assert 3 not in set(RowMarker)
    put(store, 1, rows(["a"], [3]))
    store.write(f"{TABLE.folder}/notes.txt", b"hello")
    assert sorted(codes(store)) == ["invalid-marker", "unexpected-file"]


def test_marker_semantics(store: LocalStore):
    # Inserts have no duplicate check; an update inserts the key if it is missing.
    insert, update, delete, upsert = (
        RowMarker.INSERT,
        RowMarker.UPDATE,
        RowMarker.DELETE,
        RowMarker.UPSERT,
    )
    first = rows(["a", "a", "b", "c"], [insert, insert, upsert, update], v=pa.array([1, 2, 3, 4]))
    second = rows(
        ["b", "c", "d", "d"], [delete, upsert, upsert, delete], v=pa.array([None, 5, 6, None])
    )
    put(store, 1, first)
    put(store, 2, second)
    report = inspect_table(store, TABLE)
    assert report.rows is not None
    assert report.rows.to_pydict() == {"_id": ["a", "a", "c"], "v": [1, 2, 5]}
    # The two inserts of "a" leave it twice in the table: named, the rest conforms.
    assert [(p.code, "_id a " in p.message) for p in report.problems] == [("duplicate-key", True)]


def test_files_without_marker_are_inserts_and_added_columns_merge(store: LocalStore):
    put(store, 1, parquet({"_id": pa.array(["a", "c"])}))
    put(
        store,
        2,
        rows(["b", "c"], [RowMarker.UPSERT, RowMarker.DELETE], extra=pa.array(["x", None])),
    )
    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.rows is not None
    assert report.rows.to_pydict() == {"_id": ["a", "b"], "extra": [None, "x"]}


def test_a_key_in_two_insert_only_files_is_a_duplicate(store: LocalStore):
    """A snapshot that wrote an `_id` twice: Fabric inserts without a duplicate check."""
    put(store, 1, parquet({"_id": pa.array(["a", "b"]), "n": pa.array([1, 2])}))
    put(store, 2, parquet({"_id": pa.array(["c", "b"]), "n": pa.array([3, 2])}))
    put(store, 3, rows(["c"], [RowMarker.UPSERT], n=pa.array([30])))  # an upsert settles "c"
    report = inspect_table(store, TABLE)
    assert [p.code for p in report.problems] == ["duplicate-key"]
    assert "_id b is inserted more than once (files 1, 2)" in report.problems[0].message
    assert report.rows is not None
    assert report.rows.to_pydict() == {"_id": ["a", "b", "b", "c"], "n": [1, 2, 2, 30]}


def test_many_duplicate_keys_are_counted_not_all_listed(store: LocalStore):
    keys = [f"k{i}" for i in range(8)]
    put(store, 1, parquet({"_id": pa.array(keys)}))
    put(store, 2, parquet({"_id": pa.array(keys)}))
    messages = [p.message for p in inspect_table(store, TABLE).problems]
    assert len(messages) == 6 and messages[-1] == "3 more keys are inserted more than once"


def test_processed_files_still_count(store: LocalStore):
    store.write(
        f"{TABLE.folder}/_ProcessedFiles/00000000000000000001.parquet",
        rows(["a"], [RowMarker.UPSERT]),
    )
    put(store, 2, rows(["b"], [RowMarker.UPSERT]))
    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.row_count == 2


def test_files_the_replicator_applied_and_deleted_are_consumed_not_a_gap(store: LocalStore):
    # Fabric's replicator moved files to both folders and deleted 1-3 after their retention.
    store.write(
        f"{TABLE.folder}/_FilesReadyToDelete/00000000000000000004.parquet",
        rows(["a"], [RowMarker.UPSERT]),
    )
    store.write(
        f"{TABLE.folder}/_ProcessedFiles/00000000000000000005.parquet",
        rows(["b"], [RowMarker.UPSERT]),
    )
    put(store, 6, rows(["c"], [RowMarker.UPSERT]))
    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert (report.files, report.first_file, report.history_removed) == (3, 4, True)
    assert not report.complete  # the rows of files 4-6 are not the table
    assert "files 1 to 3 were applied by the replicator and removed" in format_report(report)
    put(store, 8, rows(["d"], [RowMarker.UPSERT]))  # a real gap above the lowest still counts
    assert codes(store) == ["gap"]


def test_a_table_whose_every_file_aged_out_conforms(store: LocalStore):
    put(store, 1, rows(["a"], [RowMarker.UPSERT]))
    store.write(f"{TABLE.folder}/_ProcessedFiles/_keep", b"")  # the folder, emptied
    store.delete(TABLE.data_file(1))
    report = inspect_table(store, TABLE)
    assert report.conforms and report.history_removed and report.first_file is None
    assert "every file was applied by the replicator and removed" in format_report(report)


def test_find_tables_reads_schema_folders(tmp_path: Path):
    store = LocalStore(tmp_path)
    for folder in ("plain", "shop.schema/orders", "shop.schema/users", "_scratchPad/x"):
        store.write(f"{folder}/_metadata.json", b"{}")
    assert [str(t) for t in find_tables(store)] == ["plain", "shop.orders", "shop.users"]
