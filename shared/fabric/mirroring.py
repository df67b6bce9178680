"""Open-mirroring operations on a Fabric mirrored database: create, start, stop, status.

An open-mirroring database is a ``MirroredDatabase`` item whose ``mirroring.json`` definition
has a ``GenericMirror`` source (no connection: writers put files in its landing zone) and a
``MountedRelationalDatabase`` target in Delta format. Once mirroring runs, Fabric's replicator
turns the landing zone's parquet files into Delta tables and reports per-table state through
``getTablesMirroringStatus``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.azure_auth import checked_credential
from shared.config import Settings
from shared.fabric.client import FABRIC_SCOPE, FabricClient, FabricError, describe_error

ONELAKE_DFS = "https://onelake.dfs.fabric.microsoft.com"
DEFAULT_SCHEMA = "dbo"  # Fabric's schema for landing-zone tables outside a <schema>.schema folder
# getTablesMirroringStatus pages; a service that kept handing out tokens would loop forever.
MAX_STATUS_PAGES = 1000


@dataclass(frozen=True)
class MirroredDatabase:
    workspace_id: str
    item_id: str
    display_name: str
    landing_zone: str
    """The URL to give this tool as ``LANDING_ZONE``."""


def open_mirroring_definition() -> dict[str, Any]:
    """The item definition of an open-mirroring database (one ``mirroring.json`` part)."""
    mirroring = {
        "properties": {
            "source": {"type": "GenericMirror", "typeProperties": {}},
            "target": {
                "type": "MountedRelationalDatabase",
                "typeProperties": {"defaultSchema": DEFAULT_SCHEMA, "format": "Delta"},
            },
        }
    }
    payload = base64.b64encode(json.dumps(mirroring).encode()).decode("ascii")
    return {
        "parts": [{"path": "mirroring.json", "payload": payload, "payloadType": "InlineBase64"}]
    }


def open_fabric_client(settings: Settings) -> FabricClient:
    """A client whose credential has given a Fabric token: a missing ``az login`` is one
    configuration line naming AZURE_AUTH, not the SDK's list of every credential it tried."""
    api_url = settings.require("FABRIC_API_URL")
    return FabricClient(api_url, checked_credential(settings.auth, FABRIC_SCOPE))


def create_mirrored_database(
    client: FabricClient, workspace_id: str, display_name: str
) -> MirroredDatabase:
    """Create the item (waiting out Fabric's long-running operation) and describe it."""
    created = client.call(
        "POST",
        f"workspaces/{quote(workspace_id, safe='')}/mirroredDatabases",
        what=f"create mirrored database {display_name!r} in workspace {workspace_id}",
        body={
            "displayName": display_name,
            "description": "Open mirroring landing zone written by mongo-fabric-mirror",
            "definition": open_mirroring_definition(),
        },
    )
    if not isinstance(created, dict) or not created.get("id"):
        raise FabricError(f"create mirrored database {display_name!r}: Fabric returned no item id")
    # The create answer has no properties; the item's own record has its OneLake paths.
    return get_mirrored_database(client, workspace_id, str(created["id"]))


def get_mirrored_database(
    client: FabricClient, workspace_id: str, item_id: str
) -> MirroredDatabase:
    item = client.call(
        "GET",
        _item_path(workspace_id, item_id),
        what=f"read mirrored database {item_id} in workspace {workspace_id}",
    )
    if not isinstance(item, dict):
        item = {}
    return MirroredDatabase(
        workspace_id=workspace_id,
        item_id=item_id,
        display_name=str(item.get("displayName") or ""),
        landing_zone=landing_zone_url(workspace_id, item_id, item.get("properties")),
    )


def landing_zone_url(workspace_id: str, item_id: str, properties: Any) -> str:
    """The landing zone, from the item's ``oneLakeTablesPath`` when Fabric gives one.

    Fabric's item record has no landing-zone property, but its ``oneLakeTablesPath``
    (``https://<onelake host>/<workspace>/<item>/Tables``) carries the right OneLake host; the
    landing zone is its sibling ``Files/LandingZone``. Otherwise: the documented global host.
    """
    tables = properties.get("oneLakeTablesPath") if isinstance(properties, dict) else None
    if isinstance(tables, str) and tables.startswith("https://") and tables.endswith("/Tables"):
        return tables.removesuffix("Tables") + "Files/LandingZone"
    return f"{ONELAKE_DFS}/{workspace_id}/{item_id}/Files/LandingZone"


