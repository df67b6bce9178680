"""Settings: read from environment variables (Functions app settings) and CLI flags, validated once.

Every setting has one name, used both as the environment variable and (lower-case, dashed) as the
CLI flag. Validation happens at start-up and names the setting on failure; a secret's value is
never echoed. Nothing here touches the network or the disk.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from shared.errors import ConfigError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


@dataclass(frozen=True)
class SettingSpec:
    name: str
    help: str
    default: str | None = None
    secret: bool = False
    aliases: tuple[str, ...] = ()  # shorter CLI flags

    @property
    def flag(self) -> str:
        return "--" + self.name.lower().replace("_", "-")


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "LANDING_ZONE",
        "Where files go: a OneLake URL "
        "(https://onelake.dfs.fabric.microsoft.com/<workspace>/<item>/Files/LandingZone), "
        "a blob URL, a storage connection string with ;Container=<name>, or a local folder.",
        secret=True,  # a connection string carries an account key
    ),
    SettingSpec(
        "STATE_STORE",
        "Where checkpoints and file sequences live: a SQLite file path, or an Azure Table Storage "
        "connection string / account URL.",
        default=".mirror-state/state.db",
        secret=True,
        aliases=("--state",),
    ),
    SettingSpec(
        "AZURE_AUTH",
        "How to authenticate to OneLake/Azure Storage when no connection string is given: "
        "auto, service-principal, managed-identity or default (DefaultAzureCredential).",
        default="auto",
    ),
    SettingSpec("AZURE_CLIENT_ID", "Service principal or user-assigned identity client id."),
    SettingSpec("AZURE_TENANT_ID", "Service principal tenant id."),
    SettingSpec("AZURE_CLIENT_SECRET", "Service principal secret (use Key Vault).", secret=True),
    SettingSpec(
        "FABRIC_WORKSPACE_ID",
        "Fabric workspace id (a GUID) holding the mirrored database: for the fabric commands "
        "and for Fabric's own per-table state in status.",
        aliases=("--workspace",),
    ),
    SettingSpec("FABRIC_ITEM_ID", "The mirrored database's item id (a GUID).", aliases=("--item",)),
    SettingSpec(
        "FABRIC_API_URL",
        "Fabric REST API base URL (https only).",
        default="https://api.fabric.microsoft.com/v1",
    ),
    SettingSpec(
        "MONGODB_URI", "MongoDB connection string (mongodb:// or mongodb+srv://).", secret=True
    ),
    SettingSpec("MONGODB_DATABASE", "The database to mirror.", aliases=("--database",)),
    SettingSpec(
        "MONGODB_COLLECTIONS",
        'Collections to mirror: all, one name, a comma list or a JSON list ["c1","c2"].',
        default="all",
        aliases=("--collections",),
    ),
    SettingSpec(
        "SNAPSHOT_PARTITIONS",
        "How many _id ranges the initial sync of one collection is split into "
        "(auto: one per 250,000 documents, at least one per worker, 1 to 256).",
        default="auto",
        aliases=("--partitions",),
    ),
    SettingSpec(
        "SNAPSHOT_WORKERS",
        "Local worker processes for the initial sync (auto: one per core).",
        default="auto",
        aliases=("--workers",),
    ),
    SettingSpec(
        "MONGODB_RETRY_SECONDS",
        "How long a transient MongoDB fault (failover, shutdown, dropped connection) is retried, "
        "with growing pauses, before the step it stops fails; a read resumes after the last _id "
        "it got. 0: no retries beyond the driver's own.",
        default="60",
    ),
    SettingSpec(
        "STORAGE_RETRY_SECONDS",
        "How long a transient storage fault (a dropped connection, a lost answer, 408, 429, "
        "500, 502, 503, 504) of the landing zone or the state store is retried, with growing "
        "pauses, before the step it stops fails; a write whose answer was lost is recognised "
        "as done. 0: no retries beyond the Azure SDK's own.",
        default="60",
    ),
    SettingSpec("FILE_ROWS", "Most rows in one parquet file.", default="100000"),
    SettingSpec("FILE_BYTES", "Most BSON bytes in one parquet file.", default="134217728"),
    SettingSpec(
        "COLUMN_BUDGET",
        "Most columns in one table (_id, __overflow__ and __rowMarker__ included). Fields "
        "beyond it, first come first served, go to one string column __overflow__: per row, "
        "the Extended JSON object of its fields without a column. Once a table's overflow "
        "column opens, the table gets no new column (a larger budget applies on its next "
        "rebuild). The default keeps a table under T-SQL's 1,024 columns per table (the SQL "
        "analytics endpoint).",
        default="1000",
    ),
    SettingSpec(
        "QUEUE_STORAGE",
        "Storage for the snapshot-partitions queue (Functions): a connection string; for the "
        "app's identity set QUEUE_STORAGE__queueServiceUri="
        "https://<account>.queue.core.windows.net instead (default: the host's "
        "AzureWebJobsStorage). The queue triggers bind to it too.",
        secret=True,
    ),
    SettingSpec(
        "CHANGE_WINDOW_EVENTS",
        "Most change events in one window (one file per table).",
        default="10000",
    ),
    SettingSpec(
        "CHANGE_WINDOW_BYTES",
        "Most BSON bytes of change events in one window.",
        default="67108864",
    ),
    SettingSpec(
        "CHANGE_WINDOW_SECONDS",
        "Longest a window stays open while events keep coming (it closes at once when the "
        "stream is idle); bounds write-to-published latency.",
        default="1",
    ),
    SettingSpec(
        "CHANGE_AWAIT_MS",
        "How long one read waits on an idle stream before the window closes.",
        default="200",
    ),
    SettingSpec(
        "CHANGE_LEASE_SECONDS",
        "The reader lease on a database's stream: renewed every window; a reader that died "
        "is replaced after this long.",
        default="60",
    ),
    SettingSpec(
        "PROGRESS_SECONDS",
        "run: how often it prints a line per table (change events so far, lag), or one "
        "heartbeat line when nothing changed.",
        default="10",
    ),
    SettingSpec(
        "CHANGE_BUDGET_SECONDS",
        "How long one timer invocation runs change windows back to back (Functions); keep it "
        "below the schedule's period and well inside functionTimeout.",
        default="55",
    ),
    SettingSpec(
        "CHANGE_SCHEDULE",
        "NCRONTAB schedule of the change timer (Functions), e.g. every minute: 0 * * * * *.",
        default="0 * * * * *",
    ),
    SettingSpec(
        "REPLICATOR_RETENTION_DAYS",
        "replicate: how long an applied file stays in _ProcessedFiles/ or _FilesReadyToDelete/ "
        "before the replicator deletes it (Fabric's replicator: seven days).",
        default="7",
    ),
    SettingSpec(
        "REPLICATOR_INTERVAL_SECONDS",
        "replicate: the pause between two passes over the landing zone (without --once).",
        default="5",
    ),
    SettingSpec(
        "REBUILD_DROP_WAIT_SECONDS",
        "A rebuilt table's folder is deleted, then recreated only once Fabric has dropped the "
        "old table (Microsoft's open-mirroring best practices, 'Plan for recovery'). With "
        "FABRIC_WORKSPACE_ID and FABRIC_ITEM_ID set, Fabric's getTablesMirroringStatus says "
        "when; without them, the folder stays deleted this long. Microsoft documents no "
        "interval, only 'near real-time' replication (open-mirroring FAQ), so the default is "
        "generous: a table recreated before Fabric dropped it is worse than a late one.",
        default="300",
    ),
    SettingSpec(
        "REPLICATOR_BACKLOG_FILES",
        "Backpressure: when a table folder holds more files than this that Fabric's replicator "
        "has not processed yet, change windows grow (doubling each window, up to 64 times: "
        "more events and seconds, fewer files) until every table is back to half of it.",
        default="200",
    ),
    SettingSpec(
        "REPLICATOR_BACKLOG_CHECK_SECONDS",
        "Backpressure: how often, at most, a table folder whose backlog may be above half of "
        "REPLICATOR_BACKLOG_FILES is listed to count its unprocessed files.",
        default="30",
    ),
    SettingSpec(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "Export metrics and logs to this Application Insights resource (OpenTelemetry); "
        "unset, telemetry is off and costs nothing.",
        # Not a credential (Microsoft: the key only routes data; ingestion here is Entra-only).
    ),
    SettingSpec("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR.", default="INFO"),
)
INTEGER_LIMITS = {
    "SNAPSHOT_PARTITIONS": (1, 256),
    "SNAPSHOT_WORKERS": (1, 64),
    "MONGODB_RETRY_SECONDS": (0, 3600),
    "STORAGE_RETRY_SECONDS": (0, 3600),
    "FILE_ROWS": (1, 10_000_000),
    "FILE_BYTES": (1024, 4 * 1024**3),
    "COLUMN_BUDGET": (8, 100_000),
    "CHANGE_WINDOW_EVENTS": (1, 1_000_000),
    "CHANGE_WINDOW_BYTES": (1024, 1024**3),
    "CHANGE_WINDOW_SECONDS": (1, 300),
    "CHANGE_AWAIT_MS": (1, 10_000),
    "CHANGE_LEASE_SECONDS": (5, 3600),
    "PROGRESS_SECONDS": (1, 3600),
    "CHANGE_BUDGET_SECONDS": (1, 600),  # well inside host.json functionTimeout (30 min)
    "REPLICATOR_RETENTION_DAYS": (0, 365),
    "REPLICATOR_INTERVAL_SECONDS": (1, 3600),
    "REBUILD_DROP_WAIT_SECONDS": (0, 86_400),
    "REPLICATOR_BACKLOG_FILES": (2, 1_000_000),
    "REPLICATOR_BACKLOG_CHECK_SECONDS": (1, 3600),
}
SPECS = {spec.name: spec for spec in SETTINGS}
AUTH_MODES = ("auto", "service-principal", "managed-identity", "default")
_NCRONTAB = re.compile(r"[0-9*/,\-]+( [0-9A-Za-z*/,\-]+){5}")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class AzureAuth:
    mode: str
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)

    def credential(self) -> TokenCredential:
        """The azure-identity credential for this mode; built lazily (it may reach the network)."""
        from azure.identity import (
            ClientSecretCredential,
            DefaultAzureCredential,
            ManagedIdentityCredential,
        )

        if self.mode == "service-principal":
            assert self.client_id and self.tenant_id and self.client_secret
            return ClientSecretCredential(self.tenant_id, self.client_id, self.client_secret)
        if self.mode == "managed-identity":
            return ManagedIdentityCredential(client_id=self.client_id)
        return DefaultAzureCredential()


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, str] = field(repr=False)
    auth: AzureAuth

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def require(self, name: str) -> str:
        value = self.values.get(name)
        if value is None:
            spec = SPECS[name]
            raise ConfigError(name, f"is required: {spec.help} (env {name} or {spec.flag})")
        return value

    @property
    def log_level(self) -> int:
        return int(logging.getLevelName(self.values["LOG_LEVEL"]))

    def integer(self, name: str) -> int:
        """A validated whole-number setting without an ``auto`` (those have accessors below)."""
        if SPECS[name].default == "auto":
            raise ValueError(f"{name} may be auto: read it through its Settings accessor")
        return int(self.values[name])

    @property
    def workers(self) -> int:
        """SNAPSHOT_WORKERS; auto is one per core of this machine."""
        value = self.values["SNAPSHOT_WORKERS"]
        return (os.cpu_count() or 1) if value == "auto" else int(value)

    @property
    def partitions(self) -> int | None:
        """SNAPSHOT_PARTITIONS; None (auto) leaves the count to the snapshot planner, which
        sizes it from each collection's estimated document count and ``workers``."""
        value = self.values["SNAPSHOT_PARTITIONS"]
        return None if value == "auto" else int(value)

    @property
    def file_rows(self) -> int:
        """FILE_ROWS: most rows in one parquet file."""
        return self.integer("FILE_ROWS")

    @property
    def file_bytes(self) -> int:
        """FILE_BYTES: most BSON bytes in one parquet file."""
        return self.integer("FILE_BYTES")

    @property
    def column_budget(self) -> int:
        """COLUMN_BUDGET: most columns in one table; fields beyond go to ``__overflow__``."""
        return self.integer("COLUMN_BUDGET")

    def collections(self) -> list[str] | None:
        """None means every collection of the database."""
        return parse_collections(self.values["MONGODB_COLLECTIONS"])

    def __repr__(self) -> str:
        shown = {
            name: ("***" if SPECS[name].secret else value) for name, value in self.values.items()
        }
        return f"Settings({shown})"


