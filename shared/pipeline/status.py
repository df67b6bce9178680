"""What an operator sees: one report per table from the state store (and, when the Fabric ids are
set, the replicator's own view), shared by `GET /api/status` and `mongo-fabric-mirror status`.

It reads state only: status works while MongoDB or the landing zone is unreachable, which is
when it is needed most.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from shared.config import Settings
from shared.conversion.names import OVERFLOW_COLUMN
from shared.errors import MirrorError
from shared.landing_zone.publisher import DROP_KIND, SEQUENCE_KIND
from shared.landing_zone.tables import TableRef
from shared.pipeline.backpressure import BACKLOG_KEY, GROWTH_KEY, TableBacklog
from shared.pipeline.changes import CHANGES_WRITER
from shared.pipeline.plans import REBUILD_KIND, all_plans
from shared.pipeline.schema_registry import SCHEMA_KIND
from shared.pipeline.snapshot import PARTITION_KIND
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.state.base import JsonObject, StateStore, update

MAX_ERROR_CHARS = 2000
AWAITING_DROP = "awaiting-drop"  # the phase of a rebuilt table until Fabric drops the old one


def record_error(state: StateStore, database: str, error: str) -> None:
    """Remember the last failure of a database's mirror (a tick, a run) for status."""

    def change(value: JsonObject | None) -> JsonObject:
        return {
            **(value or {}),
            "last_error": {"at": time.time(), "error": error[:MAX_ERROR_CHARS]},
        }

    update(state, STREAM_KIND, database, change)


def status_report(state: StateStore, fabric: list[JsonObject] | None = None) -> JsonObject:
    """Databases (stream checkpoint, lease, last error, window growth) and tables (phase,
    snapshot progress, changes, files and rows published, rebuilds with causes, failed
    partitions, the replicator's backlog of unprocessed files)."""
    now = time.time()
    partitions: dict[str, list[JsonObject]] = {}
    for key, record in state.list(PARTITION_KIND):
        folder, index = key.rsplit("#", 1)
        partitions.setdefault(folder, []).append({"partition": int(index), **record.value})
    sequences = {key: record.value for key, record in state.list(SEQUENCE_KIND)}
    rebuilds = {key: record.value for key, record in state.list(REBUILD_KIND)}
    streams = {key: record.value for key, record in state.list(STREAM_KIND)}
    schemas = {key: _columns(record.value) for key, record in state.list(SCHEMA_KIND)}
    replicator = {entry.get("table"): entry for entry in fabric or []}
    tables = []
    for plan in all_plans(state):
        folder = plan.table.folder
        entries = partitions.get(folder, [])
        sequence = sequences.get(folder, {})
        changes = dict((sequence.get("progress") or {}).get(CHANGES_WRITER) or {})
        snapshot_documents = sum(int(entry.get("documents", 0)) for entry in entries)
        failed = [entry for entry in entries if entry.get("status") == "failed"]
        errors = [entry.get("error") for entry in entries if entry.get("error")]
        rebuild = rebuilds.get(folder, {})
        table: JsonObject = {
            # As Fabric names the table (its folder), as MongoDB names it, and as people read it.
            "table": str(plan.table),
            "collection": plan.collection,
            "label": plan.table.label_for(plan.collection),
            "phase": plan.phase.value,
            "snapshot": {
                "partitions": len(plan.ranges),
                "completed": len(plan.completed),
                "documents": snapshot_documents,
                "estimated_documents": plan.estimated_documents,
            },
            "last_checkpoint": _iso(changes.get("checkpoint_at")),
            "lag_seconds": changes.get("lag_seconds"),
            "change_events": int(changes.get("events", 0)),
            "files_published": max(0, int(sequence.get("next", 1)) - 1),
            "rows_published": snapshot_documents + int(changes.get("rows", 0)),
            "rebuilds": int(rebuild.get("count", 0)),
            "rebuild_causes": [
                {"at": _iso(cause.get("at")), "cause": cause.get("cause")}
                for cause in rebuild.get("causes", [])
            ],
            "last_error": errors[-1] if errors else None,
            "failed_partitions": failed,
            "replicator_backlog": _backlog(streams.get(plan.database, {}), folder, sequence),
            # Columns of its files, and the overflow column once it reached COLUMN_BUDGET.
            **schemas.get(folder, {"columns": None, "overflow_column": None}),
        }
        if fabric is not None:
            table["replicator"] = replicator.get(str(plan.table))
        tables.append(table)
    planned = {plan.table.folder for plan in all_plans(state)}
    for folder, record in state.list(DROP_KIND):
        if folder in planned:
            continue
        tables.append(_awaiting_drop(TableRef.from_folder(folder), record.value, rebuilds, now))
        if fabric is not None:
            tables[-1]["replicator"] = replicator.get(str(TableRef.from_folder(folder)))
    databases = []
    for name, record in state.list(STREAM_KIND):
        value = record.value
        checkpoint_at = value.get("checkpoint_at")
        age = now - checkpoint_at if isinstance(checkpoint_at, int | float) else None
        lease = value.get("lease_expires")
        databases.append(
            {
                "database": name,
                "last_checkpoint": _iso(checkpoint_at),
                "checkpoint_age_seconds": None if age is None else round(age, 1),
                "reader_active": isinstance(lease, int | float) and lease > now,
                "last_error": _error(value.get("last_error")),
                # Windows that failed and were read again from the checkpoint, by cause.
                "window_rereads": _counts(value.get("rereads")),
                # Backpressure: how many times normal size its change windows are now.
                "window_growth": _growth(value.get(GROWTH_KEY)),
            }
        )
    return {"databases": databases, "tables": tables}


