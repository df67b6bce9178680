"""Rebuilding a table: drop its folder and everything the state knows of it, so it is planned
and snapshotted afresh from a new start point.

Fabric drops a table whose folder is deleted and rebuilds it from scratch when the folder is
recreated, so a rebuild is: delete the folder, forget the plan, sequence, schema and partitions,
count the rebuild with its cause. The next plan records a new start token *before* it reads
anything, writes a new binding and ``_metadata.json``, then snapshots; changes resume from there.

Invariant: a rebuilder that was paused and superseded changes nothing of the table's next
generation. Every step is fenced by the generation it retires (see ``Publisher.retire``):
1. retire: one compare-and-swap on the sequence record that names the generation meant; from
   then on no writer of it publishes or claims. A reader decides on a drop or rename event, so
   it retires only a generation that began before that event's position: a reader that slept
   through another's rebuild and re-snapshot finds a newer plan and stops. On lost history it
   retires the generations it knew before it checked it still held the lease;
2. sweep the folder: only files listed while the retired record stood, each deleted only if
   unchanged since it was listed;
3. the schema and the plan, each deleted only if it names the retired generation (and with the
   ETag it was read with); partitions' progress while the rebuild is still this one's;
4. forget the sequence record, only while it is still retired by this rebuilder. Only then can a
   new generation be bound, so no step above can meet one of its files or records.
A crash part-way leaves the record retired: whoever plans the table next takes the rebuild over
and finishes it (``resume_rebuild``).

Fabric drops the old table only once its replicator notices the folder is gone, and Microsoft's
recovery advice is: delete the table folder, wait until the table disappears from the mirrored
database, then recreate it (https://learn.microsoft.com/fabric/mirroring/open-mirroring-best-
practices#plan-for-recovery). So before the record is forgotten (step 4), a drop record
(``Publisher.await_drop``) is written: the folder is not bound again, by a planner, a snapshot
worker or the change reader, until ``check_drops`` confirms it — Fabric's
``getTablesMirroringStatus`` no longer lists the table (when FABRIC_WORKSPACE_ID and
FABRIC_ITEM_ID are set), or REBUILD_DROP_WAIT_SECONDS have passed. The wait is a state of that
table alone: planning skips it and every other table streams and snapshots on.

``resync`` also fences the change reader first: it retires the generation (from then on the
reader's table claim fails every write) and waits, within the reader's lease, for the window in
flight to end before it deletes anything, so no window's file is still landing in the folder
being removed. A reader paused for longer cannot publish either (its allocation fails) and
removes the staged file it wrote (``Publisher.publish``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

from shared import telemetry
from shared.config import Settings
from shared.errors import ConfigError, MirrorError, UnknownTableError
from shared.landing_zone.publisher import (
    DROP_KIND,
    SEQUENCE_KIND,
    Publisher,
    Retirement,
    SequenceState,
)
from shared.landing_zone.tables import TableRef, collection_folder, table_for_name
from shared.pipeline.plans import (
    CHANGES_WRITER,
    PARTITION_KIND,
    REBUILD_KIND,
    TABLE_KIND,
    load_plan,
)
from shared.pipeline.schema_registry import SCHEMA_KIND
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.source.resume_tokens import token_order
from shared.state.base import ConflictError, JsonObject, StateStore, update

log = logging.getLogger(__name__)

KEPT_CAUSES = 10
DEFAULT_SCHEMA = "dbo"  # Fabric's schema for a table folder outside a <schema>.schema folder
# How often Fabric is asked whether a deleted table is gone (its REST API throttles with 429).
FABRIC_DROP_POLL_SECONDS = 10.0
# resync waits for the reader's window in flight at most its lease's remainder and this much.
FENCE_MARGIN_SECONDS = 5.0
FENCE_POLL_SECONDS = 0.1


def parse_table_name(text: str) -> TableRef:
    """``<database>.<collection>`` with the collection's own name, as every command takes it
    (``table_for_name``): ``db._tmp`` is the collection ``_tmp`` (folder ``%5Ftmp``), and
    ``db.%5Ftmp`` the collection literally named ``%5Ftmp``."""
    try:
        return table_for_name(text)
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
        or (collections is not None and table.name not in map(collection_folder, collections))
    ):
        raise UnknownTableError(
            f"{table.label} is not mirrored here (MONGODB_DATABASE, MONGODB_COLLECTIONS)"
        )
    state, store = publisher.state, publisher.store
    known = (
        state.get(TABLE_KIND, table.folder) is not None
        or state.get(SEQUENCE_KIND, table.folder) is not None
        or state.get(DROP_KIND, table.folder) is not None
        or bool(store.list_files(table.folder))
    )
    if not known:
        raise UnknownTableError(
            f"no table {table.label} in {store.description} or {state.description}"
        )
    return table, rebuild_on_request(publisher, table, "resync requested by an operator")


def rebuild_on_request(publisher: Publisher, table: TableRef, cause: str) -> int:
    """Rebuild whatever generation ``table`` has now, or delete a folder this state never
    numbered (what the binding check advises for a foreign folder); returns the rebuild count.

    The change reader is fenced first: the generation is retired (its table claim fails every
    write from then on), then the window it may have in flight is let end before the folder is
    swept (``_wait_for_window_in_flight``)."""
    state = publisher.state
    record = state.get(SEQUENCE_KIND, table.folder)
    if record is None:
        if publisher.sweep_unowned(table):
            publisher.await_drop(table, cause)  # Fabric may have made a table of that folder
        _forget_orphans(state, table)
        return _count(state, table, cause, "")
    generation = SequenceState.from_json(record.value, table).generation
    fenced_at = time.time()
    hold = _lease_left(state, table, fenced_at) + FENCE_MARGIN_SECONDS
    retirement = publisher.retire(table, cause, generation, hold_seconds=hold)
    if retirement is None:  # rebuilt by someone else meanwhile
        return rebuild_count(state, table)
    _wait_for_window_in_flight(state, table, fenced_at, fenced_at + hold)
    return _finish(publisher, retirement)


def _lease_left(state: StateStore, table: TableRef, now: float) -> float:
    """How long the database's change reader may still be in a window: its lease's remainder."""
    record = None if table.schema is None else state.get(STREAM_KIND, table.schema)
    expires = None if record is None else record.value.get("lease_expires")
    return max(0.0, expires - now) if isinstance(expires, int | float) else 0.0


def _wait_for_window_in_flight(
    state: StateStore, table: TableRef, fenced_at: float, deadline: float
) -> None:
    """Return once no window that began before ``fenced_at`` can still be writing: the reader
    checkpointed a window since (windows are sequential: its files and its staged leftovers
    were dealt with before that checkpoint), gave its lease back, or let it lapse. A reader
    paused beyond that is covered by the fencing itself (see the module docstring)."""
    while time.time() < deadline:
        record = None if table.schema is None else state.get(STREAM_KIND, table.schema)
        value = {} if record is None else record.value
        expires = value.get("lease_expires")
        checkpoint_at = value.get("checkpoint_at")
        if not isinstance(expires, int | float) or expires <= time.time():
            return
        if isinstance(checkpoint_at, int | float) and checkpoint_at > fenced_at:
            return
        time.sleep(FENCE_POLL_SECONDS)
    log.warning("%s: the change reader did not end its window in time; rebuilding anyway", table)


def rebuild_table(
    publisher: Publisher,
    table: TableRef,
    cause: str,
    *,
    before: str | None = None,
    generation: str | None = None,
) -> int | None:
    """Drop ``table``'s current generation from the landing zone and the state; returns how
    often it has been rebuilt, or None if there was nothing to rebuild.

    ``before`` (a stream position, as ``token_order`` gives it): rebuild only a generation that
    began before it — the decision rests on an event at that position. ``generation``: rebuild
    only that one — the decision rests on what the caller saw of the table.
    """
    state = publisher.state
    record = state.get(SEQUENCE_KIND, table.folder)
    if record is None:
        _forget_orphans(state, table)
        return None
    current = SequenceState.from_json(record.value, table)
    if before is not None and not _began_before(publisher, table, current, before):
        log.info("%s: not rebuilt for %s: its current generation began after that", table, cause)
        return None
    meant = current.generation if generation is None else generation
    retirement = publisher.retire(table, cause, meant)
    return None if retirement is None else _finish(publisher, retirement)


def resume_rebuild(publisher: Publisher, table: TableRef) -> None:
    """Finish a rebuild that a crash (or a paused rebuilder) left half done."""
    retirement = publisher.retired(table)
    if retirement is not None:
        log.warning("%s: finishing a rebuild left unfinished", table)
        _finish(publisher, retirement)


def _finish(publisher: Publisher, retirement: Retirement) -> int:
    table, generation = retirement.table, retirement.generation
    log.warning("rebuilding %s: %s", table, retirement.cause, extra={"table": str(table)})
    count = _count(publisher.state, table, retirement.cause, generation)
    if not publisher.sweep(retirement):
        return count  # another rebuilder took over; it finishes
    state = publisher.state
    _delete_if_generation(state, SCHEMA_KIND, table, generation)
    if publisher.holds(retirement):
        for key, _ in state.list(PARTITION_KIND):
            if key.rsplit("#", 1)[0] == table.folder:
                state.delete(PARTITION_KIND, key)
    _delete_if_generation(state, TABLE_KIND, table, generation)
    if publisher.holds(retirement):
        # Before the record goes: from here on, the folder stays deleted until Fabric has
        # dropped the table (check_drops), whoever plans it next.
        publisher.await_drop(table, retirement.cause)
    publisher.forget(retirement)
    return count


def _began_before(
    publisher: Publisher, table: TableRef, current: SequenceState, before: str
) -> bool:
    """The generation began before ``before``: planned, or first held a change, earlier. A
    generation with neither is one being bound right now by a planner; nothing protects it
    from an older decision except this check's gap of a few calls, which planning closes."""
    starts = []
    plan = load_plan(publisher.state, table)
    if plan is not None and plan.generation in (current.generation, ""):
        starts.append(token_order(plan.start_token))
    changes = current.progress.get(CHANGES_WRITER, {})
    since = changes.get("since", changes.get("token"))
    if isinstance(since, str):
        starts.append(token_order(since))
    return not starts or min(starts) < before