def start_mirroring(client: FabricClient, workspace_id: str, item_id: str) -> None:
    client.call(
        "POST",
        f"{_item_path(workspace_id, item_id)}/startMirroring",
        what=f"start mirroring of item {item_id} in workspace {workspace_id}",
    )


def stop_mirroring(client: FabricClient, workspace_id: str, item_id: str) -> None:
    client.call(
        "POST",
        f"{_item_path(workspace_id, item_id)}/stopMirroring",
        what=f"stop mirroring of item {item_id} in workspace {workspace_id}",
    )


def mirroring_status(client: FabricClient, workspace_id: str, item_id: str) -> dict[str, Any]:
    """Fabric's ``{"status": ..., "error"?: {...}}`` for the whole database."""
    answer = client.call(
        "POST",
        f"{_item_path(workspace_id, item_id)}/getMirroringStatus",
        what=f"read mirroring status of item {item_id} in workspace {workspace_id}",
    )
    return answer if isinstance(answer, dict) else {}


def tables_mirroring_status(
    client: FabricClient, workspace_id: str, item_id: str
) -> list[dict[str, Any]]:
    """Every page of ``getTablesMirroringStatus``: Fabric's per-table entries, unchanged."""
    what = f"read tables mirroring status of item {item_id} in workspace {workspace_id}"
    tables: list[dict[str, Any]] = []
    token: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_STATUS_PAGES):
        page = client.call(
            "POST",
            f"{_item_path(workspace_id, item_id)}/getTablesMirroringStatus",
            what=what,
            params={"continuationToken": token} if token else None,
        )
        page = page if isinstance(page, dict) else {}
        tables.extend(entry for entry in page.get("data") or [] if isinstance(entry, dict))
        token = page.get("continuationToken")
        if not token:
            return tables
        if token in seen:
            raise FabricError(f"{what}: Fabric repeated a continuation token")
        seen.add(token)
    raise FabricError(f"{what}: more than {MAX_STATUS_PAGES} pages")


def fabric_table_status(settings: Settings) -> list[dict[str, Any]] | None:
    """Fabric's replicator state per table, or None when no workspace and item are configured.

    Each entry: ``table`` (``<schema>.<table>`` as Fabric names it), ``sourceSchemaName``,
    ``sourceTableName``, ``status``, ``processedRows``, ``processedBytes``,
    ``lastSyncDateTime`` (ISO 8601 UTC text), ``lastSyncLatencyInSeconds`` and ``error``
    (``"errorCode: message"``); a value Fabric did not report is None. Raises ``FabricError``
    (a ``MirrorError``) when Fabric cannot be asked.

    The metrics are the REST spec's ``TableMirroringMetrics`` (microsoft/fabric-rest-api-specs,
    mirroredDatabase/definitions.json): ``processedBytes``, ``processedRows`` and
    ``lastSyncDateTime`` are required; ``lastSyncLatencyInSeconds`` is defined but optional,
    "not returned" for sources whose commit time Fabric does not know, which an open-mirroring
    landing zone does not tell it: None there means "not reported", not a fault.
    """
    workspace_id = settings.get("FABRIC_WORKSPACE_ID")
    item_id = settings.get("FABRIC_ITEM_ID")
    if workspace_id is None or item_id is None:
        return None
    with open_fabric_client(settings) as client:
        entries = tables_mirroring_status(client, workspace_id, item_id)
    return [flatten_table_status(entry) for entry in entries]


def flatten_table_status(entry: dict[str, Any]) -> dict[str, Any]:
    metrics = entry.get("metrics")
    if not isinstance(metrics, dict):
        metrics = {}
    schema, table = entry.get("sourceSchemaName"), entry.get("sourceTableName")
    return {
        "table": f"{schema}.{table}" if schema else table,
        "sourceSchemaName": schema,
        "sourceTableName": table,
        "status": entry.get("status"),
        "processedRows": metrics.get("processedRows"),
        "processedBytes": metrics.get("processedBytes"),
        "lastSyncDateTime": metrics.get("lastSyncDateTime"),
        "lastSyncLatencyInSeconds": metrics.get("lastSyncLatencyInSeconds"),
        "error": describe_error(entry["error"]) if entry.get("error") else None,
    }


def _item_path(workspace_id: str, item_id: str) -> str:
    return f"workspaces/{quote(workspace_id, safe='')}/mirroredDatabases/{quote(item_id, safe='')}"
