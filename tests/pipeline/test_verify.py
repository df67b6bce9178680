"""``verify`` against the MongoDB sandbox and a local landing zone written by the real snapshot."""

from __future__ import annotations

import datetime as dt
import io
import math
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from bson import Binary, Code, Decimal128, Int64, ObjectId, Regex
from bson.datetime_ms import DatetimeMS
from pymongo import MongoClient

from shared.cli import main
from shared.config import load_settings
from shared.conversion import ROW_MARKER, BatchConverter, RowMarker, id_text, parse_id_text
from shared.conversion import converter as converter_module
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.schema_registry import SCHEMA_KIND
from shared.pipeline.snapshot import pending_tasks, plan_selected, run_partition
from shared.pipeline.verify import (
    DUPLICATE,
    EXTRA,
    MISSING,
    SHOWN_DIFFERENCES,
    VALUE,
    Difference,
    VerifyReport,
    _same,
    _same_value,
    verify_mirror,
)
from shared.pipeline.wiring import open_context
from shared.source.client import connect
from shared.state.sqlite import SqliteStateStore


def snapshot(tmp_path: Path, uri: str, database: str, collections: str = "all") -> None:
    settings = load_settings(
        {
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "MONGODB_COLLECTIONS": collections,
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": str(tmp_path / "state.db"),
            "FILE_ROWS": "40",
            "SNAPSHOT_PARTITIONS": "3",
        }
    )
    context = open_context(settings)
    try:
        for task in pending_tasks(plan_selected(context).plans):
            run_partition(context, task)
    finally:
        context.close()


def verify(tmp_path: Path, uri: str, database: str, wanted: list[str] | None = None):
    with connect(uri) as client:
        return verify_mirror(LocalStore(tmp_path / "lz"), client[database], wanted)


def run_cli(tmp_path: Path, uri: str, database: str, *extra: str) -> int:
    return main(
        [
            "verify",
            "--mongodb-uri",
            uri,
            "--database",
            database,
            "--landing-zone",
            str(tmp_path / "lz"),
            *extra,
        ]
    )


def only_table(report: VerifyReport, name: str):
    [table] = [table for table in report.tables if table.table.name == name]
    return table


def test_equal_after_snapshot_exits_0(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient, capsys
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many([{"_id": i, "qty": i, "sku": f"s{i % 7}"} for i in range(100)])
    database.create_collection("empty")
    snapshot(tmp_path, mongodb_uri, mongo_db_name)

    assert run_cli(tmp_path, mongodb_uri, mongo_db_name) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{mongo_db_name}.empty: equal; rows: landing zone 0, source 0" in out
    assert f"{mongo_db_name}.orders: equal; rows: landing zone 100, source 100" in out
    assert out[-1] == "verify: all 2 tables equal"


def test_changes_not_mirrored_exit_1_with_counts_and_first_differences(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient, capsys
):
    orders = mongo_client[mongo_db_name].orders
    orders.insert_many([{"_id": i, "qty": i, "sku": f"s{i}"} for i in range(100)])
    snapshot(tmp_path, mongodb_uri, mongo_db_name)
    orders.insert_many([{"_id": i, "qty": i, "sku": f"s{i}"} for i in range(100, 103)])
    orders.update_one({"_id": 7}, {"$set": {"qty": 70}})
    orders.update_one({"_id": 8}, {"$set": {"note": "new field"}})
    orders.delete_one({"_id": 5})

    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "orders")
    assert not table.equal
    assert (table.landing_rows, table.source_rows) == (100, 102)
    assert table.counts == {MISSING: 3, EXTRA: 1, VALUE: 2}
    # In _id text order: "~n:100" < "~n:101" < "~n:102" < "~n:5" < "~n:7" < "~n:8".
    assert table.differences == [
        Difference(MISSING, "~n:100"),
        Difference(MISSING, "~n:101"),
        Difference(MISSING, "~n:102"),
        Difference(EXTRA, "~n:5"),
        Difference(VALUE, "~n:7", "qty", "7", "70"),
        Difference(VALUE, "~n:8", "note", "NULL", "'new field'"),
    ]

    assert run_cli(tmp_path, mongodb_uri, mongo_db_name) == 1
    out = capsys.readouterr().out
    assert f"{mongo_db_name}.orders: DIFFERENT; rows: landing zone 100, source 102" in out
    assert (
        "rows differing: 3 missing in the landing zone, 1 extra in the landing zone, "
        "2 with different values"
    ) in out
    assert "  - value differs: _id ~n:7, column qty: landing zone 7, source 70" in out
    assert "  - extra in the landing zone: _id ~n:5" in out
    assert out.splitlines()[-1] == "verify: 1 of 1 tables differ"