def _awaiting_drop(
    table: TableRef, drop: JsonObject, rebuilds: dict[str, JsonObject], now: float
) -> JsonObject:
    """A rebuilt table whose folder is deleted, held back until Fabric drops the old table
    (shared/pipeline/rebuild.py): no plan yet, so only the wait and the rebuilds to show."""
    rebuild = rebuilds.get(table.folder, {})
    since = drop.get("since")
    return {
        "table": str(table),
        "collection": table.collection,
        "label": table.label,
        "phase": AWAITING_DROP,
        "awaiting_drop": {
            "since": _iso(since),
            "seconds": round(now - since, 1) if isinstance(since, int | float) else None,
            "cause": drop.get("cause"),
            "checked_at": _iso(drop.get("checked_at")),
            "by": drop.get("by"),
            "fabric_status": drop.get("fabric_status"),
            "error": drop.get("error"),
        },
        "snapshot": {"partitions": 0, "completed": 0, "documents": 0, "estimated_documents": 0},
        "last_checkpoint": None,
        "lag_seconds": None,
        "change_events": 0,
        "files_published": 0,
        "rows_published": 0,
        "rebuilds": int(rebuild.get("count", 0)),
        "rebuild_causes": [
            {"at": _iso(cause.get("at")), "cause": cause.get("cause")}
            for cause in rebuild.get("causes", [])
        ],
        "last_error": drop.get("error"),
        "failed_partitions": [],
        "replicator_backlog": None,  # its folder is deleted: nothing left for the replicator
        "columns": None,
        "overflow_column": None,
    }


