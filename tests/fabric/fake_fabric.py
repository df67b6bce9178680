"""An in-process HTTPS test double of the Fabric REST API's mirrored-database endpoints.

A test double, not an emulator: Fabric cannot run here. It serves what
``shared.fabric`` sends, as Microsoft Learn documents it: create (202 + ``Location`` /
``x-ms-operation-id`` / ``Retry-After``, then operation state and result), get item (with
``oneLakeTablesPath``), start/stop, ``getMirroringStatus`` and ``getTablesMirroringStatus``
(paged by ``continuationToken``; per table as given, or as a real Delta-writing replicator
double, ``shared.replicator``, reports its tables). Scripted faults: 429 with ``Retry-After``
for the next N requests, 403 for a workspace the identity has no role in, a failing operation.
Every request is recorded for assertions. Over TLS with a certificate made for the session
(azure-core's bearer-token policy refuses plain http), trusted by clients through ``ca_path``.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

from shared.fabric.client import FABRIC_SCOPE

# The self-signed certificate maker of the DFS double: one way to make a test CA.
from tests.landing_zone.stores.fake_dfs import _tls_context

TOKEN = "fake-fabric-token"
# The double answers OneLake paths on a regional host, so a test can tell that the landing zone
# came from the item's oneLakeTablesPath and not from the documented default host.
ONELAKE_HOST = "https://westeurope-onelake.dfs.fabric.microsoft.com"


class FakeCredential:
    """A TokenCredential (no Entra here) whose token the double accepts, for Fabric's scope."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        assert scopes == (FABRIC_SCOPE,), scopes
        now = int(datetime.datetime.now(datetime.UTC).timestamp())
        return AccessToken(TOKEN, now + 3600)


class RecordingTransport(RequestsTransport):
    """The real requests transport, except that waits are recorded instead of slept."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slept: list[float] = []

    def sleep(self, duration: float) -> None:
        self.slept.append(duration)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class _Item:
    workspace_id: str
    item_id: str
    display_name: str
    mirroring: dict[str, Any]
    """The decoded ``mirroring.json`` definition part."""
    status: str = "Initialized"
    tables: list[dict[str, Any]] = field(default_factory=list)
    replicator: Any = None
    """A ``shared.replicator.engine.Replicator``: when set, its table status is what
    ``getTablesMirroringStatus`` reports, as Fabric reports its own replicator's."""

    def table_entries(self) -> list[dict[str, Any]]:
        if self.replicator is None:
            return self.tables
        return list(self.replicator.tables_mirroring_status())


@dataclass
class _Operation:
    item: _Item
    polls_left: int
    fail: bool