def test_only_the_first_differences_are_listed_but_all_are_counted(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    orders = mongo_client[mongo_db_name].orders
    orders.insert_many([{"_id": i, "qty": i} for i in range(50)])
    snapshot(tmp_path, mongodb_uri, mongo_db_name)
    orders.update_many({}, {"$inc": {"qty": 1}})

    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "orders")
    assert table.counts == {VALUE: 50}
    assert len(table.differences) == SHOWN_DIFFERENCES


MIXED_IDS: list[Any] = [
    *[ObjectId() for _ in range(10)],
    *range(-5, 10),
    *[i + 0.5 for i in range(5)],
    Int64(2**40),
    Decimal128("12.50"),
    *[f"key-{i}" for i in range(5)],
    "~tilde",
    "0123456789abcdef01234567",  # a string that reads like an ObjectId
    *[dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i) for i in range(5)],
    *[Binary(bytes([i]) * 4, 0) for i in range(3)],
    *[Binary(uuid.UUID(int=i).bytes, 4) for i in range(3)],
    *[{"k": i, "s": "x"} for i in range(3)],
    True,
    None,
]


def test_mixed_id_types_verify_equal_and_differences_name_the_id_text(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    mixed = mongo_client[mongo_db_name].mixed
    mixed.insert_many([{"_id": value, "n": i} for i, value in enumerate(MIXED_IDS)])
    snapshot(tmp_path, mongodb_uri, mongo_db_name)

    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "mixed")
    assert table.equal, table.differences
    assert table.landing_rows == table.source_rows == len(MIXED_IDS)

    when = dt.datetime(2020, 1, 2, tzinfo=dt.UTC)
    mixed.delete_one({"_id": when})
    mixed.update_one({"_id": {"k": 1, "s": "x"}}, {"$set": {"n": -1}})
    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "mixed")
    assert table.counts == {EXTRA: 1, VALUE: 1}
    assert Difference(EXTRA, id_text(when)) in table.differences
    document_id = id_text({"k": 1, "s": "x"})
    assert document_id.startswith("~o:")
    [changed] = [d for d in table.differences if d.kind == VALUE]
    assert (changed.id_text, changed.column, changed.source) == (document_id, "n", "-1")


def typed_documents() -> list[dict[str, Any]]:
    """Fields whose column kind the landing zone's types alone cannot tell, and changed types."""
    documents: list[dict[str, Any]] = []
    for i in range(60):
        document: dict[str, Any] = {
            "_id": i,
            "v": i if i < 30 else f"text {i}",  # int64 column, then the twin
            "ref": ObjectId(f"{i:024x}") if i % 10 else f"{i:024x}",  # objectid, strings in twin
            "price": Decimal128(f"{i}.10"),
            "token": Binary(uuid.UUID(int=i).bytes, 4),
            "blob": Binary(bytes([i]), 5),
            "nested": {"a": [i, {"b": None}]},
            "ratio": [math.nan, -0.0, 1.5][i % 3],
            "at": DatetimeMS(2**62) if i == 3 else dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
            "a.b": i,  # column a_b
            "a_b": str(i),  # column a_b_2
        }
        documents.append(document)
    return documents


