"""Collections whose names cannot name a folder as they are, through every command as a process.

One mapping (``shared.landing_zone.tables``): a user names a table ``<database>.<collection>``
with the collection's own name, in every command; the folder name is derived from it, never
taken as input. Commands show the collection's name, and the folder where it differs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared.landing_zone.tables import collection_folder
from tests.fixtures.console import run_console

Client = MongoClient[dict[str, Any]]
ESCAPED = ["_tmp", "a/b c"]  # mirrored as %5Ftmp and a%2Fb c


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_console(*args, cwd=cwd, timeout=120)


def mirror(cwd: Path, uri: str, database: str, *extra: str) -> None:
    result = run(
        "snapshot",
        "--mongodb-uri",
        uri,
        "--database",
        database,
        "--landing-zone",
        "lz",
        "--state",
        "state.db",
        "--workers",
        "1",
        *extra,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr


def folders(cwd: Path, database: str) -> list[str]:
    return sorted(path.name for path in (cwd / "lz" / f"{database}.schema").iterdir())


@pytest.fixture
def escaped(tmp_path: Path, mongodb_uri: str, mongo_client: Client, mongo_db_name: str) -> str:
    db = mongo_client[mongo_db_name]
    db.customers.insert_many([{"_id": i} for i in range(3)])
    for name in ESCAPED:
        db[name].insert_many([{"_id": f"{name}-{i}", "n": i} for i in range(2)])
    mirror(tmp_path, mongodb_uri, mongo_db_name)
    assert folders(tmp_path, mongo_db_name) == ["%5Ftmp", "a%2Fb c", "customers"]
    return mongo_db_name


def verify(cwd: Path, uri: str, database: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        "verify",
        "--mongodb-uri",
        uri,
        "--database",
        database,
        "--landing-zone",
        "lz",
        *extra,
        cwd=cwd,
    )


def test_verify_compares_collections_whose_names_are_escaped(
    tmp_path: Path, mongodb_uri: str, escaped: str
):
    result = verify(tmp_path, mongodb_uri, escaped)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{escaped}._tmp (folder %5Ftmp): equal; rows: landing zone 2, source 2",
        f"{escaped}.a/b c (folder a%2Fb c): equal; rows: landing zone 2, source 2",
        f"{escaped}.customers: equal; rows: landing zone 3, source 3",
        "verify: all 3 tables equal",
    ]


def test_verify_of_a_selection_leaves_unselected_escaped_collections_alone(
    tmp_path: Path, mongodb_uri: str, escaped: str
):
    result = verify(tmp_path, mongodb_uri, escaped, "--collections", "customers")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{escaped}.customers: equal; rows: landing zone 3, source 3",
        "verify: all 1 tables equal",
    ]
    by_name = verify(tmp_path, mongodb_uri, escaped, "--collections", "_tmp,a/b c")
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr
    assert by_name.stdout.splitlines()[-1] == "verify: all 2 tables equal"


def test_verify_flags_a_folder_whose_collection_is_gone_by_the_collection_name(
    tmp_path: Path, mongodb_uri: str, escaped: str, mongo_client: Client
):
    mongo_client[escaped].drop_collection("_tmp")
    result = verify(tmp_path, mongodb_uri, escaped)
    assert result.returncode == 1
    assert f"{escaped}._tmp (folder %5Ftmp): DIFFERENT" in result.stdout
    assert f"  - no selected collection {escaped}._tmp maps to it" in result.stdout


@pytest.fixture
def look_alike(tmp_path: Path, mongodb_uri: str, mongo_client: Client, mongo_db_name: str) -> str:
    """``_tmp`` (folder ``%5Ftmp``) beside a collection literally named ``%5Ftmp``."""
    db = mongo_client[mongo_db_name]
    db["_tmp"].insert_one({"_id": "underscore"})
    db["%5Ftmp"].insert_many([{"_id": "literal"}, {"_id": "percent"}])
    mirror(tmp_path, mongodb_uri, mongo_db_name)
    assert folders(tmp_path, mongo_db_name) == ["%255Ftmp", "%5Ftmp"]
    return mongo_db_name


def resync(cwd: Path, table: str) -> subprocess.CompletedProcess[str]:
    return run("resync", "--table", table, "--landing-zone", "lz", "--state", "state.db", cwd=cwd)


def test_resync_takes_the_collection_name_never_a_folder_name(tmp_path: Path, look_alike: str):
    literal = resync(tmp_path, f"{look_alike}.%5Ftmp")
    assert literal.returncode == 0, literal.stderr
    assert literal.stdout.startswith(
        f"{look_alike}.%5Ftmp (folder %255Ftmp): folder and state dropped (rebuild #1)"
    )
    assert folders(tmp_path, look_alike) == ["%5Ftmp"]  # _tmp's folder is untouched

    underscore = resync(tmp_path, f"{look_alike}._tmp")
    assert underscore.returncode == 0, underscore.stderr
    assert underscore.stdout.startswith(f"{look_alike}._tmp (folder %5Ftmp): folder and state")
    assert not (tmp_path / "lz" / f"{look_alike}.schema" / "%5Ftmp").exists()


def test_inspect_takes_the_collection_name_never_a_folder_name(tmp_path: Path, look_alike: str):
    for table, shown, rows in [
        ("%5Ftmp", "%5Ftmp (folder %255Ftmp)", 2),
        (f"{look_alike}.%5Ftmp", "%5Ftmp (folder %255Ftmp)", 2),
        ("_tmp", "_tmp (folder %5Ftmp)", 1),
        (f"{look_alike}._tmp", "_tmp (folder %5Ftmp)", 1),
    ]:
        result = run("inspect", "--landing-zone", "lz", "--table", table, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"{look_alike}.{shown}: conforms; 1 files, {rows} rows replayed"
        ]


def test_status_names_each_table_by_its_collection(tmp_path: Path, look_alike: str):
    result = run("status", "--state", "state.db", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tables = {table["collection"]: table["table"] for table in json.loads(result.stdout)["tables"]}
    # "table" is the table as Fabric names it (its folder), "collection" as MongoDB does.
    assert tables == {"_tmp": f"{look_alike}.%5Ftmp", "%5Ftmp": f"{look_alike}.%255Ftmp"}
    assert collection_folder("%5Ftmp") == "%255Ftmp"


def test_a_relative_state_path_is_recorded_absolute_in_the_binding(
    tmp_path: Path, mongodb_uri: str, mongo_client: Client, mongo_db_name: str
):
    mongo_client[mongo_db_name].orders.insert_one({"_id": 1})
    mirror(tmp_path, mongodb_uri, mongo_db_name)
    binding = tmp_path / "lz" / f"{mongo_db_name}.schema" / "orders" / "_mirror-binding.json"
    recorded = json.loads(binding.read_text())["stateStore"]
    assert recorded == f"SQLite file {tmp_path / 'state.db'}"
