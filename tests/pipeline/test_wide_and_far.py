"""Issue #16 items 18 and 20, mirrored end to end: a table past its column budget
(COLUMN_BUDGET, the ``__overflow__`` column) and dates outside years 1 to 9999 (the twin
column), through a snapshot and change windows, ending with ``verify`` equal."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from bson.datetime_ms import DatetimeMS
from deltalake import write_deltalake
from pymongo import MongoClient

from shared.conversion import OVERFLOW_COLUMN
from shared.conversion.id_text import id_text
from shared.delta_tables import DeltaTables, parse_tables_location
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.tables import TableRef
from shared.pipeline.status import format_status, status_report
from shared.pipeline.verify import VALUE, format_report, verify_delta, verify_mirror
from tests.fixtures.console import run_console
from tests.pipeline.in_process import MakeContext, assert_verified, drain, streaming
from tests.pipeline.test_changes import change_files

BUDGET = 40
YEAR_10000 = DatetimeMS(253_402_300_800_000)  # 10000-01-01T00:00:00Z
YEAR_0 = DatetimeMS(-62_135_596_800_001)  # a millisecond before 0001-01-01
LAST = DatetimeMS(253_402_300_799_999)  # 9999-12-31T23:59:59.999Z


def test_an_update_adding_5000_fields_stays_within_the_column_budget_and_verifies_equal(
    tmp_path: Path, make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context(COLUMN_BUDGET=str(BUDGET))
    db, reader = streaming(ctx, mongo_client, things=[{"_id": i, "v": i} for i in range(5)])
    db.things.update_one({"_id": 1}, {"$set": {f"f{i}": i for i in range(5000)}})
    drain(reader)
    db.things.update_one({"_id": 2}, {"$set": {"v": "two", "late": True}})  # no room for a twin
    db.things.insert_one({"_id": 7, "v": 7, "f4999": "seven"})
    drain(reader)

    table = TableRef(db.name, "things")
    files = change_files(ctx.publisher.store, table)
    assert files and all(rows.num_columns <= BUDGET for rows in files)
    assert OVERFLOW_COLUMN in files[-1].column_names
    report = inspect_table(ctx.publisher.store, table)
    assert report.conforms and report.rows is not None
    rows = {row["_id"]: row for row in report.rows.to_pylist()}
    wide = json.loads(rows[id_text(1)][OVERFLOW_COLUMN])
    assert len(wide) == 5000 - (BUDGET - 4) and wide["f4999"] == 4999
    assert json.loads(rows[id_text(2)][OVERFLOW_COLUMN]) == {"v": "two", "late": True}
    assert_verified(ctx)
    # The replicator sees one more string column: the Delta table users query verifies equal.
    tables = tmp_path / "Tables"
    write_deltalake(str(tables / db.name / "things"), report.rows)
    location, _ = parse_tables_location(str(tables))
    assert verify_delta(DeltaTables(location), db, None).equal

    # verify reads the overflow column by value: a change it has not seen is found there.
    db.things.update_one({"_id": 1}, {"$set": {"f4000": "changed"}})
    stale = verify_mirror(ctx.publisher.store, db, None)
    assert not stale.equal
    [result] = stale.tables
    [difference] = result.differences
    assert difference.kind == VALUE and difference.column == OVERFLOW_COLUMN
    assert difference.field == "f4000", format_report(stale)

    # status names the overflow column: in the engine's report and the command's output.
    [entry] = status_report(ctx.state)["tables"]
    assert entry["overflow_column"] == OVERFLOW_COLUMN and entry["columns"] == BUDGET
    assert f"{OVERFLOW_COLUMN}" in format_status(status_report(ctx.state))
    shown = run_console("status", "--state", str(tmp_path / "state.db"))
    assert shown.returncode == 0, shown.stderr
    [listed] = json.loads(shown.stdout)["tables"]
    assert listed["overflow_column"] == OVERFLOW_COLUMN


def test_dates_past_year_9999_or_before_year_1_keep_to_the_twin_and_read_in_pandas(
    make_context: MakeContext, mongo_client: MongoClient
):
    ctx = make_context()
    first = [{"_id": 1, "at": LAST}, {"_id": 2, "at": YEAR_10000}, {"_id": 3, "at": YEAR_0}]
    db, reader = streaming(ctx, mongo_client, events=first)
    db.events.insert_one({"_id": 4, "at": YEAR_10000})
    db.events.update_one({"_id": 1}, {"$set": {"at": DatetimeMS(-(2**62))}})
    db.events.insert_one({"_id": 5, "at": DatetimeMS(0)})
    drain(reader)

    report = inspect_table(ctx.publisher.store, TableRef(db.name, "events"))
    assert report.conforms and report.rows is not None
    rows = report.rows.sort_by("_id")
    # Common readers take the table as it is: no date outside datetime's years in it.
    by_id = {row["_id"]: row for row in rows.to_pylist()}
    assert by_id[id_text(5)]["at"] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for key in (1, 2, 3, 4):
        assert by_id[id_text(key)]["at"] is None and by_id[id_text(key)]["at__json"]
    assert rows.to_pandas()["at"].isna().sum() == 4
    assert_verified(ctx)
