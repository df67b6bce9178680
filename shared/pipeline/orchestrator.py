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
from shared.landing_zone.publisher import LeaseHeld
from shared.pipeline.changes import ChangeReader
from shared.pipeline.fanout import enqueue
from shared.pipeline.plans import TablePlan
from shared.pipeline.snapshot import pending_tasks, plan_selected
from shared.pipeline.status import record_error
from shared.pipeline.wiring import MirrorContext
from shared.source.retry import Retrier
from shared.state.base import JsonObject, StateStore, update

log = logging.getLogger(__name__)

FAN_OUT_KIND = "fanout"  # per table: the start token of the plan whose partitions were sent


@dataclass
class TickSummary:
    windows: int = 0
    events: int = 0
    messages: int = 0
    rebuilt: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    lease_held_elsewhere: bool = False


def tick(ctx: MirrorContext, queue: QueueClient, budget_seconds: float) -> TickSummary:
    """One timer invocation: plan and fan out what needs a snapshot, then stream."""
    database = ctx.settings.require("MONGODB_DATABASE")
    try:
        return _tick(ctx, queue, budget_seconds, database)
    except Exception as error:
        telemetry.record("errors", 1, database=database, step="tick")
        record_error(ctx.state, database, f"timer tick: {error}")
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
            if result.rebuilt or result.discovered:
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
    """Plan every selected table; send the partitions of each plan not sent yet.

    Sending is recorded per plan (by its start token, so a rebuilt table's new plan is sent
    again) after the messages are out: a tick that died between planning and sending leaves no
    record, and the next tick sends them. One that died after sending and before recording sends
    them twice, which is harmless: a partition's later run takes over from the published
    progress. A message lost later reaches the poison queue and status, never silence.
    """
    selection = plan_selected(ctx)
    summary.stopped.update(selection.stopped)
    for plan in selection.plans:
        if not plan.pending_partitions or _sent(ctx.state, plan):
            continue
        summary.messages += enqueue(queue, pending_tasks([plan]))
        _record_sent(ctx.state, plan)


def _sent(state: StateStore, plan: TablePlan) -> bool:
    record = state.get(FAN_OUT_KIND, plan.table.folder)
    return record is not None and record.value.get("start_token") == plan.start_token


def _record_sent(state: StateStore, plan: TablePlan) -> None:
    sent: JsonObject = {"start_token": plan.start_token}
    update(state, FAN_OUT_KIND, plan.table.folder, lambda _: sent)
