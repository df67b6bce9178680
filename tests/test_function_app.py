"""The Functions front door, called through ``app.get_functions()``.

The Functions host (func start) cannot be installed here, so the registered functions are invoked
directly with real ``azure.functions`` request objects: a stand-in for the host only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import azure.functions as func
import bson
import pytest

from shared.conversion import BatchConverter, RowMarker, key_only
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.demo import sample_orders
from shared.state.sqlite import SqliteStateStore
from tests.function_host import FUNCTIONS


def function(name: str):
    return FUNCTIONS[name]


def get(route: str, **params: str) -> func.HttpRequest:
    return func.HttpRequest("GET", f"http://localhost/api/{route}", params=params, body=b"")


TABLE = TableRef("demo", "orders")


@pytest.fixture
def landing_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LANDING_ZONE", str(tmp_path / "lz"))
    monkeypatch.setenv("STATE_STORE", str(tmp_path / "state.db"))
    state = SqliteStateStore(tmp_path / "state.db")
    publisher = Publisher(LocalStore(tmp_path / "lz"), state)
    publisher.prepare_table(TABLE)
    owner, _ = publisher.claim(TABLE, "test")
    converter = BatchConverter()
    documents = [bson.encode(document) for document in sample_orders(50)]
    for start in range(0, 50, 20):
        batch = converter.convert(documents[start : start + 20])
        publisher.publish(TABLE, batch, "test", {"batches": start // 20 + 1}, owner)
    deleted = converter.convert_rows([key_only(documents[0])], [RowMarker.DELETE])
    publisher.publish(TABLE, deleted, "test", {}, owner)
    state.close()
    return tmp_path / "lz"


def test_inspect_reports_a_conforming_landing_zone(landing_zone: Path):
    response = function("inspect")(get("landing-zone/inspect"))
    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert body["conforms"] is True
    assert body["tables"] == [
        {
            "table": "demo.orders",
            "collection": "orders",
            "conforms": True,
            "files": 4,
            "rows": 49,
            "firstFile": 1,
            "historyRemoved": False,
            "problems": [],
        }
    ]


def test_inspect_answers_409_with_named_problems(landing_zone: Path):
    (landing_zone / "demo.schema" / "orders" / "00000000000000000002.parquet").unlink()
    response = function("inspect")(get("landing-zone/inspect", table="demo.orders"))
    assert response.status_code == 409
    problems = json.loads(response.get_body())["tables"][0]["problems"]
    assert problems == [
        {"code": "gap", "message": "gap at 2: files after it will never be applied"}
    ]


def test_inspect_unknown_table_is_404(landing_zone: Path):
    response = function("inspect")(get("landing-zone/inspect", table="missing"))
    assert response.status_code == 404


def test_bad_setting_is_a_500_naming_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LANDING_ZONE", "gopher://nowhere")
    response = function("inspect")(get("landing-zone/inspect"))
    assert response.status_code == 500
    assert json.loads(response.get_body())["error"].startswith("configuration error: LANDING_ZONE")


# Loaded by the host before any trigger runs, so every trigger's cold start would pay for them:
# DuckDB serves only `inspect`; pandas and azure-identity no trigger needs at import.
HEAVY = ["azure.identity", "duckdb", "pandas"]


def test_importing_the_app_leaves_heavy_modules_to_the_triggers_that_use_them():
    code = (
        "import json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "import function_app\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
        "import shared.landing_zone.replayer\n"  # what the inspect trigger loads on first call
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    at_import, after_inspect = (json.loads(line) for line in run.stdout.splitlines())
    assert at_import == []
    assert after_inspect == ["duckdb"]  # the check sees a heavy module once it is loaded
