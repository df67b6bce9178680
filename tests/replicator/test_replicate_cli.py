"""``mongo-fabric-mirror replicate``: the mirror's files to Delta tables, locally and in Azurite."""

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
from pymongo import MongoClient

from shared.cli import main
from shared.delta_tables import parse_tables_to_write
from shared.landing_zone.replayer import TableReport
from shared.landing_zone.tables import (
    PROCESSED_FOLDER,
    READY_TO_DELETE_FOLDER,
    TableRef,
    published_files,
)
from shared.pipeline.verify import compare_table, format_table
from shared.replicator.engine import read_delta_table
from tests.fixtures.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite
from tests.pipeline.in_process import MakeContext, drain, streaming
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
            }
        )
    return documents


def change_varied(db: Any) -> None:
    things = db.things
    things.update_one({"_id": 1}, {"$set": {"n": "one"}})  # a type change: the twin column
    things.update_one({"_id": "key-2"}, {"$set": {"added": True}})  # a new column
    things.update_one({"_id": 3}, {"$unset": {"price": ""}})  # a column gone from one row
    things.delete_one({"_id": -2})
    things.delete_many({"n": {"$in": [20, 21]}})
    things.insert_one({"_id": ObjectId(), "n": 100, "nested": {"$odd": {"a.b": 1}}})
    things.replace_one({"_id": 4}, {"whole": "new"})


def assert_delta_equals_source(tables_location: str, table: TableRef, collection: Any) -> None:
    """The Delta table, read back with deltalake, compared value by value with the collection."""
    rows = read_delta_table(parse_tables_to_write(tables_location), table)
    result = compare_table(TableReport(table, rows=rows), collection)
    assert result.equal, format_table(result)
    assert result.source_rows == collection.count_documents({}) > 0


def test_replicate_makes_delta_tables_equal_to_the_source_in_a_local_folder(
    make_context: MakeContext,
    mongo_client: MongoClient[dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ctx = make_context()
    db, reader = streaming(ctx, mongo_client, things=varied_documents())
    landing = ctx.settings.require("LANDING_ZONE")
    tables = str(tmp_path / "Tables")
    argv = ["replicate", "--landing-zone", landing, "--tables", tables, "--once"]
    argv += ["--ready-to-delete-every", "2"]
    assert main(argv) == 0
    change_varied(db)
    drain(reader)
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = TableRef(db.name, "things")
    assert f"{table}: Replicating" in out
    assert_delta_equals_source(tables, table, db.things)
    # Everything applied was moved out of the table folder; nothing is applied twice.
    files = published_files(ctx.publisher.store, table).files
    assert files and all(
        stored.path.rsplit("/", 2)[-2] in (PROCESSED_FOLDER, READY_TO_DELETE_FOLDER)
        for stored in files.values()
    )
    assert any(READY_TO_DELETE_FOLDER in stored.path for stored in files.values())
    assert main(argv) == 0
    assert "applied 0 files" in capsys.readouterr().out
    assert_delta_equals_source(tables, table, db.things)
    reader.release()


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
    make_context: MakeContext,
    mongo_client: MongoClient[dict[str, Any]],
    azurite: Azurite,
    form: str,
) -> None:
    container = f"lz{uuid.uuid4().hex[:12]}"
    landing = f"{azurite.connection_string}Container={container};Path=LandingZone"
    ctx = make_context(LANDING_ZONE=landing)
    db, reader = streaming(ctx, mongo_client, things=varied_documents())
    change_varied(db)
    drain(reader)
    tables = (
        f"{azurite.blob_endpoint}/{container}/Tables"
        if form == "emulator URL"
        else f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={account_sas()};"
        f"Container={container};Path=Tables"
    )
    assert main(["replicate", "--landing-zone", landing, "--tables", tables, "--once"]) == 0
    assert_delta_equals_source(tables, TableRef(db.name, "things"), db.things)
    reader.release()


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