def _delete_if_generation(state: StateStore, kind: str, table: TableRef, generation: str) -> None:
    record = state.get(kind, table.folder)
    # Records made before generations were recorded name none: they can only be the old one's.
    if record is not None and record.value.get("generation", "") in (generation, ""):
        with contextlib.suppress(ConflictError):  # replaced since: a newer generation's
            state.delete(kind, table.folder, etag=record.etag)


def _forget_orphans(state: StateStore, table: TableRef) -> None:
    """A plan or schema left by an older version's rebuild, whose sequence record went first."""
    for kind in (SCHEMA_KIND, TABLE_KIND):
        record = state.get(kind, table.folder)
        if record is not None and not record.value.get("generation"):
            with contextlib.suppress(ConflictError):
                state.delete(kind, table.folder, etag=record.etag)


def _count(state: StateStore, table: TableRef, cause: str, generation: str) -> int:
    """Count the rebuild of ``generation`` once, however many rebuilders finish it."""
    telemetry.record("rebuilds", 1, table=str(table), cause=cause.split(":", 1)[0])
    count: list[int] = []

    def counted(value: JsonObject | None) -> JsonObject:
        current = value or {"count": 0, "causes": []}
        causes = list(current.get("causes", []))
        if generation and causes and causes[-1].get("generation") == generation:
            count[:] = [int(current.get("count", 0))]
            return current
        count[:] = [int(current.get("count", 0)) + 1]
        causes.append({"at": time.time(), "cause": cause, "generation": generation})
        return {"count": count[0], "causes": causes[-KEPT_CAUSES:]}

    update(state, REBUILD_KIND, table.folder, counted)
    return count[0]


