"""Azure Functions front door (Python v2 programming model).

Each trigger parses its input, calls one engine function from ``shared/`` and maps the result;
the engine knows nothing about Functions. Settings come from app settings (see
local.settings.json.example) and are validated before anything is done.

HTTP triggers answer within 230 seconds whatever ``functionTimeout`` says (Azure Load Balancer's
idle timeout; Microsoft's "Azure Functions hosting options", function app timeout duration), so
none of them does work that grows with the number of tables: ``start_snapshot`` only queues the
planning, and ``inspect`` replays one table or one page of tables and links the next page.

The initial sync is a durable-style orchestration built from plain triggers: ``start_snapshot``
sends one planning message; ``snapshot_partition`` runs each message: a planning page plans a few
tables (start point first, then `_id` ranges), sends one message per partition and the next page;
a partition message publishes one `_id` range; the last partition to finish flips its table to
streaming with an ETag-guarded update; ``snapshot_partition_poison`` records partitions (and
planning pages) that kept failing, so status shows them.

Change capture is the timer ``mirror_tick`` (schedule: the app setting CHANGE_SCHEDULE, which the
host resolves itself, so it must be set as an app setting; Settings' default does not reach the
binding): each tick plans and fans out what needs a snapshot (first run, a new collection, a
rebuild) on the same queue, then runs change windows for CHANGE_BUDGET_SECONDS. The database's
reader lease makes an overlapping tick (or a second app) a harmless no-op. A failing tick raises,
so the host records a failed invocation. ``resync`` (``POST /api/tables/{table}/resync``) drops a
table's folder and state (after the change reader's window in flight); the first tick after Fabric
dropped the old table snapshots it afresh.
"""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import azure.functions as func

from shared.config import load_settings
from shared.errors import ConfigError, MirrorError, UnknownTableError
from shared.pipeline.fanout import (
    POISON_QUEUE_NAME,
    QUEUE_NAME,
    PlanTask,
    decode_task,
    open_queue,
    plan_page,
    queue_connection,
    start_planning,
)
from shared.pipeline.inspect import (
    MAX_PAGE_TABLES,
    PAGE_TABLES,
    inspect_landing_zone,
    inspect_page,
    report_to_json,
)
from shared.pipeline.orchestrator import tick
from shared.pipeline.rebuild import resync_table
from shared.pipeline.snapshot import mark_failed, run_partition
from shared.pipeline.status import collect_status, record_error
from shared.pipeline.wiring import ContextCache, open_landing_zone_store, open_state

app = func.FunctionApp()
log = logging.getLogger("mongo_fabric_mirror")
contexts = ContextCache()  # one engine context per worker process, reused by every trigger
# The queue triggers listen through the connection open_queue sends through (QUEUE_STORAGE when
# set, else the host storage): read from the app settings when the worker indexes the functions,
# which it does again whenever an app setting changes (the app restarts).
QUEUE_CONNECTION = queue_connection(os.environ)


def _json(body: object, status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/json", headers=headers
    )


def _describe(error: MirrorError) -> str:
    prefix = "configuration error: " if isinstance(error, ConfigError) else ""
    return f"{prefix}{error}"


def _error(error: MirrorError, status: int = 500) -> func.HttpResponse:
    log.error("%s", _describe(error))
    return _json({"error": _describe(error)}, status)


