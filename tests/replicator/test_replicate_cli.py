"""``mongo-fabric-mirror replicate`` between the mirror and ``verify --against delta``, end to end:
``run --once`` (a real process) publishes the snapshot and the changes, ``replicate --once``
applies them to Delta tables, and ``verify --against delta`` compares those with the source, on a
local folder and with the landing zone and the Delta tables in Azurite Blob."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    ResourceTypes,
    generate_account_sas,
)
from bson import Decimal128, ObjectId
from deltalake import DeltaTable
from pymongo import MongoClient
from pymongo.database import Database

from shared.cli import main
from shared.conversion.id_text import id_text
from shared.delta_tables import DeltaTables, parse_tables_to_write
from shared.landing_zone.stores import open_landing_zone
from shared.landing_zone.tables import (
    PROCESSED_FOLDER,
    READY_TO_DELETE_FOLDER,
    TableRef,
    published_files,
)
from tests.fixtures.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite
from tests.fixtures.console import run_console
from tests.pipeline.test_changes import MIXED_IDS


def varied_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for index, key in enumerate(MIXED_IDS):
        documents.append(
            {
                "_id": key,
                "n": index,
                "price": Decimal128(f"{index}.05"),
                "at": dt.datetime(2026, 3, 1, index % 24, tzinfo=dt.UTC),
                "nested": {"list": [index, {"deep": "x" * index}], "none": None},
                "odd name, with;{}()=": f"odd {index}",
                "blob": bytes([index % 256]) * 3,
                "later": None,  # null in every snapshot row: no column until a change sets it
            }
        )
    return documents


def seed(db: Database[dict[str, Any]]) -> None:
    db.things.insert_many(varied_documents())
    db.create_collection("empty")  # no file ever: Fabric would make no table of it
    # Fields null in every snapshot row: the snapshot's file has no column for them.
    db.sparse.insert_many([{"_id": n, "x": None, "y": None} for n in range(5)])


def change_varied(db: Any) -> None:
    things = db.things
    things.update_one({"_id": 1}, {"$set": {"n": "one"}})  # a type change: the twin column
    things.update_one({"_id": "key-2"}, {"$set": {"added": True}})  # a new column
    things.update_one({"_id": 3}, {"$unset": {"price": ""}})  # a column gone from one row
    # New columns in one change file: later, later__json (a document in an int64 column).
    things.update_one({"_id": 0}, {"$set": {"later": 5}})
    things.update_one({"_id": -1}, {"$set": {"later": {"a.b": [1]}}})
    things.delete_one({"_id": -2})
    things.delete_many({"n": {"$in": [20, 21]}})
    things.insert_one({"_id": ObjectId(), "n": 100, "nested": {"$odd": {"a.b": 1}}})
    things.replace_one({"_id": 4}, {"whole": "new"})
    # Four new columns in one change file, merged: x, x__json, y, y__json in that order.
    db.sparse.update_one({"_id": 1}, {"$set": {"x": 5, "y": "s"}})
    db.sparse.update_one({"_id": 2}, {"$set": {"x": "str", "y": {"a": 1}}})


def run_once(uri: str, database: str, landing: str, state: str) -> None:
    """``mongo-fabric-mirror run --once``: the snapshot, or the changes since its checkpoint."""
    mirror = ["--mongodb-uri", uri, "--database", database, "--landing-zone", landing]
    mirror += ["--state", state, "--workers", "1", "--change-await-ms", "50"]
    done = run_console("run", "--once", *mirror)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_verified(
    uri: str, database: str, tables: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verify", "--mongodb-uri", uri, "--database", database, "--against", "delta"]
    code = main([*argv, "--tables", tables])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert f"{database}.things: equal; rows: Delta table 30, source 30" in lines, out
    assert f"{database}.empty: equal; rows: Delta table 0, source 0" in lines, out
    assert f"{database}.sparse: equal; rows: Delta table 5, source 5" in lines, out
    assert lines[-1] == "verify: all 3 tables equal"


def test_replicate_makes_delta_tables_equal_to_the_source_in_a_local_folder(
    mongodb_uri: str,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = mongo_client[mongo_db_name]
    seed(db)
    landing, state = str(tmp_path / "lz"), str(tmp_path / "state.db")
    tables = str(tmp_path / "Tables")
    argv = ["replicate", "--landing-zone", landing, "--tables", tables, "--once"]
    argv += ["--ready-to-delete-every", "2"]
    run_once(mongodb_uri, mongo_db_name, landing, state)
    assert main(argv) == 0  # the snapshot's files: inserts, appended
    change_varied(db)
    run_once(mongodb_uri, mongo_db_name, landing, state)
    assert main(argv) == 0  # the change files: merged by key
    out = capsys.readouterr().out
    table = TableRef(db.name, "things")
    assert f"{table}: Replicating" in out
    assert_verified(mongodb_uri, mongo_db_name, tables, capsys)
    # Everything applied was moved out of the table folder; nothing is applied twice.
    files = published_files(open_landing_zone(landing), table).files
    assert len(files) >= 2 and all(
        stored.path.rsplit("/", 2)[-2] in (PROCESSED_FOLDER, READY_TO_DELETE_FOLDER)
        for stored in files.values()
    )
    assert any(READY_TO_DELETE_FOLDER in stored.path for stored in files.values())
    assert main(argv) == 0
    assert "applied 0 files" in capsys.readouterr().out
    assert_verified(mongodb_uri, mongo_db_name, tables, capsys)

    # A Delta table made wrong behind the replicator's back: verify --against delta says so.
    delta = DeltaTable(DeltaTables(parse_tables_to_write(tables)).uri(table))
    delta.update(updates={"n": "n + 1"}, predicate=f"_id = '{id_text(0)}'")
    delta.delete(f"_id = '{id_text('key-0')}'")
    argv = ["verify", "--mongodb-uri", mongodb_uri, "--database", mongo_db_name]
    assert main([*argv, "--against", "delta", "--tables", tables]) == 1
    out = capsys.readouterr().out
    assert f"{table}: DIFFERENT; rows: Delta table 29, source 30" in out, out
    assert f"  - value differs: _id {id_text(0)}, column n: Delta table 6, source 5" in out
    assert f"  - missing in the Delta table: _id {id_text('key-0')}" in out
    assert out.splitlines()[-1] == "verify: 1 of 3 tables differ"


def account_sas() -> str:
    """An account SAS of Azurite's account (Azure's "Create an account SAS"): the replicator's
    side store may create the container, which a container SAS cannot."""
    return generate_account_sas(
        ACCOUNT_NAME,
        ACCOUNT_KEY,
        ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )


@pytest.mark.parametrize("form", ["emulator URL", "SAS connection string"])
def test_replicate_through_azurite_blob_for_landing_zone_and_delta_tables(
    mongodb_uri: str,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db_name: str,
    azurite: Azurite,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    form: str,
) -> None:
    db = mongo_client[mongo_db_name]
    seed(db)
    container = f"lz{uuid.uuid4().hex[:12]}"
    landing = f"{azurite.connection_string}Container={container};Path=LandingZone"
    state = str(tmp_path / "state.db")
    tables = (
        f"{azurite.blob_endpoint}/{container}/Tables"
        if form == "emulator URL"
        else f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={account_sas()};"
        f"Container={container};Path=Tables"
    )
    argv = ["replicate", "--landing-zone", landing, "--tables", tables, "--once"]
    run_once(mongodb_uri, mongo_db_name, landing, state)
    assert main(argv) == 0
    change_varied(db)
    run_once(mongodb_uri, mongo_db_name, landing, state)
    assert main(argv) == 0
    assert_verified(mongodb_uri, mongo_db_name, tables, capsys)


def test_tables_it_cannot_write_are_a_clear_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What --tables accepts is tests/test_delta_tables.py's; here, that replicate says so."""
    landing = tmp_path / "lz"
    landing.mkdir()
    onelake = "https://onelake.dfs.fabric.microsoft.com/ws/db.MountedRelationalDatabase/Tables"
    argv = ["replicate", "--landing-zone", str(landing), "--tables", onelake, "--once"]
    assert main(argv) == 2
    assert "--tables: Delta tables can be written to a local folder" in capsys.readouterr().err


def test_tables_that_is_a_file_and_a_missing_landing_zone_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    (tmp_path / "lz").mkdir()
    assert main(["replicate", "--landing-zone", str(tmp_path / "lz"), "--tables", str(afile)]) == 2
    error = capsys.readouterr().err
    assert "--tables: " in error and "is a file" in error
    missing = ["replicate", "--landing-zone", str(tmp_path / "nope"), "--tables", str(tmp_path)]
    assert main([*missing, "--once"]) == 2
    assert "LANDING_ZONE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["replicate", "--landing-zone", str(tmp_path / "lz"), "--once"])
    assert exit_info.value.code == 2
    assert "--tables" in capsys.readouterr().err
    bad_every = ["replicate", "--landing-zone", str(tmp_path / "lz"), "--tables", str(tmp_path)]
    assert main([*bad_every, "--once", "--ready-to-delete-every", "0"]) == 2
    assert "--ready-to-delete-every" in capsys.readouterr().err
