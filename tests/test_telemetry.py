"""Telemetry reaches Application Insights' ingestion API when configured, and costs nothing when
not. Application Insights cannot run here: a local HTTP double of its ingestion endpoint
(``/v2.1/track``) receives what the real azure-monitor-opentelemetry exporter sends."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_URI = "mongodb://mirror:s3cret-password@db.example.com/?tls=true"


class Ingestion(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        for line in body.decode().splitlines():
            if line.strip():
                parsed = json.loads(line)
                Ingestion.received.extend(parsed if isinstance(parsed, list) else [parsed])
        reply = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ingestion() -> Iterator[str]:
    Ingestion.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


CHILD = textwrap.dedent(
    """
    import logging, sys
    from shared import telemetry
    from shared.config import load_settings
    settings = load_settings({{
        "APPLICATIONINSIGHTS_CONNECTION_STRING": {connection!r},
        "MONGODB_URI": {uri!r},
    }})
    assert telemetry.enable(settings)
    telemetry.record("files_published", 1, table="shop.orders")
    telemetry.record("lag_seconds", 0.8, table="shop.orders")
    telemetry.record("replicator_backlog", 12, table="shop.orders")
    logging.getLogger("shared.pipeline.changes").warning(
        "window published", extra={{"table": "shop.orders", "window": 7}}
    )
    from opentelemetry import metrics
    from opentelemetry._logs import get_logger_provider
    metrics.get_meter_provider().force_flush()
    get_logger_provider().force_flush()
    """
)


def test_metrics_and_logs_reach_the_ingestion_endpoint_without_secrets(ingestion: str):
    connection = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        f"IngestionEndpoint={ingestion};LiveEndpoint={ingestion}"
    )
    env = {"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "PATH": "/usr/bin:/bin"}
    child = CHILD.format(connection=connection, uri=SECRET_URI)
    result = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

    sent = json.dumps(Ingestion.received)
    names = {
        metric["name"]
        for item in Ingestion.received
        for metric in item.get("data", {}).get("baseData", {}).get("metrics", [])
    }
    assert {"mirror.files_published", "mirror.lag_seconds", "mirror.replicator_backlog"} <= names
    messages = [
        item["data"]["baseData"]
        for item in Ingestion.received
        if item.get("data", {}).get("baseType") == "MessageData"
    ]
    assert any(
        m["message"] == "window published" and m["properties"].get("table") == "shop.orders"
        for m in messages
    )
    assert "s3cret-password" not in sent


def test_telemetry_off_imports_nothing():
    probe = (
        "import sys\n"
        "from shared import telemetry\n"
        "from shared.config import load_settings\n"
        "assert not telemetry.enable(load_settings({}))\n"
        "telemetry.record('files_published', 1, table='t')\n"
        "assert not [m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