def rebuild_count(state: StateStore, table: TableRef) -> int:
    record = state.get(REBUILD_KIND, table.folder)
    return 0 if record is None else int(record.value.get("count", 0))


# -- waiting for Fabric to drop a deleted table ---------------------------------------------------


@dataclass
class DropCheck:
    """Tables whose deleted folder may not be recreated yet (folder -> why, for people), and
    when it is worth checking again (``time.time()`` seconds; None if nothing waits)."""

    waiting: dict[str, str] = field(default_factory=dict)
    recheck_at: float | None = None


def check_drops(publisher: Publisher, settings: Settings, database: str | None) -> DropCheck:
    """Confirm the drops Fabric has made: each table of ``database`` (None: every table) whose
    folder a rebuild deleted may be bound again once Fabric no longer lists it
    (getTablesMirroringStatus, when FABRIC_WORKSPACE_ID and FABRIC_ITEM_ID are set) or,
    without those, once REBUILD_DROP_WAIT_SECONDS have passed since the folder was deleted.

    Fabric configured but not answering (a missing workspace role, an outage): the configured
    wait decides instead, as without the ids, and the error is kept for status; a table is not
    held back for ever by an API the app may not call."""
    state = publisher.state
    pending = [
        (TableRef.from_folder(folder), record)
        for folder, record in state.list(DROP_KIND)
        if database is None or TableRef.from_folder(folder).schema == database
    ]
    check = DropCheck()
    if not pending:
        return check
    now = time.time()
    present: set[tuple[str | None, str]] | None = None
    statuses: dict[tuple[str | None, str], str] = {}
    error: str | None = None
    try:
        present, statuses = _fabric_tables(settings)
    except MirrorError as failure:
        error = str(failure)
    wait = settings.integer("REBUILD_DROP_WAIT_SECONDS")
    for table, record in pending:
        since = record.value.get("since")
        since = since if isinstance(since, int | float) else now
        # A folder outside a schema folder is Fabric's default schema's table.
        keys: set[tuple[str | None, str]] = {(table.schema, table.name)}
        if table.schema is None:
            keys.add((DEFAULT_SCHEMA, table.name))
        if present is None:
            gone = now - since >= wait
            reason = "no Fabric ids set" if error is None else "Fabric could not be asked"
            how = f"a wait of {wait} s ({reason})"
            next_check = since + wait if error is None else now + FABRIC_DROP_POLL_SECONDS
        else:
            gone = not keys & present
            how = "Fabric's table status (getTablesMirroringStatus)"
            next_check = now + FABRIC_DROP_POLL_SECONDS
        if gone and publisher.confirm_drop(table, record.etag):
            log.info("%s: Fabric has dropped the old table (by %s); recreating it", table, how)
            continue
        note: JsonObject = {"checked_at": now, "by": how}
        if error is not None:
            note["error"] = error[:500]
        else:
            note["fabric_status"] = next((statuses[k] for k in keys if k in statuses), None)
        with contextlib.suppress(ConflictError):  # changed meanwhile: judged again next time
            state.replace(DROP_KIND, table.folder, {**record.value, **note}, record.etag)
        check.waiting[table.folder] = (
            f"{table}: waiting for Fabric to drop the old table (folder deleted "
            f"{now - since:.0f} s ago; by {how})"
        )
        check.recheck_at = min(check.recheck_at or next_check, next_check)
    return check


def _fabric_tables(
    settings: Settings,
) -> tuple[set[tuple[str | None, str]] | None, dict[tuple[str | None, str], str]]:
    """The tables Fabric lists now, as (schema, table), and their status; None when no
    workspace and item are configured."""
    from shared.fabric import fabric_table_status  # azure-core only when asked

    entries = fabric_table_status(settings)
    if entries is None:
        return None, {}
    present: set[tuple[str | None, str]] = set()
    statuses: dict[tuple[str | None, str], str] = {}
    for entry in entries:
        name = entry.get("sourceTableName")
        if not isinstance(name, str):
            continue
        schema = entry.get("sourceSchemaName")
        key = (schema if isinstance(schema, str) and schema else None, name)
        present.add(key)
        statuses[key] = str(entry.get("status"))
    return present, statuses