class _Error(Exception):
    def __init__(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.headers = status, code, headers or {}


class FakeFabric:
    def __init__(self, workdir: Path) -> None:
        self.requests: list[Recorded] = []
        self.items: dict[str, _Item] = {}
        self.denied_workspaces: set[str] = set()
        self.operation_retry_after = "0"
        self.operation_polls = 2
        """How many polls see ``Running`` before an operation ends."""
        self.fail_operations = False
        self.create_at_once = False
        """Answer create with 201 and the item, as Fabric does when it finishes in time."""
        self.page_size = 2
        self._throttled = 0
        self._throttle_retry_after = "0"
        self._operations: dict[str, _Operation] = {}
        self._lock = threading.Lock()
        self._pages = itertools.count(1)
        self.ca_path = str(workdir / "fake-fabric.pem")
        context = _tls_context(workdir, self.ca_path)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.origin = f"https://127.0.0.1:{self._server.server_address[1]}"
        self.api_url = f"{self.origin}/v1"
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def throttle_next(self, count: int, retry_after: str) -> None:
        """Answer the next ``count`` requests 429 with this ``Retry-After``."""
        with self._lock:
            self._throttled, self._throttle_retry_after = count, retry_after

    def add_item(
        self,
        workspace_id: str,
        name: str,
        tables: list[dict[str, Any]],
        replicator: Any = None,
    ) -> str:
        """A running mirrored database whose tables are ``tables``, or those ``replicator``
        (a :class:`shared.replicator.engine.Replicator`) has replicated, read at each request."""
        item = _Item(workspace_id, str(uuid.uuid4()), name, {}, "Running", tables, replicator)
        with self._lock:
            self.items[item.item_id] = item
        return item.item_id

    def requests_to(self, suffix: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix)]

    # --- the service ---------------------------------------------------------------------

    def handle(self, request: Recorded, body: bytes) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append(request)
            if self._throttled:
                self._throttled -= 1
                raise _Error(429, "RequestBlocked", {"Retry-After": self._throttle_retry_after})
            if request.authorization != f"Bearer {TOKEN}":
                raise _Error(401, "TokenNotProvided")
            parts = request.path.strip("/").split("/")
            if parts[:2] == ["v1", "operations"]:
                return self._operation(request.method, parts[2:])
            if parts[:2] != ["v1", "workspaces"] or len(parts) < 4:
                raise _Error(404, "EntityNotFound")
            workspace_id = parts[2]
            if workspace_id in self.denied_workspaces:
                raise _Error(403, "InsufficientPrivileges")
            if parts[3] != "mirroredDatabases":
                raise _Error(404, "EntityNotFound")
            if len(parts) == 4 and request.method == "POST":
                return self._create(workspace_id, json.loads(body))
            item = self.items.get(parts[4]) if len(parts) > 4 else None
            if item is None or item.workspace_id != workspace_id:
                raise _Error(404, "ItemNotFound")
            action = parts[5] if len(parts) > 5 else None
            if action is None and request.method == "GET":
                return 200, {}, self._describe(item)
            if request.method != "POST":
                raise _Error(405, "MethodNotAllowed")
            if action == "startMirroring":
                item.status = "Running"
                return 200, {}, None
            if action == "stopMirroring":
                item.status = "Stopped"
                return 200, {}, None
            if action == "getMirroringStatus":
                return 200, {}, {"status": item.status}
            if action == "getTablesMirroringStatus":
                return 200, {}, self._tables_page(item, request.query.get("continuationToken"))
            raise _Error(404, "EntityNotFound")

    def _create(self, workspace_id: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        (part,) = body["definition"]["parts"]
        if part["path"] != "mirroring.json" or part["payloadType"] != "InlineBase64":
            raise _Error(400, "InvalidDefinitionParts")
        mirroring = json.loads(base64.b64decode(part["payload"]))
        item = _Item(workspace_id, str(uuid.uuid4()), body["displayName"], mirroring)
        if self.create_at_once:
            self.items[item.item_id] = item
            return 201, {}, {"id": item.item_id, "displayName": item.display_name}
        operation_id = str(uuid.uuid4())
        self._operations[operation_id] = _Operation(
            item, self.operation_polls, self.fail_operations
        )
        return (
            202,
            {
                "Location": f"{self.api_url}/operations/{operation_id}",
                "x-ms-operation-id": operation_id,
                "Retry-After": self.operation_retry_after,
            },
            None,
        )

    def _operation(self, method: str, parts: list[str]) -> tuple[int, dict[str, str], Any]:
        operation = self._operations.get(parts[0]) if parts and method == "GET" else None
        if operation is None:
            raise _Error(404, "OperationNotFound")
        if parts[1:] == ["result"]:
            if operation.polls_left >= 0 or operation.fail:
                raise _Error(400, "OperationNotSucceeded")
            item = operation.item
            return 200, {}, {"id": item.item_id, "displayName": item.display_name}
        operation.polls_left -= 1
        headers = {"Retry-After": self.operation_retry_after, "x-ms-operation-id": parts[0]}
        if operation.polls_left >= 0:
            return 200, headers, {"status": "Running", "percentComplete": 50}
        if operation.fail:
            error = {"errorCode": "ItemDisplayNameAlreadyInUse", "message": "Name\nin use"}
            return 200, headers, {"status": "Failed", "error": error}
        self.items[operation.item.item_id] = operation.item
        headers["Location"] = f"{self.api_url}/operations/{parts[0]}/result"
        return 200, headers, {"status": "Succeeded", "percentComplete": 100}

    def _describe(self, item: _Item) -> dict[str, Any]:
        tables_path = f"{ONELAKE_HOST}/{item.workspace_id}/{item.item_id}/Tables"
        return {
            "id": item.item_id,
            "type": "MirroredDatabase",
            "displayName": item.display_name,
            "workspaceId": item.workspace_id,
            "properties": {"oneLakeTablesPath": tables_path, "defaultSchema": "dbo"},
        }

    def _tables_page(self, item: _Item, token: str | None) -> dict[str, Any]:
        start = int(token) if token else 0
        end = start + self.page_size
        tables = item.table_entries()
        more = end < len(tables)
        return {
            "continuationToken": str(end) if more else None,
            "continuationUri": None,
            "data": tables[start:end],
        }


def _handler(service: FakeFabric) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = urlsplit(self.path)
            request = Recorded(
                method=self.command,
                path=url.path,
                query={k: v[-1] for k, v in parse_qs(url.query).items()},
                authorization=self.headers.get("Authorization"),
            )
            try:
                status, headers, answer = service.handle(request, body)
            except _Error as error:
                status, headers = error.status, error.headers
                answer = {"requestId": "fake", "errorCode": error.code, "message": error.code}
            payload = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    return Handler


@contextmanager
def running_fake_fabric() -> Iterator[FakeFabric]:
    with tempfile.TemporaryDirectory(prefix="fake-fabric-") as workdir:
        fake = FakeFabric(Path(workdir))
        fake.start()
        try:
            yield fake
        finally:
            fake.stop()
