"""``_partnerEvents.json`` names the mirror's version and the MongoDB server's.

Microsoft's open-mirroring landing-zone format recommends the file once at the landing-zone root:
``partnerName`` and ``sourceInfo`` (``sourceType``, ``sourceVersion``, a free-form
``additionalInformation``). The source version is what the server's ``buildInfo`` reports.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pymongo import MongoClient

from shared.config import load_settings
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import PARTNER_EVENTS_FILE, TableRef
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.wiring import open_context
from shared.state.sqlite import SqliteStateStore

ROOT = Path(__file__).resolve().parents[2]
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def partner_file(landing_zone: Path) -> dict:
    return json.loads((landing_zone / PARTNER_EVENTS_FILE).read_text())


def test_planning_writes_the_mirror_and_server_versions(
    tmp_path: Path, mongodb_uri: str, mongo_client: MongoClient, mongo_db_name: str
):
    mongo_client[mongo_db_name].orders.insert_one({"_id": 1})
    settings = load_settings(
        {
            "MONGODB_URI": mongodb_uri,
            "MONGODB_DATABASE": mongo_db_name,
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": str(tmp_path / "state.db"),
        }
    )
    ctx = open_context(settings)
    try:
        plan_selected(ctx)
    finally:
        ctx.close()
    server_version = mongo_client.admin.command("buildInfo")["version"]
    assert partner_file(tmp_path / "lz") == {
        "partnerName": "mongo-fabric-mirror",
        "sourceInfo": {
            "sourceType": "MongoDB",
            "sourceVersion": server_version,
            "additionalInformation": {"mirrorVersion": PROJECT_VERSION},
        },
    }
    assert server_version != "unknown"


def test_a_process_that_knows_the_versions_updates_the_file_and_one_that_does_not_leaves_it(
    tmp_path: Path,
):
    landing_zone = tmp_path / "lz"
    state = SqliteStateStore(tmp_path / "state.db")
    old = {
        "partnerName": "mongo-fabric-mirror",
        "sourceInfo": {
            "sourceType": "MongoDB",
            "sourceVersion": "7.0.2",
            "additionalInformation": {"mirrorVersion": "0.0.9"},
        },
    }
    landing_zone.mkdir()
    (landing_zone / PARTNER_EVENTS_FILE).write_text(json.dumps(old))

    # Not told the server's version (e.g. a worker that only ran partitions): the file stays.
    unaware = Publisher(LocalStore(landing_zone), state)
    unaware.prepare_table(TableRef("db", "a"))
    assert partner_file(landing_zone) == old

    # Told it: the file is brought up to date (a new mirror release, an upgraded server).
    aware = Publisher(LocalStore(landing_zone), state)
    aware.describe_source("8.0.4")
    aware.prepare_table(TableRef("db", "b"))
    written = partner_file(landing_zone)["sourceInfo"]
    assert written["sourceVersion"] == "8.0.4"
    assert written["additionalInformation"] == {"mirrorVersion": PROJECT_VERSION}

    # Once per process: a second table does not write it again.
    (landing_zone / PARTNER_EVENTS_FILE).write_text("left alone")
    aware.prepare_table(TableRef("db", "c"))
    assert (landing_zone / PARTNER_EVENTS_FILE).read_text() == "left alone"
    state.close()
