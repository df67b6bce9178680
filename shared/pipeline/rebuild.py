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
from shared.errors import ConfigError, MirrorError, UnknownTableError
from shared.landing_zone.publisher import SEQUENCE_KIND, Publisher
from shared.landing_zone.tables import TableRef, collection_name
from shared.pipeline.plans import REBUILD_KIND, TABLE_KIND
from shared.pipeline.schema_registry import SCHEMA_KIND
from shared.pipeline.snapshot import PARTITION_KIND
from shared.state.base import JsonObject, update

log = logging.getLogger(__name__)

KEPT_CAUSES = 10


def parse_table_name(text: str) -> TableRef:
    """``<database>.<collection>`` as status shows it (the folder name), or with the collection's
    own name when that is not its folder name (``db.a/b``); database names have no dots."""
    database, dot, collection = text.strip().partition(".")
    if not dot or not database or not collection:
        raise ConfigError("--table", f"{text!r} must be <database>.<collection>")
    try:
        return TableRef.for_name(database, collection)
    except MirrorError as error:
        raise ConfigError("--table", str(error)) from None


def resync_table(
    publisher: Publisher,
    name: str,
    database: str | None = None,
    collections: list[str] | None = None,
) -> tuple[TableRef, int]:
    """Rebuild the table named ``name`` on an operator's request; returns it and its count.

    With ``database`` (and ``collections``, None for all), only a table those select is taken:
    rebuilding a table this mirror does not stream would only delete it.
    """
    table = parse_table_name(name)
    if database is not None and (
        table.schema != database
        or (collections is not None and collection_name(table.name, collections) not in collections)
    ):
        raise UnknownTableError(
            f"{table} is not mirrored here (MONGODB_DATABASE, MONGODB_COLLECTIONS)"
        )
    state, store = publisher.state, publisher.store
    known = (
        state.get(TABLE_KIND, table.folder) is not None
        or state.get(SEQUENCE_KIND, table.folder) is not None
        or bool(store.list_files(table.folder))
    )
    if not known:
        raise UnknownTableError(f"no table {table} in {store.description} or {state.description}")
    return table, rebuild_table(publisher, table, "resync requested by an operator")


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