def format_status(report: JsonObject) -> str:
    """The report as a table for people on a terminal."""
    lines = []
    for database in report["databases"]:
        age = database["checkpoint_age_seconds"]
        reader = "reading" if database["reader_active"] else "no reader"
        lines.append(
            f"database {database['database']}: {reader}, last checkpoint "
            f"{database['last_checkpoint'] or 'never'}"
            + (f" ({age:.0f}s ago)" if age is not None else "")
        )
        if database["last_error"]:
            lines.append(f"  last error: {database['last_error']['error']}")
        if database["window_growth"] > 1:
            lines.append(
                f"  change windows {database['window_growth']}x normal: Fabric's replicator "
                "is behind (see BACKLOG)"
            )
        if database["window_rereads"]:
            causes = ", ".join(f"{n:,} {cause}" for cause, n in database["window_rereads"].items())
            lines.append(f"  windows read again after a failure: {causes}")
    header = (
        "TABLE",
        "PHASE",
        "SNAPSHOT",
        "EVENTS",
        "LAG",
        "FILES",
        "ROWS",
        "REBUILDS",
        "BACKLOG",
    )
    rows = [header]
    for table in report["tables"]:
        snapshot = table["snapshot"]
        lag = table["lag_seconds"]
        backlog = table["replicator_backlog"]
        rows.append(
            (
                table["label"],
                table["phase"],
                f"{snapshot['completed']}/{snapshot['partitions']}",
                f"{table['change_events']:,}",
                "-" if lag is None else f"{lag:.1f}s",
                f"{table['files_published']:,}",
                f"{table['rows_published']:,}",
                str(table["rebuilds"]),
                "-" if backlog is None else f"{backlog['unprocessed_files']:,}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    for table in report["tables"]:
        for partition in table["failed_partitions"]:
            lines.append(
                f"{table['label']} partition {partition['partition']} failed: {partition['error']}"
            )
        if table["rebuild_causes"]:
            last = table["rebuild_causes"][-1]
            lines.append(f"{table['label']} last rebuilt {last['at']}: {last['cause']}")
        if table.get("overflow_column"):
            lines.append(
                f"{table['label']} reached its column budget ({table['columns']:,} columns, "
                "COLUMN_BUDGET): fields without a column of their own are in "
                f"{table['overflow_column']}, as one JSON object per row"
            )
        waiting = table.get("awaiting_drop")
        if waiting:
            lines.append(
                f"{table['label']} waiting for Fabric to drop the old table since "
                f"{waiting['since']} (by {waiting['by'] or 'its next check'})"
                + (
                    f"; Fabric lists it as {waiting['fabric_status']}"
                    if waiting["fabric_status"]
                    else ""
                )
                + (f"; last check failed: {waiting['error']}" if waiting["error"] else "")
            )
        replicator = table.get("replicator")
        if replicator:
            lines.append(
                f"{table['label']} in Fabric: {replicator.get('status')}, "
                f"{replicator.get('processedRows')} rows, last sync "
                f"{replicator.get('lastSyncDateTime')}"
            )
    return "\n".join(lines)


def _columns(value: JsonObject) -> JsonObject:
    """A table's column count and overflow column, from its saved schema
    (shared/pipeline/schema_registry.py): _id and __rowMarker__ counted, as in its files."""
    try:
        schema = json.loads(str(value["schema"]))
        columns = len(schema["order"]) + 2
        overflow = OVERFLOW_COLUMN if schema.get("overflow") is True else None
    except (KeyError, TypeError, ValueError):
        return {"columns": None, "overflow_column": None}
    return {"columns": columns, "overflow_column": overflow}


def _backlog(stream: JsonObject, folder: str, sequence: JsonObject) -> JsonObject | None:
    """Files of the table that Fabric's replicator has not processed yet: counted at the last
    listing of its folder, plus those published since (an upper bound: the replicator only
    removes files). None until the reader has counted them once."""
    saved = stream.get(BACKLOG_KEY)
    backlog = TableBacklog.from_json(saved.get(folder) if isinstance(saved, dict) else None)
    if backlog is None:
        return None
    published_since = max(0, int(sequence.get("next", 1)) - backlog.next_number)
    return {
        "unprocessed_files": backlog.files + published_since,
        "counted_at": _iso(backlog.listed_at),
    }


def _growth(value: Any) -> int:
    return value if isinstance(value, int) and value >= 1 else 1


def _iso(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(key): int(count) for key, count in value.items() if isinstance(count, int)}


def _error(value: Any) -> JsonObject | None:
    if not isinstance(value, dict):
        return None
    return {"at": _iso(value.get("at")), "error": str(value.get("error", ""))}


def collect_status(settings: Settings, state: StateStore) -> JsonObject:
    """The status report with the replicator's per-table view when FABRIC_WORKSPACE_ID and
    FABRIC_ITEM_ID are set; an unreachable Fabric API is reported, not fatal."""
    from shared.fabric import fabric_table_status

    fabric_error = None
    try:
        fabric = fabric_table_status(settings)
    except MirrorError as error:
        fabric, fabric_error = [], str(error)
    report = status_report(state, fabric)
    if fabric_error is not None:
        report["fabric_error"] = fabric_error
    return report
