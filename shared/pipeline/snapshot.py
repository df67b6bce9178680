"""Initial sync: plan each table, run its `_id`-range partitions, fan in to streaming.

The same three steps serve both front doors: the Functions app fans partitions out as queue
messages; the CLI runs them in a local process pool (shared/pipeline/local_snapshot.py).

Snapshot files carry no ``__rowMarker__`` column: every row an insert. Microsoft's landing-zone
format page ("Initial load"): the marker in the initial data is "optional and not recommended",
and "Mirroring treats the entire file as an INSERT when __rowMarker__ doesn't exist"; its best
practices ("Optimize insert-only files"): marker-free Parquet files can use direct staging, a
marker-bearing file takes the row-based path even when every marker is an insert. Mixing the two
in one table is the documented sequence, initial load first: "Data changes are considered as
incremental changes once the __rowMarker__ column is found from any row/file" ("Incremental
changes"). So a table generation's files are marker-free up to the end of its snapshot and carry
markers from the first change file on, never the other way round: change windows hold a table's
changes until its snapshot is complete (shared/pipeline/changes.py), a rebuild starts a new
folder (a new table in Fabric) before a new snapshot, and a zero-row filler of a snapshot number
has no marker column either (publisher.PendingPublish.markers). ``_metadata.json`` never sets
``isUpsertDefaultRowMarker``, so marker-free rows stay inserts.

Inserts have no duplicate-key check in Fabric, so the snapshot must never write an ``_id`` twice:
ranges are disjoint, a range is read in ``_id`` order, and a partition's progress (the last
``_id`` published) is recorded in the same compare-and-swap that numbers its file, so a retried,
redelivered or restarted partition resumes strictly after what is in the landing zone and a
fenced-out worker publishes nothing more (tests/pipeline/test_direct_staging.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from shared import telemetry
from shared.errors import MirrorError, describe_error
from shared.landing_zone.parquet_files import ROW_MARKER, RowMarker
from shared.landing_zone.publisher import (
    BindingError,
    PublishConflict,
    Superseded,
    TableRebuilding,
)
from shared.landing_zone.tables import TableRef, collection_name
from shared.pipeline.plans import (
    PARTITION_KIND,
    REBUILD_KIND,
    TABLE_KIND,
    Phase,
    StalePlan,
    TablePlan,
    all_plans,
    complete_partition,
    load_plan,
)
from shared.pipeline.rebuild import check_drops, resume_rebuild
from shared.pipeline.schema_registry import SchemaRegistry
from shared.pipeline.stream_checkpoint import ensure_checkpoint
from shared.pipeline.wiring import MirrorContext, selected_sources
from shared.source.change_stream import current_position
from shared.source.collections import SourceCollection
from shared.source.id_ranges import (
    id_from_json,
    id_to_json,
    read_chunks_resuming,
    split_ranges,
)
from shared.source.retry import Retrier
from shared.state.base import ConflictError, JsonObject, update

log = logging.getLogger(__name__)

DOCUMENTS_PER_PARTITION = 250_000
MIN_DOCUMENTS_PER_PARTITION = 10_000  # below this, a worker's start-up costs more than it saves
MAX_AUTO_PARTITIONS = 256
CONVERT_ROWS = 25_000


@dataclass(frozen=True)
class PartitionTask:
    table: TableRef
    index: int


@dataclass(frozen=True)
class PartitionResult:
    task: PartitionTask
    documents: int
    files: int
    table_finished: bool
    stopped: bool = False  # stopped by request at a safe point; the next run resumes it


def plan_table(ctx: MirrorContext, source: SourceCollection) -> TablePlan:
    """Plan one table's snapshot (idempotent: an existing plan is returned as it is).

    The change-stream start point is taken and recorded *before* anything is read, so every
    change made while the snapshot runs can be replayed after it.
    """
    table = TableRef.for_collection(source.database, source.name)
    retrier = Retrier.for_settings(ctx.settings, f"planning {table}")
    retrier.call(ctx.describe_source)  # for _partnerEvents.json, which prepare_table writes
    # The folder must belong to this state before anything is recorded or published; this also
    # writes _metadata.json before any data file.
    try:
        ctx.publisher.prepare_table(table)
    except TableRebuilding:
        resume_rebuild(ctx.publisher, table)  # a crashed or paused rebuild: finish it first
        ctx.publisher.prepare_table(table)
    generation = ctx.publisher.generation(table)
    plan = load_plan(ctx.state, table)
    if plan is not None and plan.phase != Phase.PLANNING:
        return plan
    collection = ctx.collection(source.database, source.name)
    if plan is None:
        start = retrier.call(lambda: current_position(collection))
        plan = TablePlan(
            table, source.database, source.name, Phase.PLANNING, start, generation=generation
        )
        try:
            ctx.state.create(TABLE_KIND, table.folder, plan.to_json())
        except ConflictError:
            return plan_table(ctx, source)  # another planner recorded first; use its plan
    if retrier.call(lambda: collection.find_one({}, projection={"_id": 1})) is None:
        ranges: tuple[Any, ...] = ()
        phase = Phase.STREAMING  # empty: a table with metadata and no rows
        estimated = 0
    else:
        estimated = retrier.call(collection.estimated_document_count)
        count = _partition_count(ctx, estimated)
        ranges = tuple(retrier.call(lambda: split_ranges(collection, count)))
        phase = Phase.SNAPSHOTTING
    planned = replace(plan, phase=phase, ranges=ranges, estimated_documents=estimated)

    def fill(value: JsonObject | None) -> JsonObject:
        if value is None:
            raise MirrorError(f"the plan of {table} vanished while planning")
        current = TablePlan.from_json(table.folder, value)
        return planned.to_json() if current.phase == Phase.PLANNING else value

    record = update(ctx.state, TABLE_KIND, table.folder, fill)
    final = TablePlan.from_json(table.folder, record.value)
    log.info(
        "%s planned: %s, %d partitions, ~%d documents",
        table,
        final.phase,
        len(final.ranges),
        final.estimated_documents,
    )
    return final


@dataclass(frozen=True)
class Selection:
    """The plans of the selected tables, and the tables stopped before anything was published
    (their folder and this state store do not belong together), each with what to do.

    ``waiting``: selected tables held back while being rebuilt (Fabric has not dropped the old
    table yet, or a resync is under way), each with why; not an error, they are planned once
    that is over. ``recheck_at``: when to plan again for them (``time.time()`` seconds)."""

    plans: list[TablePlan]
    stopped: dict[str, str]
    waiting: dict[str, str] = field(default_factory=dict)
    recheck_at: float | None = None


def plan_selected(ctx: MirrorContext) -> Selection:
    """Plan every collection the settings select (the orchestrator's first step).

    A table that cannot be planned (its folder fails the binding check, its ``_metadata.json``
    names other keys, storage refuses it) is stopped alone; the others go on.
    """
    # Selected afresh each time: the `run` loop and the timer find collections created since,
    # and a named collection dropped while mirrored does not stop the others.
    sources = selected_sources(ctx.mongo, ctx.settings, mirrored_collections(ctx))
    # The database's change stream starts before any table's snapshot reads anything.
    ensure_checkpoint(ctx, ctx.settings.require("MONGODB_DATABASE"))
    return plan_sources(ctx, sources)


def plan_sources(ctx: MirrorContext, sources: list[SourceCollection]) -> Selection:
    """Plan ``sources`` (the stream's checkpoint must be recorded first); each table that cannot
    be planned is stopped alone."""
    # Rebuilt tables whose old table Fabric has dropped by now may be planned again; the others
    # wait, alone (shared/pipeline/rebuild.py).
    drops = check_drops(ctx.publisher, ctx.settings, ctx.settings.require("MONGODB_DATABASE"))
    plans: list[TablePlan] = []
    stopped: dict[str, str] = {}
    waiting: dict[str, str] = {}
    recheck_at = drops.recheck_at
    for source in sources:
        name = f"{source.database}.{source.name}"
        folder = TableRef.for_collection(source.database, source.name).folder
        if folder in drops.waiting:
            waiting[name] = drops.waiting[folder]
            continue
        try:
            plans.append(plan_table(ctx, source))
        except TableRebuilding as error:  # a rebuild under way (a resync): planned after it
            log.info("%s", error)
            waiting[name] = str(error)
            soon = time.time() + 1.0
            recheck_at = soon if recheck_at is None else min(recheck_at, soon)
        except Exception as error:  # whatever it is, it is this table's alone
            table = TableRef.for_collection(source.database, source.name)
            named = isinstance(error, BindingError | PublishConflict)  # these name the table
            message = str(error) if named else f"{table}: {describe_error(error)}"
            log.error("%s", message)
            stopped[name] = message
    return Selection(plans, stopped, waiting, recheck_at)


def mirrored_collections(ctx: MirrorContext) -> set[str]:
    """Collections of the database that have a plan, or had one before a rebuild."""
    database = ctx.settings.require("MONGODB_DATABASE")
    names = {plan.collection for plan in all_plans(ctx.state) if plan.database == database}
    # Only named collections are looked up in what this returns, so they are enough to map
    # a hashed folder name back.
    named = ctx.settings.collections() or ()
    for folder, _ in ctx.state.list(REBUILD_KIND):
        table = TableRef.from_folder(folder)
        name = collection_name(table.name, named)
        if table.schema == database and name is not None:
            names.add(name)
    return names


def pending_tasks(plans: list[TablePlan]) -> list[PartitionTask]:
    return [PartitionTask(plan.table, index) for plan in plans for index in plan.pending_partitions]


def run_partition(
    ctx: MirrorContext,
    task: PartitionTask,
    stopping: Callable[[], bool] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> PartitionResult:
    """Publish one `_id` range, resuming after the last `_id` already published.

    Idempotent: a redelivered or restarted task publishes only what is missing, and the
    fan-in that finishes the table happens exactly once.

    ``stopping`` (asked after each piece read) stops the partition at a safe point: what was
    read is published as one file, and the next run resumes after its last `_id` (a requested
    stop is not a failure).

    ``on_read`` is told, as each cursor batch arrives, the partition's documents read so far
    (those published before included): progress between files, which are published only every
    FILE_ROWS documents, without a state-store write per batch.
    """
    if stopping is not None and stopping():
        return PartitionResult(task, 0, 0, False, stopped=True)
    plan = load_plan(ctx.state, task.table)
    if plan is None or not 0 <= task.index < len(plan.ranges):
        # Sent for a plan the table no longer has (rebuilt since): the new plan sends its own.
        log.info("%s partition %d belongs to a replaced plan; skipped", task.table, task.index)
        return PartitionResult(task, 0, 0, False)
    if plan.phase != Phase.SNAPSHOTTING or task.index in plan.completed:
        return PartitionResult(task, 0, 0, False)
    writer = f"snapshot-{task.index:04d}"
    try:
        ctx.publisher.prepare_table(task.table, plan.generation or None)
        owner, progress = ctx.publisher.claim(task.table, writer)
    except Superseded as error:  # a generation rebuilt away, or the partition taken over
        log.info("%s partition %d: %s; stopping", task.table, task.index, error)
        return PartitionResult(task, 0, 0, False)
    after = id_from_json(progress["after"]) if "after" in progress else None
    documents = int(progress.get("documents", 0))
    collection = ctx.collection(plan.database, plan.collection)
    registry = SchemaRegistry(ctx.state, task.table, plan.generation, ctx.settings.column_budget)
    expected = plan.estimated_documents // max(1, len(plan.ranges))
    record_status(ctx, task, "running", documents, expected)

    files = 0
    file_rows = ctx.settings.file_rows
    file_bytes = ctx.settings.file_bytes
    # Convert in pieces of at most CONVERT_ROWS (cache-friendly, half the memory), publish files
    # of up to FILE_ROWS / FILE_BYTES made of whole pieces.
    piece_rows = math.ceil(file_rows / math.ceil(file_rows / CONVERT_ROWS))
    pending: list[pa.Table] = []
    pending_rows = pending_bytes = 0
    last_id: Any = None

    def flush() -> None:
        nonlocal pending, pending_rows, pending_bytes, documents, files, progress
        batch = pa.concat_tables(pending, promote_options="default")
        documents += pending_rows
        progress = {"after": id_to_json(last_id), "documents": documents}
        ctx.publisher.publish(task.table, _inserts_only(batch), writer, progress, owner)
        files += 1
        pending, pending_rows, pending_bytes = [], 0, 0
        record_status(ctx, task, "running", documents, expected)

    def read(ahead: int) -> None:
        if on_read is not None:  # `ahead`: read, not yet yielded as a piece
            on_read(documents + pending_rows + ahead)

    pieces = read_chunks_resuming(
        collection,
        plan.ranges[task.index],
        after,
        Retrier.for_settings(ctx.settings, "MongoDB read"),  # the caller names the partition
        on_batch=read if on_read is not None else None,
        max_rows=piece_rows,
        max_bytes=file_bytes,
    )
    try:
        for piece in pieces:
            if stopping is not None and stopping():
                if pending:
                    flush()  # what was read, published as one more file: a resume point
                record_status(ctx, task, "stopped", documents, expected)
                return PartitionResult(task, documents, files, False, stopped=True)
            if pending and (
                pending_rows + piece.count > file_rows
                or pending_bytes + len(piece.data) > file_bytes
            ):
                flush()
            # Converted with markers (the registry's one path), published without them.
            pending.append(registry.convert(piece.data, [RowMarker.INSERT] * piece.count))
            pending_rows += piece.count
            pending_bytes += len(piece.data)
            last_id = piece.last_id
        if pending:
            flush()
        # Fenced by the claim: only the current holder of the partition records it done, and only
        # a plan of the same generation counts it.
        ctx.publisher.record_progress(task.table, writer, {**progress, "done": True}, owner)
        finished = complete_partition(ctx.state, task.table, task.index, plan.generation)
    except (Superseded, StalePlan):
        log.info("%s partition %d was taken over by another run; stopping", task.table, task.index)
        return PartitionResult(task, documents, files, False)
    except Exception as error:
        # Kept for status: a partition that ends on the poison queue shows its real cause.
        reason = describe_error(error)[:2000]
        record_status(ctx, task, "retrying", documents, expected, error=reason)
        telemetry.record("errors", 1, table=str(task.table), step="partition")
        raise
    record_status(ctx, task, "done", documents, expected)
    if finished:
        log.info("%s snapshot complete: streaming from the recorded start point", task.table)
    return PartitionResult(task, documents, files, finished)


def record_status(
    ctx: MirrorContext,
    task: PartitionTask,
    status: str,
    documents: int,
    expected: int,
    error: str | None = None,
) -> None:
    """Progress for people (CLI bar, status endpoint); correctness never depends on it."""
    key = partition_key(task)

    def change(value: JsonObject | None) -> JsonObject:
        current = value or {"started": time.time(), "attempts": 0}
        attempts = int(current.get("attempts", 0)) + (1 if value is None else 0)
        return {
            **current,
            "status": status,
            "documents": documents,
            "expected": expected,
            "updated": time.time(),
            "error": error,
            "attempts": attempts,
        }

    update(ctx.state, PARTITION_KIND, key, change)


def _inserts_only(batch: pa.Table) -> pa.Table:
    """The batch without its row markers: an insert-only file for direct staging (see the
    module docstring). The converter always adds the column; dropping it costs no copy."""
    return batch.drop_columns([ROW_MARKER])


def mark_failed(ctx: MirrorContext, task: PartitionTask, error: str) -> None:
    """Record that a partition gave up (e.g. its message reached the poison queue)."""
    key = partition_key(task)

    def change(value: JsonObject | None) -> JsonObject:
        current = value or {}
        last = current.get("error")
        reason = f"{error}; last error: {last}" if last and last not in error else error
        return {**current, "status": "failed", "error": reason[:2000], "updated": time.time()}

    update(ctx.state, PARTITION_KIND, key, change)


def partition_key(task: PartitionTask) -> str:
    return f"{task.table.folder}#{task.index:05d}"


def _partition_count(ctx: MirrorContext, estimated: int) -> int:
    """SNAPSHOT_PARTITIONS, or enough ranges to keep every worker busy and each range modest."""
    configured = ctx.settings.partitions
    if configured is not None:
        return configured
    workers = ctx.settings.workers
    by_size = math.ceil(estimated / DOCUMENTS_PER_PARTITION)
    by_workers = min(workers, estimated // MIN_DOCUMENTS_PER_PARTITION)
    return max(1, min(MAX_AUTO_PARTITIONS, max(by_size, by_workers)))
