"""``mongo-fabric-mirror fabric ...`` end to end against the HTTPS double (Fabric cannot run here).

In-process, so the app's credential can be a fake (no Entra here): ``AzureAuth.credential`` is
replaced for the test. The production transport is used unchanged; it trusts the double's
certificate through ``REQUESTS_CA_BUNDLE``, as requests does for any private CA.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.cli import main
from shared.config import AzureAuth, load_settings
from shared.delta_tables import parse_tables_to_write
from shared.fabric import fabric_table_status
from shared.fabric.mirroring import flatten_table_status
from shared.landing_zone.stores import LocalStore, parse_landing_zone
from shared.landing_zone.tables import TableRef
from shared.replicator.engine import Replicator
from tests.fabric.fake_fabric import ONELAKE_HOST, FakeCredential, FakeFabric

WORKSPACE = str(uuid.uuid4())


@pytest.fixture
def fabric_cli(fake_fabric: FakeFabric, monkeypatch: pytest.MonkeyPatch) -> FakeFabric:
    for name in ("FABRIC_WORKSPACE_ID", "FABRIC_ITEM_ID", "FABRIC_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake_fabric.ca_path)
    monkeypatch.setattr(AzureAuth, "credential", lambda self: FakeCredential())
    return fake_fabric


def fabric(fake: FakeFabric, *args: str) -> int:
    return main(["fabric", *args, "--fabric-api-url", fake.api_url])


def test_create_waits_for_the_item_starts_mirroring_and_prints_the_landing_zone(
    fabric_cli: FakeFabric, capsys: pytest.CaptureFixture[str]
):
    assert fabric(fabric_cli, "create", "--workspace", WORKSPACE, "--name", "orders_mirror") == 0

    (item,) = fabric_cli.items.values()
    assert item.status == "Running"
    assert item.mirroring["properties"]["source"]["type"] == "GenericMirror"
    assert len(fabric_cli.requests_to("/result")) == 1
    assert len(fabric_cli.requests_to("/startMirroring")) == 1
    landing_zone = f"{ONELAKE_HOST}/{WORKSPACE}/{item.item_id}/Files/LandingZone"
    assert capsys.readouterr().out.splitlines() == [
        "mirrored database 'orders_mirror' created and mirroring started",
        f"LANDING_ZONE={landing_zone}",
        f"FABRIC_WORKSPACE_ID={WORKSPACE}",
        f"FABRIC_ITEM_ID={item.item_id}",
    ]
    # What we print is what LANDING_ZONE accepts: the item's Files/LandingZone on OneLake.
    location = parse_landing_zone(landing_zone)
    assert location.is_onelake
    assert location.filesystem == WORKSPACE
    assert location.base_path == f"{item.item_id}/Files/LandingZone"


def test_stop_then_start(fabric_cli: FakeFabric, capsys: pytest.CaptureFixture[str]):
    item_id = fabric_cli.add_item(WORKSPACE, "orders_mirror", [])
    assert fabric(fabric_cli, "stop", "--workspace", WORKSPACE, "--item", item_id) == 0
    assert fabric_cli.items[item_id].status == "Stopped"
    assert fabric(fabric_cli, "start", "--workspace", WORKSPACE, "--item", item_id) == 0
    assert fabric_cli.items[item_id].status == "Running"
    out = capsys.readouterr().out
    assert "mirroring started for 'orders_mirror'" in out
    assert f"LANDING_ZONE={ONELAKE_HOST}/{WORKSPACE}/{item_id}/Files/LandingZone" in out


def test_status_prints_every_page_of_table_state_as_json(
    fabric_cli: FakeFabric, capsys: pytest.CaptureFixture[str]
):
    tables = [_table(f"c{n}", n) for n in range(5)]
    item_id = fabric_cli.add_item(WORKSPACE, "orders_mirror", tables)
    fabric_cli.page_size = 2

    assert fabric(fabric_cli, "status", "--workspace", WORKSPACE, "--item", item_id) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["mirroring"] == {"status": "Running"}
    assert report["landingZone"] == f"{ONELAKE_HOST}/{WORKSPACE}/{item_id}/Files/LandingZone"
    assert [t["table"] for t in report["tables"]] == [f"demo.c{n}" for n in range(5)]
    assert report["tables"][3] == {
        "table": "demo.c3",
        "sourceSchemaName": "demo",
        "sourceTableName": "c3",
        "status": "Replicating",
        "processedRows": 300,
        "processedBytes": 3000,
        "lastSyncDateTime": "2025-01-02T03:04:05Z",
        "lastSyncLatencyInSeconds": 3,
        "error": None,
    }
    pages = fabric_cli.requests_to("/getTablesMirroringStatus")
    assert [r.query.get("continuationToken") for r in pages] == [None, "2", "4"]


def test_fabric_table_status_for_the_status_command(fabric_cli: FakeFabric):
    failed = {**_table("broken", 0), "status": "Failed"}
    failed["error"] = {"errorCode": "SchemaMergeFailure", "message": "type changed"}
    item_id = fabric_cli.add_item(WORKSPACE, "db", [_table("orders", 7), failed])
    settings = load_settings(
        {
            "FABRIC_WORKSPACE_ID": WORKSPACE,
            "FABRIC_ITEM_ID": item_id,
            "FABRIC_API_URL": fabric_cli.api_url,
        }
    )
    status = fabric_table_status(settings)
    assert status is not None
    assert [(t["table"], t["status"], t["processedRows"]) for t in status] == [
        ("demo.orders", "Replicating", 700),
        ("demo.broken", "Failed", 0),
    ]
    assert status[1]["error"] == "SchemaMergeFailure: type changed"
    assert fabric_table_status(load_settings({"FABRIC_API_URL": fabric_cli.api_url})) is None


def test_table_status_is_served_from_the_replicator_double(fabric_cli: FakeFabric, tmp_path: Path):
    landing = LocalStore(tmp_path / "lz")
    good, broken = TableRef("demo", "orders"), TableRef("demo", "broken")
    for table, files in ((good, [[1, 2], [3]]), (broken, [[1], ["one"]])):
        landing.write_new(table.metadata_file, json.dumps({"keyColumns": ["_id"]}).encode())
        for number, values in enumerate(files, start=1):
            rows = pa.table({"_id": [str(v) for v in values], "v": values})
            buffer = io.BytesIO()
            pq.write_table(rows, buffer)
            landing.write_new(table.data_file(number), buffer.getvalue())
    replicator = Replicator(landing, parse_tables_to_write(str(tmp_path / "Tables")))
    item_id = fabric_cli.add_item(WORKSPACE, "db", [], replicator=replicator)
    settings = load_settings(
        {
            "FABRIC_WORKSPACE_ID": WORKSPACE,
            "FABRIC_ITEM_ID": item_id,
            "FABRIC_API_URL": fabric_cli.api_url,
        }
    )
    assert fabric_table_status(settings) == []  # nothing replicated yet
    replicator.run_once()
    status = {entry["table"]: entry for entry in fabric_table_status(settings) or []}
    assert (status["demo.orders"]["status"], status["demo.orders"]["processedRows"]) == (
        "Replicating",
        3,
    )
    assert status["demo.orders"]["lastSyncDateTime"].endswith("Z")
    assert status["demo.broken"]["status"] == "Failed"
    assert status["demo.broken"]["processedRows"] == 1
    assert status["demo.broken"]["error"].startswith("ColumnTypeChanged: column v changes type")


def test_a_missing_workspace_role_is_one_line_and_exit_1(
    fabric_cli: FakeFabric, capsys: pytest.CaptureFixture[str]
):
    fabric_cli.denied_workspaces.add(WORKSPACE)
    assert fabric(fabric_cli, "create", "--workspace", WORKSPACE, "--name", "orders_mirror") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(
        f"error: create mirrored database 'orders_mirror' in workspace {WORKSPACE}"
    )
    assert "HTTP 403 InsufficientPrivileges" in line
    assert "Contributor role (or higher) on the Fabric workspace" in line
    assert fabric_cli.items == {}


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["start", "--workspace", "not-a-guid", "--item", WORKSPACE], "FABRIC_WORKSPACE_ID"),
        (["status", "--workspace", WORKSPACE, "--item", "1234"], "FABRIC_ITEM_ID"),
        (["stop", "--workspace", WORKSPACE], "FABRIC_ITEM_ID"),
        (["create", "--workspace", WORKSPACE], "--name"),
        (["create", "--name", "x"], "FABRIC_WORKSPACE_ID"),
    ],
)
def test_a_bad_or_missing_id_is_exit_2_naming_it(
    fabric_cli: FakeFabric, capsys: pytest.CaptureFixture[str], args: list[str], setting: str
):
    assert fabric(fabric_cli, *args) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"configuration error: {setting}")
    assert fabric_cli.requests == []


@pytest.mark.parametrize(
    "url", ["http://api.fabric.microsoft.com/v1", "https://", "https://h/v1?x=1", "https://[::1"]
)
def test_the_api_url_must_be_https(fabric_cli: FakeFabric, capsys, url: str):
    args = ["fabric", "stop", "--workspace", WORKSPACE, "--item", WORKSPACE, "--fabric-api-url"]
    assert main([*args, url]) == 2
    assert capsys.readouterr().err.startswith("configuration error: FABRIC_API_URL")


def _table(name: str, n: int) -> dict[str, object]:
    return {
        "sourceObjectType": "Table",
        "sourceSchemaName": "demo",
        "sourceTableName": name,
        "status": "Replicating",
        "metrics": {
            "processedBytes": n * 1000,
            "processedRows": n * 100,
            "lastSyncDateTime": "2025-01-02T03:04:05Z",
            "lastSyncLatencyInSeconds": n,
        },
    }


def test_table_status_reads_the_metrics_the_rest_spec_defines():
    # microsoft/fabric-rest-api-specs, mirroredDatabase/examples/GetTablesMirroringStatus.json:
    # lastSyncLatencyInSeconds is optional (not returned when Fabric has no source commit time).
    example = {
        "sourceSchemaName": "dbo",
        "sourceTableName": "test",
        "status": "Replicating",
        "metrics": {
            "processedBytes": 1247,
            "processedRows": 6,
            "lastSyncDateTime": "2024-10-08T05:07:11.0663362Z",
        },
    }
    flat = flatten_table_status(example)
    assert (flat["processedRows"], flat["processedBytes"]) == (6, 1247)
    assert flat["lastSyncDateTime"] == "2024-10-08T05:07:11.0663362Z"
    assert flat["lastSyncLatencyInSeconds"] is None  # not reported, not a fault
    with_latency = {**example, "metrics": {**example["metrics"], "lastSyncLatencyInSeconds": 15}}
    assert flatten_table_status(with_latency)["lastSyncLatencyInSeconds"] == 15
