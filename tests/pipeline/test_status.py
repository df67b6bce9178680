"""Status for operators: the same report through `mongo-fabric-mirror status` and the engine,
read from the state store only, after a real snapshot, a change window and a rebuild."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.rebuild import rebuild_table
from shared.pipeline.status import format_status, record_error, status_report
from shared.state.sqlite import SqliteStateStore
from tests.fixtures.console import run_console as cli


def test_status_reports_progress_changes_rebuilds_and_errors(
    tmp_path: Path, mongodb_uri: str, mongo_client: MongoClient[dict[str, Any]], mongo_db_name: str
):
    items = mongo_client[mongo_db_name].items
    items.insert_many([{"_id": n, "n": n} for n in range(200)])
    mirror = [
        "--mongodb-uri",
        mongodb_uri,
        "--database",
        mongo_db_name,
        "--landing-zone",
        str(tmp_path / "lz"),
        "--state",
        str(tmp_path / "state.db"),
    ]
    assert cli("run", "--once", *mirror).returncode == 0
    items.insert_many([{"_id": 1000 + n} for n in range(5)])
    items.delete_one({"_id": 0})
    assert cli("run", "--once", *mirror).returncode == 0

    shown = cli("status", "--state", str(tmp_path / "state.db"))
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)  # not a terminal: JSON
    (table,) = report["tables"]
    assert table["table"] == f"{mongo_db_name}.items"
    assert table["phase"] == "streaming"
    assert table["snapshot"]["documents"] == 200
    assert table["change_events"] == 6
    assert table["rows_published"] == 206
    assert table["files_published"] == 2
    # Nothing processes the files here: both are still in the folder, counted by the reader.
    assert table["replicator_backlog"]["unprocessed_files"] == 2
    assert report["databases"][0]["window_growth"] == 1
    assert table["last_checkpoint"] is not None
    assert report["databases"][0]["database"] == mongo_db_name
    assert report["databases"][0]["reader_active"] is False  # released at exit

    state = SqliteStateStore(tmp_path / "state.db")
    from shared.landing_zone.publisher import Publisher

    publisher = Publisher(LocalStore(tmp_path / "lz"), state)
    rebuild_table(publisher, TableRef(mongo_db_name, "items"), "change history lost: test")
    record_error(state, mongo_db_name, "MongoDB unreachable")
    assert cli("run", "--once", *mirror).returncode == 0
    report = status_report(state)
    (table,) = report["tables"]
    assert table["rebuilds"] == 1
    assert table["rebuild_causes"][0]["cause"] == "change history lost: test"
    assert report["databases"][0]["last_error"]["error"] == "MongoDB unreachable"
    text = format_status(report)
    assert f"{mongo_db_name}.items" in text and "change history lost: test" in text