def test_twin_columns_and_ambiguous_kinds_verify_equal_and_changes_in_them_are_found(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    typed = mongo_client[mongo_db_name].typed
    typed.insert_many(typed_documents())
    snapshot(tmp_path, mongodb_uri, mongo_db_name)

    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "typed")
    assert table.equal, table.differences
    # The schema rebuilt from the landing zone alone is the one the snapshot recorded.
    state = SqliteStateStore(tmp_path / "state.db")
    try:
        record = state.get(SCHEMA_KIND, TableRef(mongo_db_name, "typed").folder)
    finally:
        state.close()
    assert record is not None and table.schema is not None
    assert table.schema.to_json() == str(record.value["schema"])
    columns = table.schema.order
    assert {"v__json", "ref__json", "at__json", "a_b", "a_b_2"} <= set(columns)

    typed.update_one({"_id": 40}, {"$set": {"v": "changed"}})  # a twin value
    typed.update_one({"_id": 1}, {"$set": {"ratio": 0.0}})  # was -0.0
    typed.update_one({"_id": 2}, {"$set": {"ref": f"{2:024x}"}})  # same hex, now a string
    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "typed")
    changed = {(d.id_text, d.column) for d in table.differences}
    assert changed == {
        ("~n:40", "v__json"),
        ("~n:1", "ratio"),
        ("~n:2", "ref"),
        ("~n:2", "ref__json"),
    }


def test_missing_table_folder_and_stale_table_are_differences(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient, capsys
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many([{"_id": i} for i in range(10)])
    database.gone.insert_many([{"_id": i} for i in range(4)])
    snapshot(tmp_path, mongodb_uri, mongo_db_name)
    database.late.insert_many([{"_id": i} for i in range(3)])  # never mirrored
    database.gone.drop()

    report = verify(tmp_path, mongodb_uri, mongo_db_name)
    late, gone = only_table(report, "late"), only_table(report, "gone")
    assert (late.landing_rows, late.source_rows) == (None, 3)
    assert late.problems == ["no table folder in the landing zone"]
    assert (gone.landing_rows, gone.source_rows) == (4, None)
    assert gone.problems == [f"no selected collection {mongo_db_name}.gone maps to it"]
    assert only_table(report, "orders").equal and not report.equal

    # Tables of existing collections left out of an explicit selection are not judged.
    database.late.drop()
    database.create_collection("gone")
    assert run_cli(tmp_path, mongodb_uri, mongo_db_name, "--collections", "orders") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "verify: all 1 tables equal"


def test_duplicate_rows_in_the_landing_zone_are_differences(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    mongo_client[mongo_db_name].orders.insert_many([{"_id": i, "qty": i} for i in range(5)])
    snapshot(tmp_path, mongodb_uri, mongo_db_name, "orders")
    store = LocalStore(tmp_path / "lz")
    table_ref = TableRef(mongo_db_name, "orders")
    published = pq.read_table(io.BytesIO(store.read(table_ref.data_file(1))))
    # An insert of a key already present: Fabric keeps both rows.
    assert ROW_MARKER not in published.column_names  # snapshot files: inserts, no marker
    again = published.slice(0, 1).append_column(
        ROW_MARKER, pa.array([RowMarker.INSERT], pa.int32())
    )
    sink = io.BytesIO()
    pq.write_table(again, sink)
    next_number = 1 + sum(
        1 for f in store.list_files(table_ref.folder) if f.path.endswith(".parquet")
    )
    store.write(table_ref.data_file(next_number), sink.getvalue())

    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "orders")
    assert table.counts == {DUPLICATE: 1}
    assert table.differences == [Difference(DUPLICATE, pc.min(published.column("_id")).as_py())]
    assert (table.landing_rows, table.source_rows) == (6, 5)


def test_missing_database_is_a_configuration_error(tmp_path: Path, mongodb_uri: str, capsys):
    (tmp_path / "lz").mkdir()  # a landing zone that exists: only the database is missing
    code = main(["verify", "--mongodb-uri", mongodb_uri, "--landing-zone", str(tmp_path / "lz")])
    assert code == 2
    assert capsys.readouterr().err.startswith("configuration error: MONGODB_DATABASE")


def _drop_field(monkeypatch, name: str) -> None:
    """A conversion bug: the converter never founds a column for ``name``, so the field is
    dropped from every row. Patched on the class, so every converter has it (the snapshot's and
    any other), as a bug in shared/conversion would."""
    original = BatchConverter._new_field

    def dropping(self: BatchConverter, field: str, *args: Any) -> Any:
        return None if field == name else original(self, field, *args)

    monkeypatch.setattr(BatchConverter, "_new_field", dropping)


def _drop_twin_values(monkeypatch) -> None:
    """A conversion bug: values that do not fit their column's type are dropped instead of going
    to the twin column."""
    for piece in ("_fast_piece", "_slow_piece"):
        original = getattr(converter_module, piece)

        def without_twin(*args: Any, _original: Any = original) -> Any:
            main, _ = _original(*args)
            return main, None

        monkeypatch.setattr(converter_module, piece, without_twin)


def test_a_converter_that_drops_a_field_is_caught(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient, monkeypatch
):
    # Before verify compared by value (it converted the source with the same converter), both
    # sides lost the field alike and this table was reported equal.
    _drop_field(monkeypatch, "secret")
    orders = mongo_client[mongo_db_name].orders
    orders.insert_many([{"_id": i, "qty": i, "secret": f"s{i}"} for i in range(20)])
    snapshot(tmp_path, mongodb_uri, mongo_db_name)

    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "orders")
    assert not table.equal
    assert table.counts == {VALUE: 20}
    assert {difference.column for difference in table.differences} == {"secret"}
    assert table.differences[0] == Difference(VALUE, "~n:0", "secret", "NULL", "'s0'")

    assert run_cli(tmp_path, mongodb_uri, mongo_db_name) == 1


