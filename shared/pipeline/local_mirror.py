"""The `run` command: snapshot what needs it in local worker processes while this process reads
the database's change windows, then stream until stopped (or, with ``once``, until drained).

Reading windows while partitions run is what keeps a long snapshot independent of the oplog:
the stream's checkpoint keeps moving and each snapshotting table's changes are held in the
landing zone until its snapshot is published (shared/pipeline/changes.py).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from shared.config import Settings
from shared.errors import ConfigError, MirrorError, describe_error
from shared.landing_zone.publisher import LeaseHeld
from shared.pipeline.changes import ChangeReader, WindowResult
from shared.pipeline.local_snapshot import REFRESH_SECONDS, ProgressDisplay, SnapshotPool
from shared.pipeline.plans import Phase, all_plans
from shared.pipeline.snapshot import pending_tasks, plan_selected
from shared.pipeline.status import record_error
from shared.pipeline.wiring import MirrorContext, open_context
from shared.source.retry import Retrier

log = logging.getLogger(__name__)

# With `all`, how often collections created since are looked for (events also reveal them).
DISCOVERY_SECONDS = 30.0


@dataclass
class RunSummary:
    windows: int = 0
    events: int = 0
    rebuilt: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    # Rebuilt tables held back until Fabric drops the old table (shared/pipeline/rebuild.py).
    waiting: dict[str, str] = field(default_factory=dict)
    recheck_at: float | None = None  # time.time() seconds
    rereads: Counter[str] = field(default_factory=Counter)  # failed windows read again, by cause
    snapshot_stopped: list[str] = field(default_factory=list)  # tables to resume on the next run


@dataclass
class _TableTally:
    events: int = 0  # since the run started
    lag: float = 0.0  # of its last change event when read; 0 once a window found none left


@dataclass
class _Progress:
    """What the progress lines report: running totals per table, and whether anything
    changed since the last lines."""

    tables: dict[str, _TableTally] = field(default_factory=dict)
    changed: bool = False


def run_mirror(
    settings: Settings,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    out: TextIO = sys.stderr,
) -> RunSummary:
    """Mirror the selected collections until ``stop`` is set; with ``once``, until every table
    is snapshotted and every stream is drained up to the present."""
    stop = stop or threading.Event()
    ctx = open_context(settings, select_sources=True)
    reader = ChangeReader(ctx, settings.require("MONGODB_DATABASE"), settings.collections())
    pool: SnapshotPool | None = None
    summary = RunSummary()
    retrier = Retrier.for_settings(settings, f"change stream of {reader.database}")
    try:
        reader.acquire()
        replan_at = 0.0
        display: ProgressDisplay | None = None
        progress = _Progress()
        progress_seconds = settings.integer("PROGRESS_SECONDS")
        shown_at = time.monotonic()
        while True:
            if time.monotonic() >= replan_at:
                pool, display = _plan(ctx, settings, pool, summary, out) or (pool, display)
                replan_at = time.monotonic() + DISCOVERY_SECONDS
                if summary.recheck_at is not None:  # a rebuilt table may be recreated then
                    wait = max(0.0, summary.recheck_at - time.time())
                    replan_at = min(replan_at, time.monotonic() + wait)
            result = retrier.call(reader.window)  # a failed window is re-read from its checkpoint
            summary.windows += 1
            summary.events += result.events
            _count(progress, result)
            if result.rebuilt or result.discovered:
                summary.rebuilt += result.rebuilt
                replan_at = 0.0  # plan rebuilt and new tables now, not at the next discovery
            if pool is not None:
                finished = pool.wait(0)
                pool.raise_failures()
                if finished:
                    replan_at = 0.0
                if display is not None:
                    display.show(final=not pool.busy)
                if not pool.busy:
                    pool.close()
                    pool, display = None, None
            if time.monotonic() - shown_at >= progress_seconds:
                _show(ctx, reader.database, progress, time.monotonic() - shown_at, out)
                shown_at = time.monotonic()
            if stop.is_set():
                if pool is not None:  # a requested stop: partitions stop at a safe point
                    _stop_partitions(pool, display)
                    summary.snapshot_stopped = sorted({str(t.table) for t in pool.stopped})
                    pool.close()
                    pool = None
                break
            # A rebuilt or new table is planned (and snapshotted) before --once may stop, once
            # Fabric has dropped its old table.
            planning_due = replan_at == 0.0 or bool(summary.waiting)
            if once and result.idle and not planning_due and pool is None and reader.settled():
                break
        if progress.changed:
            _show(ctx, reader.database, progress, time.monotonic() - shown_at, out)
    except (LeaseHeld, ConfigError):
        raise  # nothing went wrong with the mirror itself
    except Exception as error:
        record_error(ctx.state, reader.database, f"run: {describe_error(error)}")
        raise
    finally:
        summary.rereads = reader.rereads
        if pool is not None:
            pool.close(wait=False)
        try:
            reader.release()
        finally:
            ctx.close()
    if summary.stopped:
        raise MirrorError(
            "stopped before publishing anything:\n  " + "\n  ".join(summary.stopped.values())
        )
    return summary


def _stop_partitions(pool: SnapshotPool, display: ProgressDisplay | None) -> None:
    """Stop the running partitions after the piece in hand and wait for them (seconds: a
    piece and one file), so a stopped run leaves no partition cut short."""
    pool.stop()
    while pool.busy:
        pool.wait(REFRESH_SECONDS)
        if display is not None:
            display.show()
    if display is not None:
        display.show(final=True)
    pool.raise_failures()


def _plan(
    ctx: MirrorContext,
    settings: Settings,
    pool: SnapshotPool | None,
    summary: RunSummary,
    out: TextIO,
) -> tuple[SnapshotPool, ProgressDisplay] | None:
    """Plan every selected table (new and rebuilt ones included) and start their partitions."""
    selection = plan_selected(ctx)
    for plan in selection.plans:  # stopped at an earlier planning (e.g. mid-rebuild), not now
        summary.stopped.pop(f"{plan.database}.{plan.collection}", None)
    summary.stopped.update(selection.stopped)
    for name in set(summary.waiting) - set(selection.waiting):
        out.write(f"{name}: Fabric has dropped the old table; snapshotting it again\n")
    for name, why in selection.waiting.items():
        if name not in summary.waiting:
            out.write(f"{why}\n")
    summary.waiting, summary.recheck_at = dict(selection.waiting), selection.recheck_at
    running = pool.running() if pool is not None else set()
    tasks = [task for task in pending_tasks(selection.plans) if task not in running]
    if not tasks:
        return None
    if pool is None:
        pool = SnapshotPool(ctx, settings, len(tasks))
    pool.submit(tasks)
    snapshotting = [plan for plan in selection.plans if plan.pending_partitions]
    return pool, ProgressDisplay(ctx, snapshotting, out, pool.documents_read)


def _count(progress: _Progress, result: WindowResult) -> None:
    for name, activity in result.tables.items():
        entry = progress.tables.setdefault(name, _TableTally())
        entry.events += activity.events
        entry.lag = activity.lag_seconds
        progress.changed = progress.changed or activity.events > 0
    if result.idle:  # read up to the present: no table is behind
        for entry in progress.tables.values():
            entry.lag = 0.0


def _show(
    ctx: MirrorContext, database: str, progress: _Progress, seconds: float, out: TextIO
) -> None:
    """A line per mirrored table (those without changes too): change events since the run
    started and lag; or, when nothing changed since the last lines, one heartbeat line."""
    plans = {str(plan.table): plan for plan in all_plans(ctx.state) if plan.database == database}
    names = sorted(set(plans) | set(progress.tables))
    total = sum(entry.events for entry in progress.tables.values())
    if not progress.changed:
        out.write(
            f"idle for {seconds:.0f}s: {count(len(names), 'table')}, "
            f"{count(total, 'change event')} mirrored since start\n"
        )
    for name in names if progress.changed else ():
        plan = plans.get(name)
        if plan is not None and plan.phase != Phase.STREAMING:  # changes held until published
            out.write(f"{name}: {plan.phase}\n")
            continue
        entry = progress.tables.get(name, _TableTally())
        out.write(f"{name}: {count(entry.events, 'change event')} mirrored, lag {entry.lag:.1f}s\n")
    out.flush()
    progress.changed = False


def count(number: int, noun: str) -> str:
    """``1 window``, ``2 windows``: a count and its noun, in the singular for one."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
