"""Rebuilding a table: drop its folder and everything the state knows of it, so it is planned
and snapshotted afresh from a new start point.

Fabric drops a table whose folder is deleted and rebuilds it from scratch when the folder is
recreated, so a rebuild is: delete the folder, forget the plan, sequence, schema and partitions,
count the rebuild with its cause. The next plan records a new start token *before* it reads
anything, writes a new binding and ``_metadata.json``, then snapshots; changes resume from there.
Order matters for a crash part-way: the folder goes first (a folder without state is refused by
the binding check, never silently reused), then the state records, the plan last, so a crash
leaves a table that is still "to be rebuilt" when the rebuild is retried.
"""

from __future__ import annotations

import logging
import time

from shared import telemetry
from shared.errors import ConfigError, MirrorError
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.tables import TableRef
from shared.pipeline.plans import REBUILD_KIND, TABLE_KIND
from shared.pipeline.schema_registry import SCHEMA_KIND
from shared.pipeline.snapshot import PARTITION_KIND
from shared.state.base import JsonObject, update

log = logging.getLogger(__name__)

KEPT_CAUSES = 10


def parse_table_name(text: str) -> TableRef:
    """``<database>.<collection>`` as shown by status (database names have no dots)."""
    database, dot, collection = text.strip().partition(".")
    if not dot or not database or not collection:
        raise ConfigError("--table", f"{text!r} must be <database>.<collection>")
    try:
        return TableRef(database, collection)
    except MirrorError as error:
        raise ConfigError("--table", str(error)) from None


def rebuild_table(publisher: Publisher, table: TableRef, cause: str) -> int:
    """Drop ``table`` from the landing zone and the state; returns how often it was rebuilt."""
    log.warning("rebuilding %s: %s", table, cause, extra={"table": str(table)})
    telemetry.record("rebuilds", 1, table=str(table), cause=cause.split(":", 1)[0])
    publisher.drop_table(table)
    state = publisher.state
    state.delete(SCHEMA_KIND, table.folder)
    for key, _ in state.list(PARTITION_KIND):
        if key.rsplit("#", 1)[0] == table.folder:
            state.delete(PARTITION_KIND, key)
    count: list[int] = []

    def counted(value: JsonObject | None) -> JsonObject:
        current = value or {"count": 0, "causes": []}
        count[:] = [int(current.get("count", 0)) + 1]
        causes = [*current.get("causes", []), {"at": time.time(), "cause": cause}]
        return {"count": count[0], "causes": causes[-KEPT_CAUSES:]}

    update(state, REBUILD_KIND, table.folder, counted)
    state.delete(TABLE_KIND, table.folder)
    return count[0]