def test_a_converter_that_drops_values_of_another_type_is_caught(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient, monkeypatch
):
    _drop_twin_values(monkeypatch)
    orders = mongo_client[mongo_db_name].orders
    orders.insert_many([{"_id": i, "qty": i if i < 5 else f"{i} units"} for i in range(8)])
    snapshot(tmp_path, mongodb_uri, mongo_db_name)

    table = only_table(verify(tmp_path, mongodb_uri, mongo_db_name), "orders")
    assert table.counts == {VALUE: 3}
    assert [(d.id_text, d.column, d.landing, d.source) for d in table.differences] == [
        (f"~n:{i}", "qty__json", "NULL", f"'{i} units'") for i in range(5, 8)
    ]


SAME_VALUES: list[tuple[Any, Any]] = [
    (Int64(5), 5),  # int32 and int64: one class in the mapping (relaxed JSON writes both plainly)
    (math.nan, float("nan")),
    ({"a": [1, {"b": None}]}, {"a": [Int64(1), {"b": None}]}),
    (Decimal128("NaN"), Decimal128("-NaN")),  # the text form keeps no NaN sign or payload
    (DatetimeMS(2**62), DatetimeMS(2**62)),
    (Regex("^a", "i"), Regex("^a", "i")),
]
DIFFERENT_VALUES: list[tuple[Any, Any]] = [
    (1, 1.0),
    (1, True),
    (0.0, -0.0),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # field order counts in BSON
    ({"a": 1}, {"a": 1, "b": None}),  # null inside a document is not a missing field
    ([1, 2], [2, 1]),
    (Decimal128("1.10"), Decimal128("1.1")),
    (Decimal128("0"), Decimal128("-0")),
    (b"x", Binary(b"x", 5)),
    (Regex("^a", "i"), Regex("^a", "")),
    (Code("f()", {"a": 1}), Code("f()", {"a": 2})),
    (DatetimeMS(1), 1),
    ("1", 1),
]


@pytest.mark.parametrize(("a", "b"), SAME_VALUES)
def test_values_the_mapping_keeps_alike_compare_the_same(a: Any, b: Any):
    assert _same(a, b) and _same(b, a)
    assert _same_value(a, b) and _same_value(b, a)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_VALUES)
def test_values_that_differ_in_type_order_or_representation_are_different(a: Any, b: Any):
    assert not _same(a, b) and not _same(b, a)
    assert not _same_value(a, b) and not _same_value(b, a)
    assert not _same([a], [b]) and not _same({"v": a}, {"v": b})


def test_id_keys_compare_numbers_as_mongodb_does():
    # 5, Int64(5), 5.0 and Decimal128("5.00") are one _id; its text reads back as 5.
    for key in (5, Int64(5), 5.0, Decimal128("5.00")):
        assert _same(parse_id_text(id_text(key)), key, numbers_by_value=True)
    assert not _same(5, 5.5, numbers_by_value=True)
    assert _same({"k": 1}, {"k": 1.0}, numbers_by_value=True)