@app.route(route="landing-zone/inspect", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def inspect(req: func.HttpRequest) -> func.HttpResponse:
    """Check the landing zone against the Fabric contract: one table (``?table=``), or one page
    of tables (``?after=<folder>&limit=<n>``) with ``next`` naming the rest. 200 if every table
    reported conforms, else 409; the landing zone conforms when every page answers 200."""
    table = req.params.get("table") or None
    after = req.params.get("after") or None
    limit = _limit(req.params.get("limit"))
    if limit is None:
        return _json({"error": f"limit: must be a whole number from 1 to {MAX_PAGE_TABLES}"}, 400)
    try:
        store = open_landing_zone_store(load_settings(os.environ))
        if table is not None:
            reports, following = inspect_landing_zone(store, table), None
        else:
            page = inspect_page(store, after, limit)
            reports, following = page.reports, page.after
    except UnknownTableError as error:
        return _json({"error": error.problem}, 404)
    except MirrorError as error:
        return _error(error)
    conforms = all(report.conforms for report in reports)
    body: dict[str, object] = {"conforms": conforms, "tables": [report_to_json(r) for r in reports]}
    headers = None
    if table is None:
        body["complete"] = following is None
        body["next"] = None
        if following is not None:
            body["next"] = _with_query(req.url, after=following, limit=str(limit))
            headers = {"Link": f'<{body["next"]}>; rel="next"'}  # RFC 8288
    return _json(body, 200 if conforms else 409, headers)


def _limit(text: str | None) -> int | None:
    """The page size asked for (PAGE_TABLES if none); None if it is not one we serve."""
    if not text:
        return PAGE_TABLES
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_TABLES:
        return None
    return int(text)


def _with_query(url: str, **params: str) -> str:
    """``url`` with exactly ``params`` as its query (the function key is not echoed back)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


@app.route(route="snapshot", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def start_snapshot(req: func.HttpRequest) -> func.HttpResponse:
    """Queue the planning of every selected table; 202 at once, with where to follow it.

    Planning (a change stream opened, a count and an `_id` split per collection) grows with the
    number of collections, so it runs on the queue a page at a time (fanout.plan_page); tables
    stopped while planning show in the status report's database errors.
    """
    try:
        settings = load_settings(os.environ)
        task = start_planning(settings, open_queue(settings, os.environ))
    except MirrorError as error:
        return _error(error)
    status_url = urljoin(req.url, "status")
    body = {
        "database": task.database,
        "planning": "queued",
        "messages": 1,
        "status": status_url,
    }
    return _json(body, 202, {"Location": status_url})


@app.route(route="tables/{table}/resync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def resync(req: func.HttpRequest) -> func.HttpResponse:
    """Rebuild one mirrored table (folder and state dropped); 202 with how often it was rebuilt."""
    try:
        settings = load_settings(os.environ)
        table, count = resync_table(
            contexts.get(settings).publisher,
            req.route_params.get("table", ""),
            settings.require("MONGODB_DATABASE"),
            settings.collections(),
        )
    except UnknownTableError as error:
        return _json({"error": error.problem}, 404)
    except ConfigError as error:
        return _json({"error": error.problem}, 400)
    except MirrorError as error:
        return _error(error)
    return _json({"table": str(table), "rebuilds": count}, 202)


@app.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status(req: func.HttpRequest) -> func.HttpResponse:
    """Per table: phase, snapshot progress, changes, lag, files, rebuilds, errors (and Fabric's
    own view when its ids are set)."""
    try:
        settings = load_settings(os.environ)
        state = open_state(settings)
        try:
            report = collect_status(settings, state)
        finally:
            state.close()
    except MirrorError as error:
        return _error(error)
    return _json(report, 200)


@app.queue_trigger(arg_name="message", queue_name=QUEUE_NAME, connection=QUEUE_CONNECTION)
def snapshot_partition(message: func.QueueMessage) -> None:
    """Publish one `_id` range, or plan one page of tables; raising lets the host retry, then
    move the message to the poison queue."""
    task = decode_task(message.get_body().decode("utf-8"))
    settings = load_settings(os.environ)
    if isinstance(task, PlanTask):
        page = plan_page(contexts.get(settings), open_queue(settings, os.environ), task)
        log.info(
            "planned %d tables after %s: %d partition messages sent, %d stopped%s",
            len(page.planned),
            task.after or "the start",
            page.messages,
            len(page.stopped),
            "" if page.next is None else f"; next page after {page.next.after}",
        )
        return
    result = run_partition(contexts.get(settings), task)
    log.info(
        "%s partition %d: %d documents in %d files",
        task.table,
        task.index,
        result.documents,
        result.files,
    )


@app.queue_trigger(arg_name="message", queue_name=POISON_QUEUE_NAME, connection=QUEUE_CONNECTION)
def snapshot_partition_poison(message: func.QueueMessage) -> None:
    """A message that failed every delivery: record it so status reports it, never drop it."""
    try:
        task = decode_task(message.get_body().decode("utf-8"))
    except (MirrorError, UnicodeDecodeError) as error:
        log.error("unreadable poison message %s: %s", message.id, error)
        return
    reason = f"gave up after {message.dequeue_count} deliveries (message {message.id})"
    ctx = contexts.get(load_settings(os.environ))
    if isinstance(task, PlanTask):
        # The tables of this page and after it stay unplanned until the next tick plans them.
        where = f"after {task.after}" if task.after else "from the start"
        record_error(ctx.state, task.database, f"planning the tables {where} {reason}")
        log.error("planning %s %s", where, reason)
        return
    mark_failed(ctx, task, reason)
    log.error("%s partition %d failed: %s", task.table, task.index, reason)


@app.timer_trigger(
    schedule="%CHANGE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True
)
def mirror_tick(timer: func.TimerRequest) -> None:
    """One orchestrator tick: fan out snapshots that are due, then stream changes on a budget."""
    try:
        settings = load_settings(os.environ)
        budget = settings.integer("CHANGE_BUDGET_SECONDS")
        summary = tick(contexts.get(settings), open_queue(settings, os.environ), budget)
    except MirrorError as error:
        log.error("tick failed: %s", _describe(error))
        raise  # a failed invocation in Application Insights, not a quiet success
    log.info(
        "tick%s: %d windows, %d events, %d partition messages sent%s%s",
        " (past due)" if timer.past_due else "",
        summary.windows,
        summary.events,
        summary.messages,
        f", rebuilt {', '.join(summary.rebuilt)}" if summary.rebuilt else "",
        ", the stream is read by another tick" if summary.lease_held_elsewhere else "",
    )
    for why in summary.waiting.values():
        log.info("%s", why)
    if summary.stopped:
        # The other tables streamed; these need an operator, so the invocation fails visibly.
        stopped = "; ".join(f"{table}: {why}" for table, why in summary.stopped.items())
        log.error("tick stopped tables: %s", stopped)
        raise MirrorError(f"tables stopped: {stopped}")
