"""``verify --against delta``: the source against Delta tables, as users query them.

The Delta tables are written here with ``deltalake.write_deltalake`` from rows in the landing
zone's layout (the snapshot's replay, or rows written by hand), then some cells are made wrong
to prove each difference is found by value, and that a different text of the same value is not
a difference.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from azure.storage.blob import BlobServiceClient
from bson import Int64
from bson.datetime_ms import DatetimeMS
from deltalake import write_deltalake
from pymongo import MongoClient

from shared.cli import main
from shared.delta_tables import DeltaTables, parse_tables_location
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.verify import DELTA_TABLE, EXTRA, MISSING, VALUE, verify_delta
from shared.source.client import connect
from tests.fixtures.azurite import Azurite
from tests.pipeline.test_verify import MIXED_IDS, snapshot, typed_documents


def replayed(tmp_path: Path, database: str, table: str) -> pa.Table:
    rows = inspect_table(LocalStore(tmp_path / "lz"), TableRef(database, table)).rows
    assert rows is not None
    return rows


def write_table(tables: Path, database: str, table: str, rows: pa.Table) -> None:
    write_deltalake(str(tables / database / table), rows, mode="overwrite")


def verify(tables: Path, uri: str, database: str, wanted: list[str] | None = None):
    location, _ = parse_tables_location(str(tables))
    with connect(uri) as client:
        return verify_delta(DeltaTables(location), client[database], wanted)


def run_cli(uri: str, database: str, *extra: str) -> int:
    return main(["verify", "--mongodb-uri", uri, "--database", database, *extra])


def only_table(report, name: str):
    [table] = [table for table in report.tables if table.table.name == name]
    return table


def with_cell(rows: pa.Table, key: str, column: str, value: Any) -> pa.Table:
    """``rows`` with one cell replaced (the row found by its ``_id`` text)."""
    index = rows.column("_id").to_pylist().index(key)
    cells = rows.column(column).to_pylist()
    cells[index] = value
    position = rows.schema.get_field_index(column)
    return rows.set_column(position, column, pa.array(cells, rows.schema.field(column).type))


def test_delta_tables_equal_to_the_source_exit_0(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient, capsys
):
    database = mongo_client[mongo_db_name]
    database.typed.insert_many(typed_documents())
    database.mixed.insert_many([{"_id": value, "n": i} for i, value in enumerate(MIXED_IDS)])
    database.create_collection("empty")
    snapshot(tmp_path, mongodb_uri, mongo_db_name)
    tables = tmp_path / "Tables"
    for name in ("typed", "mixed", "empty"):
        write_table(tables, mongo_db_name, name, replayed(tmp_path, mongo_db_name, name))

    code = run_cli(mongodb_uri, mongo_db_name, "--against", "delta", "--tables", str(tables))
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert f"{mongo_db_name}.typed: equal; rows: Delta table 60, source 60" in out
    assert f"{mongo_db_name}.empty: equal; rows: Delta table 0, source 0" in out
    assert out[-1] == "verify: all 3 tables equal"


def test_wrong_cells_are_found_by_value_and_other_texts_of_the_same_value_are_not(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient, capsys
):
    typed = mongo_client[mongo_db_name].typed
    typed.insert_many(typed_documents())
    snapshot(tmp_path, mongodb_uri, mongo_db_name)
    rows = replayed(tmp_path, mongo_db_name, "typed")

    # The same values, written differently: not differences.
    rows = with_cell(rows, "~n:4", "nested", '{"a":[4,{"b":null}]}')  # spacing
    rows = with_cell(rows, "~n:40", "v__json", '"text \\u0034\\u0030"')  # escapes
    rows = with_cell(rows, "~n:5", "ref__json", f'{{"$oid":"{5:024x}"}}')  # column ref: strings
    # Wrong values, each only by a hair.
    rows = with_cell(rows, "~n:6", "nested", '{ "a" : [ 6.0, { "b" : null } ] }')  # 6.0 is not 6
    rows = with_cell(rows, "~n:7", "nested", '{ "a" : [ 7, { } ] }')  # a field dropped inside
    rows = with_cell(rows, "~n:8", "nested", '{ "a" : [ 8, { "b" : null } ], "c" : 1 }')
    rows = with_cell(rows, "~n:9", "price", "9.1")  # Decimal128 9.10: the same number, not value
    rows = with_cell(rows, "~n:10", "ratio", 0.0)  # was -0.0
    rows = with_cell(rows, "~n:11", "at", dt.datetime(2021, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC))
    rows = with_cell(rows, "~n:12", "token", "00000000-0000-0000-0000-00000000000d")  # 12 is c
    rows = with_cell(rows, "~n:13", "a_b", 14)  # field "a.b"
    rows = with_cell(rows, "~n:14", "v", None)  # a value dropped
    rows = with_cell(rows, "~n:31", "v__json", '"text 31 "')
    rows = with_cell(rows, "~n:15", "nested", "{ not json")
    rows = rows.filter(pc.not_equal(rows.column("_id"), "~n:16"))  # a row missing
    extra = rows.slice(0, 1).set_column(0, "_id", pa.array(["~n:99"]))
    rows = pa.concat_tables([rows, extra])
    tables = tmp_path / "Tables"
    write_table(tables, mongo_db_name, "typed", rows)

    table = only_table(verify(tables, mongodb_uri, mongo_db_name), "typed")
    assert table.target == DELTA_TABLE
    assert table.counts == {VALUE: 11, MISSING: 1, EXTRA: 1}
    assert (table.landing_rows, table.source_rows) == (60, 60)

    code = run_cli(mongodb_uri, mongo_db_name, "--against", "delta", "--tables", str(tables))
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "rows differing: 1 missing in the Delta table, 1 extra in the Delta table, "
        "11 with different values"
    ) in out
    # The first ten, in _id text order: ~n:10 < ~n:11 < ... < ~n:16 < ~n:31 < ~n:6 ...
    listed = [line for line in out.splitlines() if line.startswith("  - ")]
    assert [line.split(",")[0] for line in listed] == [
        *(f"  - value differs: _id ~n:{i}" for i in range(10, 16)),
        "  - missing in the Delta table: _id ~n:16",
        *(f"  - value differs: _id ~n:{i}" for i in (31, 6, 7)),
    ]
    for line in (
        "  - value differs: _id ~n:10, column ratio: Delta table 0.0, source -0.0",
        "  - value differs: _id ~n:11, column at: Delta table 2021-01-01T00:00:00.000001Z, "
        "source 2021-01-01T00:00:00Z",
        "  - value differs: _id ~n:13, column a_b (field 'a.b'): Delta table 14, source 13",
        "  - value differs: _id ~n:14, column v: Delta table NULL, source 14",
        "  - value differs: _id ~n:15, column nested: Delta table '{ not json', "
        "source {'a': [15, {'b': None}]}",
        "  - value differs: _id ~n:31, column v__json: Delta table '\"text 31 \"', "
        "source 'text 31'",
        '  - value differs: _id ~n:6, column nested: Delta table \'{ "a" : [ 6.0, '
        "{ \"b\" : null } ] }', source {'a': [6, {'b': None}]}",
    ):
        assert line in listed
    assert listed[2].startswith(
        "  - value differs: _id ~n:12, column token: "
        "Delta table '00000000-0000-0000-0000-00000000000d', source Binary("
    )


FIRST_DAY_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z: the timestamp column's first


def rows_of(columns: dict[str, pa.Array]) -> pa.Table:
    return pa.table(columns)


def test_exact_numbers_dates_and_nested_values(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    """Hand-written rows, as the type mapping documents them, for values at their limits."""
    far = DatetimeMS(2**62)  # year ~146 million: beyond datetime, beyond timestamp[us]
    documents = [
        {"_id": 1, "i": Int64(2**62 + 1), "f": 2.0**53 + 2, "d": DatetimeMS(FIRST_DAY_MS)},
        {"_id": 2, "i": -(2**31), "f": math.nan, "d": far, "x": {"n": Int64(2**53 + 1)}},
        {"_id": 3, "i": 0, "f": 5e-324, "x": [True, 1, 1.0, "1"]},
    ]
    mongo_client[mongo_db_name].limits.insert_many(documents)
    timestamps = pa.timestamp("us", tz="UTC")
    good = {
        "_id": pa.array(["~n:1", "~n:2", "~n:3"]),
        "i": pa.array([2**62 + 1, -(2**31), 0], pa.int64()),
        "f": pa.array([2.0**53 + 2, math.nan, 5e-324]),
        "d": pa.array([FIRST_DAY_MS * 1000, None, None], pa.int64()).cast(timestamps),
        "d__json": pa.array([None, '{"$date": {"$numberLong": "4611686018427387904"}}', None]),
        "x": pa.array([None, '{"n": 9007199254740993}', '[true, 1, 1.0, "1"]']),
    }
    tables = tmp_path / "Tables"
    write_table(tables, mongo_db_name, "limits", rows_of(good))
    assert only_table(verify(tables, mongodb_uri, mongo_db_name), "limits").equal

    wrong = dict(good)
    wrong["i"] = pa.array([2**62, -(2**31), 0], pa.int64())  # off by one past 2**53
    wrong["f"] = pa.array([2.0**53 + 2, math.nan, 0.0])  # the smallest double is not zero
    wrong["d__json"] = pa.array([None, '{"$date": {"$numberLong": "4611686018427387903"}}', None])
    wrong["x"] = pa.array([None, '{"n": 9007199254740992}', '[1, 1, 1.0, "1"]'])  # true is not 1
    write_table(tables, mongo_db_name, "limits", rows_of(wrong))
    table = only_table(verify(tables, mongodb_uri, mongo_db_name), "limits")
    assert {(d.id_text, d.column) for d in table.differences} == {
        ("~n:1", "i"),
        ("~n:2", "d__json"),
        ("~n:2", "x"),
        ("~n:3", "f"),
        ("~n:3", "x"),
    }


def test_absent_and_stale_delta_tables_are_differences(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many([{"_id": i} for i in range(3)])
    database.late.insert_one({"_id": 1})
    database.create_collection("empty")
    tables = tmp_path / "Tables"
    write_table(tables, mongo_db_name, "orders", pa.table({"_id": ["~n:0", "~n:1", "~n:2"]}))
    write_table(tables, mongo_db_name, "gone", pa.table({"_id": ["~n:0"]}))
    (tables / mongo_db_name / "not-a-table").mkdir()

    report = verify(tables, mongodb_uri, mongo_db_name)
    assert only_table(report, "orders").equal
    late, gone = only_table(report, "late"), only_table(report, "gone")
    assert (late.landing_rows, late.source_rows) == (None, 1)
    assert late.problems == [f"no Delta table at {mongo_db_name}/<table> in {tables}"]
    assert (gone.landing_rows, gone.source_rows) == (1, None)
    assert gone.problems == [f"no selected collection {mongo_db_name}.gone maps to it"]
    # Fabric creates a mirrored table from its first data file; a snapshot of an empty
    # collection publishes none, so no Delta table is what an empty collection mirrors to.
    empty = only_table(report, "empty")
    assert empty.equal and (empty.landing_rows, empty.source_rows) == (0, 0)
    assert not report.equal


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--against", "delta"], "configuration error: --tables: is required with --against"),
        (
            ["--against", "delta", "--tables", "{missing}"],
            "configuration error: --tables: {missing} is not a folder",
        ),
        (["--tables", "{missing}"], "configuration error: --tables: is read only with --against"),
    ],
)
def test_user_mistakes_exit_2_naming_the_option(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, capsys, extra: list[str], message: str
):
    missing = str(tmp_path / "nowhere")
    argv = [part.replace("{missing}", missing) for part in extra]
    code = run_cli(mongodb_uri, mongo_db_name, "--landing-zone", str(tmp_path), *argv)
    assert code == 2
    assert capsys.readouterr().err.startswith(message.replace("{missing}", missing))


def test_delta_tables_in_azure_blob_storage(
    tmp_path: Path,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient,
    azurite: Azurite,
    capsys,
):
    mongo_client[mongo_db_name].typed.insert_many(typed_documents())
    snapshot(tmp_path, mongodb_uri, mongo_db_name)
    container = f"tables-{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    given = f"{azurite.connection_string}Container={container};Path=mirror/Tables"
    location, _ = parse_tables_location(given)
    rows = replayed(tmp_path, mongo_db_name, "typed")
    uri = DeltaTables(location).uri(TableRef(mongo_db_name, "typed"))
    options = dict(location.storage_options)
    write_deltalake(uri, rows, mode="overwrite", storage_options=options)

    assert run_cli(mongodb_uri, mongo_db_name, "--against", "delta", "--tables", given) == 0
    assert f"{mongo_db_name}.typed: equal; rows: Delta table 60" in capsys.readouterr().out

    rows = with_cell(rows, "~n:3", "price", "3.100")
    write_deltalake(uri, rows, mode="overwrite", storage_options=options)
    # The emulator's URL form reaches the same tables.
    url = f"{azurite.blob_endpoint}/{container}/mirror/Tables"
    assert run_cli(mongodb_uri, mongo_db_name, "--against", "delta", "--tables", url) == 1
    out = capsys.readouterr().out
    assert "  - value differs: _id ~n:3, column price: Delta table '3.100', source " in out