def load_settings(
    environ: Mapping[str, str], overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Merge environment and CLI values (CLI wins), apply defaults and validate every value."""
    values: dict[str, str] = {}
    for spec in SETTINGS:
        raw = (overrides or {}).get(spec.name)
        if raw is None:
            raw = environ.get(spec.name)
        if raw is not None and raw.strip():
            values[spec.name] = raw.strip()
        elif spec.default is not None:
            values[spec.name] = spec.default
    values["LOG_LEVEL"] = values["LOG_LEVEL"].upper()  # "debug" means DEBUG
    _validate(values)
    return Settings(values, _auth(values, environ))


def parse_collections(text: str) -> list[str] | None:
    import json

    if text == "all":
        return None
    if text.startswith("["):
        try:
            names = json.loads(text)
        except ValueError:
            raise ConfigError("MONGODB_COLLECTIONS", "is not a valid JSON list") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError("MONGODB_COLLECTIONS", "must be a JSON list of names")
    else:
        names = [name.strip() for name in text.split(",")]
    if not names or any(not name or name.startswith("system.") for name in names):
        raise ConfigError("MONGODB_COLLECTIONS", "has an empty or system.* collection name")
    return list(dict.fromkeys(names))


def _validate(values: Mapping[str, str]) -> None:
    from shared.landing_zone.stores import parse_landing_zone
    from shared.source.client import check_uri_options
    from shared.state import parse_state_location

    if "LANDING_ZONE" in values:
        parse_landing_zone(values["LANDING_ZONE"])
    parse_state_location(values["STATE_STORE"])
    if values["AZURE_AUTH"] not in AUTH_MODES:
        raise ConfigError("AZURE_AUTH", f"must be one of {', '.join(AUTH_MODES)}")
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "FABRIC_WORKSPACE_ID", "FABRIC_ITEM_ID"):
        if name in values and not _GUID.match(values[name]):
            raise ConfigError(name, "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
    _validate_fabric_api_url(values["FABRIC_API_URL"])
    uri = values.get("MONGODB_URI")
    if uri is not None and not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("MONGODB_URI", "must start with mongodb:// or mongodb+srv://")
    if uri is not None:
        check_uri_options(uri)  # before anything connects or is written
    database = values.get("MONGODB_DATABASE")
    if database is not None and (len(database) > 63 or re.search(r'[/\\. "$\x00]', database)):
        raise ConfigError("MONGODB_DATABASE", "is not a valid MongoDB database name")
    parse_collections(values["MONGODB_COLLECTIONS"])
    for name, (low, high) in INTEGER_LIMITS.items():
        value = values[name]
        if value == "auto" and SPECS[name].default == "auto":
            continue
        if not value.isdigit() or not low <= int(value) <= high:
            raise ConfigError(name, f"must be a whole number from {low} to {high}")
    if not isinstance(logging.getLevelName(values["LOG_LEVEL"]), int):
        raise ConfigError("LOG_LEVEL", "must be DEBUG, INFO, WARNING or ERROR")
    if not _NCRONTAB.fullmatch(values["CHANGE_SCHEDULE"]):
        raise ConfigError(
            "CHANGE_SCHEDULE", "must be a six-field NCRONTAB expression such as 0 * * * * *"
        )


def _validate_fabric_api_url(url: str) -> None:
    # The bearer token goes to this host: https only, no user info, query or fragment.
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme != "https" or "@" in parts.netloc:
        raise ConfigError("FABRIC_API_URL", "must be an https:// URL of the Fabric REST API")
    if parts.query or parts.fragment:
        raise ConfigError("FABRIC_API_URL", "must not have a query or fragment")


def _auth(values: Mapping[str, str], environ: Mapping[str, str]) -> AzureAuth:
    mode = values["AZURE_AUTH"]
    client_id = values.get("AZURE_CLIENT_ID")
    tenant_id = values.get("AZURE_TENANT_ID")
    secret = values.get("AZURE_CLIENT_SECRET")
    if mode == "auto":
        if secret is not None:
            mode = "service-principal"
        elif "IDENTITY_ENDPOINT" in environ:  # set by App Service / Functions managed identity
            mode = "managed-identity"
        else:
            mode = "default"
    if mode == "service-principal":
        for name, value in (
            ("AZURE_CLIENT_ID", client_id),
            ("AZURE_TENANT_ID", tenant_id),
            ("AZURE_CLIENT_SECRET", secret),
        ):
            if value is None:
                raise ConfigError(name, "is required for service-principal authentication")
    return AzureAuth(mode, client_id, tenant_id, secret)
