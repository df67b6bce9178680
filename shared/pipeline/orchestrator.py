"""The Functions timer's tick: the orchestrator of the durable-style mirror.

Each tick plans the tables that need a snapshot (first run, a collection created since, a table
being rebuilt) and fans their partitions out on the queue, then runs change windows back to back
until its time budget is spent. The reader lease makes overlapping ticks (or a second app) harmless:
a tick that cannot take it leaves the windows to the holder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from azure.storage.queue import QueueClient

from shared import telemetry
from shared.errors import describe_error
from shared.landing_zone.publisher import LeaseHeld
from shared.pipeline.changes import ChangeReader
from shared.pipeline.fanout import fan_out
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.status import record_error
from shared.pipeline.wiring import MirrorContext
from shared.source.retry import Retrier

log = logging.getLogger(__name__)


@dataclass
class TickSummary:
    windows: int = 0
    events: int = 0
    messages: int = 0
    rebuilt: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    # Rebuilt tables held back until Fabric drops the old table (shared/pipeline/rebuild.py).
    waiting: dict[str, str] = field(default_factory=dict)
    recheck_at: float | None = None  # time.time() seconds
    lease_held_elsewhere: bool = False


def tick(ctx: MirrorContext, queue: QueueClient, budget_seconds: float) -> TickSummary:
    """One timer invocation: plan and fan out what needs a snapshot, then stream."""
    database = ctx.settings.require("MONGODB_DATABASE")
    try:
        return _tick(ctx, queue, budget_seconds, database)
    except Exception as error:
        telemetry.record("errors", 1, database=database, step="tick")
        record_error(ctx.state, database, f"timer tick: {describe_error(error)}")
        raise


def _tick(
    ctx: MirrorContext, queue: QueueClient, budget_seconds: float, database: str
) -> TickSummary:
    deadline = time.monotonic() + budget_seconds
    summary = TickSummary()
    reader = ChangeReader(ctx, database, ctx.settings.collections())
    _plan_and_fan_out(ctx, queue, summary)
    try:
        reader.acquire()
    except LeaseHeld as error:
        log.info("%s", error)
        summary.lease_held_elsewhere = True
        return summary
    retrier = Retrier.for_settings(ctx.settings, f"change stream of {database}")
    try:
        while True:
            result = retrier.call(reader.window)  # a failed window is re-read from its checkpoint
            summary.windows += 1
            summary.events += result.events
            recheck = summary.recheck_at is not None and time.time() >= summary.recheck_at
            if result.rebuilt or result.discovered or recheck:
                summary.rebuilt += result.rebuilt
                _plan_and_fan_out(ctx, queue, summary)
            # Leave room for one more window (grown while the replicator is behind) and its
            # publishes inside the budget.
            if time.monotonic() + 2 * reader.window_limits.seconds >= deadline:
                break
    finally:
        reader.release()
    return summary


def _plan_and_fan_out(ctx: MirrorContext, queue: QueueClient, summary: TickSummary) -> None:
    """Plan every selected table; send the partitions of each plan not sent yet (once per plan,
    shared with the planning messages of ``POST /api/snapshot``: see fanout.fan_out)."""
    selection = plan_selected(ctx)
    summary.stopped.update(selection.stopped)
    summary.waiting, summary.recheck_at = dict(selection.waiting), selection.recheck_at
    for plan in selection.plans:
        summary.messages += fan_out(ctx.state, queue, plan)
