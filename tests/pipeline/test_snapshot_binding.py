"""The state store and the landing zone belong together: the `snapshot` command, as a real
process against the sandbox, refuses every pairing that would silently lose rows, and the
documented `resync` rebuilds the table. Also: many small partitions on two workers never trip
over each other's in-flight publishes, on a local folder and on Azurite."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared.landing_zone import stores
from shared.landing_zone.tables import TableRef
from shared.state import open_state_store
from tests.fixtures.console import run_console as cli
from tests.pipeline.mirror_checks import assert_mirrors, rows_in_files


def snapshot(uri: str, database: str, landing_zone: str, state: str, *extra: str):
    return cli(
        "snapshot",
        "--mongodb-uri",
        uri,
        "--database",
        database,
        "--landing-zone",
        landing_zone,
        "--state",
        state,
        *extra,
    )


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def source(mongo_client: MongoClient[dict[str, Any]], mongo_db_name: str) -> str:
    mongo_client[mongo_db_name].items.insert_many([{"_id": n, "n": n} for n in range(300)])
    return mongo_db_name


def change_source(client: MongoClient[dict[str, Any]], database: str) -> None:
    items = client[database].items
    items.insert_many([{"_id": 1000 + n, "n": n} for n in range(50)])
    items.delete_many({"_id": {"$lt": 20}})


def test_a_fresh_state_store_on_a_used_landing_zone_fails_and_writes_nothing(
    tmp_path: Path, mongodb_uri: str, mongo_client: MongoClient[dict[str, Any]], source: str
):
    lz = tmp_path / "lz"
    first = snapshot(mongodb_uri, source, str(lz), str(tmp_path / "a.db"))
    assert first.returncode == 0, first.stderr
    change_source(mongo_client, source)
    before = folder_bytes(lz)

    second = snapshot(mongodb_uri, source, str(lz), str(tmp_path / "b.db"))

    assert second.returncode == 1
    assert "another state store" in second.stderr
    assert f"resync --table {source}.items" in second.stderr
    assert "Traceback" not in second.stderr
    assert folder_bytes(lz) == before


def test_a_used_state_store_on_a_new_landing_zone_fails(
    tmp_path: Path, mongodb_uri: str, source: str
):
    state = str(tmp_path / "state.db")
    assert snapshot(mongodb_uri, source, str(tmp_path / "lz"), state).returncode == 0

    moved = snapshot(mongodb_uri, source, str(tmp_path / "elsewhere"), state)

    assert moved.returncode == 1
    assert "not the landing zone that state belongs to" in moved.stderr
    assert not list((tmp_path / "elsewhere").rglob("*.parquet"))


def test_resync_rebuilds_a_table_the_state_does_not_own(
    tmp_path: Path, mongodb_uri: str, mongo_client: MongoClient[dict[str, Any]], source: str
):
    lz = tmp_path / "lz"
    assert snapshot(mongodb_uri, source, str(lz), str(tmp_path / "a.db")).returncode == 0
    change_source(mongo_client, source)

    state = str(tmp_path / "b.db")
    resynced = cli(
        "resync", "--table", f"{source}.items", "--landing-zone", str(lz), "--state", state
    )
    assert resynced.returncode == 0, resynced.stderr
    again = snapshot(mongodb_uri, source, str(lz), state)
    assert again.returncode == 0, again.stderr

    store = stores.open_landing_zone(str(lz))
    table = TableRef(source, "items")
    assert rows_in_files(store, table) == 330
    assert_mirrors(store, open_state_store(state), table, mongo_client[source].items)


@pytest.mark.parametrize("backend", ["local", "azurite"])
def test_many_small_partitions_on_two_workers_never_collide(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    mongodb_uri: str,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db_name: str,
    backend: str,
):
    mongo_client[mongo_db_name].orders.insert_many(
        [{"_id": n, "qty": n % 7, "sku": f"s{n % 50}"} for n in range(40_000)]
    )
    if backend == "local":
        landing_zone, state = str(tmp_path / "lz"), str(tmp_path / "state.db")
    else:
        azurite = request.getfixturevalue("azurite")
        unique = uuid.uuid4().hex[:10]
        landing_zone = f"{azurite.connection_string};Container=race{unique}"
        state = f"{azurite.connection_string};TableName=race{unique}"

    result = snapshot(
        mongodb_uri,
        mongo_db_name,
        landing_zone,
        state,
        "--workers",
        "2",
        "--partitions",
        "64",
        "--file-rows",
        "2000",
    )

    assert result.returncode == 0, result.stderr
    assert "crashed publish" not in result.stderr  # no live publish taken for a dead one
    store = stores.open_landing_zone(landing_zone)
    table = TableRef(mongo_db_name, "orders")
    assert rows_in_files(store, table) == 40_000
    assert_mirrors(store, open_state_store(state), table, mongo_client[mongo_db_name].orders)
