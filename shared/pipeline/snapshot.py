"""Initial sync: plan each table, run its `_id`-range partitions, fan in to streaming.

The same three steps serve both front doors: the Functions app fans partitions out as queue
messages; the CLI runs them in a local process pool (shared/pipeline/local_snapshot.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

from bson.raw_bson import RawBSONDocument

from shared.errors import MirrorError
from shared.landing_zone.parquet_files import RowMarker
from shared.landing_zone.publisher import Superseded
from shared.landing_zone.tables import TableRef
from shared.pipeline.schema_registry import SchemaRegistry
from shared.pipeline.tables import (
    TABLE_KIND,
    Phase,
    TablePlan,
    complete_partition,
    load_plan,
)
from shared.pipeline.wiring import MirrorContext
from shared.source.change_stream import current_position
from shared.source.collections import SourceCollection
from shared.source.id_ranges import id_from_json, id_to_json, read_range, split_ranges
from shared.state.base import ConflictError, JsonObject, update

log = logging.getLogger(__name__)

PARTITION_KIND = "partition"
DOCUMENTS_PER_PARTITION = 250_000
MAX_AUTO_PARTITIONS = 256


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


def plan_table(ctx: MirrorContext, source: SourceCollection) -> TablePlan:
    """Plan one table's snapshot (idempotent: an existing plan is returned as it is).

    The change-stream start point is taken and recorded *before* anything is read, so every
    change made while the snapshot runs can be replayed after it.
    """
    table = TableRef(source.database, source.name)
    plan = load_plan(ctx.state, table)
    if plan is not None and plan.phase != Phase.PLANNING:
        return plan
    collection = ctx.collection(source.database, source.name)
    if plan is None:
        plan = TablePlan(
            table, source.database, source.name, Phase.PLANNING, current_position(collection)
        )
        try:
            ctx.state.create(TABLE_KIND, table.folder, plan.to_json())
        except ConflictError:
            return plan_table(ctx, source)  # another planner recorded first; use its plan
    ctx.publisher.prepare_table(table)  # _metadata.json before any data file
    if collection.find_one({}, projection={"_id": 1}) is None:
        ranges: tuple[Any, ...] = ()
        phase = Phase.STREAMING  # empty: a table with metadata and no rows
        estimated = 0
    else:
        estimated = collection.estimated_document_count()
        ranges = tuple(split_ranges(collection, _partition_count(ctx, estimated)))
        phase = Phase.SNAPSHOTTING
    planned = replace(plan, phase=phase, ranges=ranges, estimated_documents=estimated)

    def fill(value: JsonObject | None) -> JsonObject:
        current = TablePlan.from_json(table.folder, value or {})
        return value if current.phase != Phase.PLANNING else planned.to_json()  # type: ignore[return-value]

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


def run_partition(ctx: MirrorContext, task: PartitionTask) -> PartitionResult:
    """Publish one `_id` range, resuming after the last `_id` already published.

    Idempotent: a redelivered or restarted task publishes only what is missing, and the
    fan-in that finishes the table happens exactly once.
    """
    plan = load_plan(ctx.state, task.table)
    if plan is None:
        raise MirrorError(f"table {task.table} has no plan")
    if not 0 <= task.index < len(plan.ranges):
        raise MirrorError(f"table {task.table} has no partition {task.index}")
    if plan.phase != Phase.SNAPSHOTTING or task.index in plan.completed:
        return PartitionResult(task, 0, 0, False)
    ctx.publisher.repair(task.table)
    writer = f"snapshot-{task.index:04d}"
    owner, progress = ctx.publisher.claim(task.table, writer)
    after = id_from_json(progress["after"]) if "after" in progress else None
    documents = int(progress.get("documents", 0))
    collection = ctx.collection(plan.database, plan.collection)
    registry = SchemaRegistry(ctx.state, task.table)
    rows_per_file = ctx.settings.integer("FILE_ROWS") or 100_000
    bytes_per_file = ctx.settings.integer("FILE_BYTES") or 128 * 1024**2
    expected = plan.estimated_documents // max(1, len(plan.ranges))
    record_status(ctx, task, "running", documents, expected)

    batch: list[bytes] = []
    size = 0
    files = 0
    last: RawBSONDocument | None = None

    def publish() -> None:
        nonlocal batch, size, files, documents
        assert last is not None
        table = registry.convert(batch, [RowMarker.UPSERT] * len(batch))
        documents += len(batch)
        ctx.publisher.publish(
            task.table,
            table,
            writer,
            {"after": id_to_json(last["_id"]), "documents": documents},
            owner,
        )
        files += 1
        batch, size = [], 0
        record_status(ctx, task, "running", documents, expected)

    try:
        for document in read_range(
            collection, plan.ranges[task.index], after, batch_size=min(rows_per_file, 10_000)
        ):
            raw = bytes(document.raw)  # already bytes: no copy
            batch.append(raw)
            size += len(raw)
            last = document
            if len(batch) >= rows_per_file or size >= bytes_per_file:
                publish()
        if batch:
            publish()
    except Superseded:
        log.info("%s partition %d was taken over by another run; stopping", task.table, task.index)
        return PartitionResult(task, documents, files, False)
    record_status(ctx, task, "done", documents, expected)
    finished = complete_partition(ctx.state, task.table, task.index)
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


def partition_key(task: PartitionTask) -> str:
    return f"{task.table.folder}#{task.index:05d}"


def _partition_count(ctx: MirrorContext, estimated: int) -> int:
    configured = ctx.settings.integer("SNAPSHOT_PARTITIONS")
    if configured is not None:
        return configured
    return max(1, min(MAX_AUTO_PARTITIONS, math.ceil(estimated / DOCUMENTS_PER_PARTITION)))
