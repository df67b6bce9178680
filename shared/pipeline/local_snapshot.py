"""The CLI's initial sync: plan, then run partitions in a local process pool with progress."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TextIO

from shared.config import Settings, load_settings
from shared.errors import MirrorError
from shared.landing_zone.tables import TableRef
from shared.logs import configure_logging
from shared.pipeline.plans import Phase, TablePlan, load_plan
from shared.pipeline.snapshot import (
    PARTITION_KIND,
    PartitionResult,
    PartitionTask,
    pending_tasks,
    plan_selected,
    record_status,
    run_partition,
)
from shared.pipeline.wiring import MirrorContext, open_context

REFRESH_SECONDS = 1.0
LOG_REFRESH_SECONDS = 10.0  # when output is not a terminal, a line per table this often
_worker_context: MirrorContext | None = None


@dataclass(frozen=True)
class SnapshotSummary:
    tables: list[TablePlan]
    documents: int
    files: int
    seconds: float
    peak_worker_mb: float  # the largest resident set any worker reached


def run_local_snapshot(settings: Settings, out: TextIO = sys.stderr) -> SnapshotSummary:
    """Snapshot every selected collection; returns when all of them are streaming."""
    started = time.monotonic()
    ctx = open_context(settings, select_sources=True)
    try:
        plans = plan_selected(ctx)
        tasks = pending_tasks(plans)
        results = _run_pool(ctx, settings, plans, tasks, out) if tasks else []
        final = [load_plan(ctx.state, plan.table) or plan for plan in plans]
    finally:
        ctx.close()
    unfinished = [str(plan.table) for plan in final if plan.phase != Phase.STREAMING]
    if unfinished:
        raise MirrorError(f"snapshot incomplete for {', '.join(unfinished)}; run again to resume")
    return SnapshotSummary(
        final,
        sum(result.documents for result, _ in results),
        sum(result.files for result, _ in results),
        time.monotonic() - started,
        max((peak for _, peak in results), default=0.0),
    )


def _run_pool(
    ctx: MirrorContext,
    settings: Settings,
    plans: list[TablePlan],
    tasks: list[PartitionTask],
    out: TextIO,
) -> list[tuple[PartitionResult, float]]:
    """Each partition's result with its worker's peak memory (MB) when it finished."""
    workers = settings.integer("SNAPSHOT_WORKERS") or os.cpu_count() or 1
    workers = min(workers, len(tasks))
    progress = ProgressDisplay(ctx, plans, out)
    results: list[tuple[PartitionResult, float]] = []
    failures: list[str] = []
    # spawn, not fork: each worker opens its own MongoDB client, SQLite handle and SDK clients.
    with ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_open_worker,
        initargs=(dict(settings.values),),
    ) as pool:
        pending: set[Future[tuple[PartitionResult, float]]] = set()
        owners: dict[Future[tuple[PartitionResult, float]], PartitionTask] = {}
        for task in tasks:
            future = pool.submit(_run_in_worker, task)
            pending.add(future)
            owners[future] = task
        while pending:
            done, pending = wait(pending, timeout=REFRESH_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                task = owners[future]
                try:
                    results.append(future.result())
                except BrokenProcessPool:
                    failures.append(f"{task.table} partition {task.index}: a worker process died")
                except Exception as error:  # reported per partition; the others carry on
                    failures.append(f"{task.table} partition {task.index}: {error}")
                    record_status(ctx, task, "failed", 0, 0, error=str(error))
            progress.show()
    progress.show(final=True)
    if failures:
        raise MirrorError(
            "snapshot partitions failed (run again to resume):\n  " + "\n  ".join(failures)
        )
    return results


def _open_worker(values: Mapping[str, str]) -> None:
    global _worker_context
    settings = load_settings(values)
    configure_logging(settings.log_level, "%(processName)s")
    _worker_context = open_context(settings)


def _run_in_worker(task: PartitionTask) -> tuple[PartitionResult, float]:
    assert _worker_context is not None
    result = run_partition(_worker_context, task)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ProgressDisplay:
    """One line per table: documents done / estimated, docs/s and ETA, read from state."""

    def __init__(self, ctx: MirrorContext, plans: list[TablePlan], out: TextIO) -> None:
        self._ctx = ctx
        self._plans = {plan.table.folder: plan for plan in plans}
        self._out = out
        self._started = time.monotonic()
        self._tty = out.isatty()
        self._last_shown = float("-inf")

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not (final or self._tty or now - self._last_shown >= LOG_REFRESH_SECONDS):
            return
        self._last_shown = now
        done: dict[str, int] = dict.fromkeys(self._plans, 0)
        for key, record in self._ctx.state.list(PARTITION_KIND):
            folder = key.rsplit("#", 1)[0]
            if folder in done:
                done[folder] += int(record.value.get("documents", 0))
        elapsed = max(time.monotonic() - self._started, 1e-6)
        lines = [
            self._line(self._plans[folder].table, self._plans[folder], count, elapsed)
            for folder, count in done.items()
        ]
        if self._tty and not final:
            self._out.write("\r" + " | ".join(lines) + "\x1b[K")
        else:
            self._out.write(("\n" if self._tty else "") + "\n".join(lines) + "\n")
        self._out.flush()

    @staticmethod
    def _line(table: TableRef, plan: TablePlan, count: int, elapsed: float) -> str:
        total = max(plan.estimated_documents, count)
        rate = count / elapsed
        eta = (total - count) / rate if rate > 0 else float("inf")
        percent = 100.0 * count / total if total else 100.0
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
        return (
            f"{table}: {count:,}/{total:,} docs ({percent:.0f}%) {rate:,.0f} docs/s ETA {eta_text}"
        )
