"""Fan-out of snapshot work as Azure Storage queue messages (the Functions path).

Messages are base64 text, as host.json's ``messageEncoding`` tells the queue trigger to expect.
Two kinds share the queue, each only a pointer: everything else is read from state, so a
redelivered, duplicated or stale message is harmless.

- a partition: ``{"table": <folder>, "partition": <index>}``, one `_id` range to publish;
- a planning page: ``{"plan": <database>, "after": <collection> | null}``, plan the next
  PLAN_TABLES_PER_MESSAGE selected collections after ``after`` (by name), send their partitions,
  then send the page after it. ``POST /api/snapshot`` sends the first page and answers at once:
  an HTTP trigger must answer within 230 seconds, and planning hundreds of collections (a change
  stream opened, a count and a split per collection) need not fit in that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.config import Settings
from shared.errors import ConfigError, MirrorError
from shared.landing_zone.tables import TableRef
from shared.pipeline.plans import TablePlan
from shared.pipeline.snapshot import (
    PartitionTask,
    mirrored_collections,
    pending_tasks,
    plan_sources,
)
from shared.pipeline.status import record_error
from shared.pipeline.stream_checkpoint import ensure_checkpoint
from shared.pipeline.wiring import MirrorContext, checked_credential, selected_sources
from shared.state.base import JsonObject, StateStore, update
from shared.storage_location import (
    config_error,
    is_connection_string,
    parse_connection_string,
    parse_storage_url,
)

log = logging.getLogger(__name__)

QUEUE_NAME = "snapshot-partitions"
POISON_QUEUE_NAME = f"{QUEUE_NAME}-poison"  # where the Functions host moves repeated failures
MESSAGE_ENCODING = "base64"
QUEUE_OPTIONS: dict[str, Any] = {"retry_total": 5, "connection_timeout": 20, "read_timeout": 60}
# Collections one planning message plans. Planning one costs a few MongoDB round trips (a change
# stream opened for the start point, a count, the `_id` split) and a few storage calls (binding,
# _metadata.json, state): a page stays within seconds to a minute even on a slow link.
PLAN_TABLES_PER_MESSAGE = 25
FAN_OUT_KIND = "fanout"  # per table: the start token of the plan whose partitions were sent


@dataclass(frozen=True)
class PlanTask:
    """Plan the selected collections of ``database`` named after ``after`` (all when None)."""

    database: str
    after: str | None = None


def encode_task(task: PartitionTask | PlanTask) -> str:
    if isinstance(task, PlanTask):
        return json.dumps({"plan": task.database, "after": task.after})
    return json.dumps({"table": task.table.folder, "partition": task.index})


def decode_task(text: str) -> PartitionTask | PlanTask:
    """Validate a message body; anything malformed is refused, never guessed at."""
    try:
        body = json.loads(text)
    except ValueError:
        raise MirrorError("partition message is not JSON") from None
    if isinstance(body, dict) and set(body) == {"plan", "after"}:
        database, after = body["plan"], body["after"]
        if not isinstance(database, str) or not database:
            raise MirrorError("planning message has no database in 'plan'")
        if after is not None and not isinstance(after, str):
            raise MirrorError("planning message has a wrong type for 'after'")
        return PlanTask(database, after)
    if not isinstance(body, dict) or set(body) != {"table", "partition"}:
        raise MirrorError("partition message must have exactly 'table' and 'partition'")
    table, index = body["table"], body["partition"]
    if not isinstance(table, str) or not isinstance(index, int) or isinstance(index, bool):
        raise MirrorError("partition message has a wrong type for 'table' or 'partition'")
    if index < 0:
        raise MirrorError("partition message has a negative partition")
    return PartitionTask(TableRef.from_folder(table), index)


# The queue triggers' ``connection`` and open_queue both come from queue_connection(), so the
# messages are sent where the host listens. The host reads a connection the Azure Storage
# extension's way (Microsoft Learn, "Azure Queue storage trigger" > Connections, and "Identity-
# based connections"): the app setting named ``connection`` is a connection string; otherwise the
# settings under it, ``<connection>__queueServiceUri`` (alias ``__serviceUri``) or
# ``__accountName``, give the account reached with an identity (``__credential``, ``__clientId``).
QUEUE_STORAGE = "QUEUE_STORAGE"
HOST_STORAGE = "AzureWebJobsStorage"
IDENTITY_KEYS = ("queueServiceUri", "serviceUri", "accountName")


def queue_connection(environ: Mapping[str, str]) -> str:
    """The connection (app setting name) of the partition queue: QUEUE_STORAGE when it or an
    identity-based ``QUEUE_STORAGE__*`` endpoint is set, else the host's AzureWebJobsStorage.

    The queue triggers in function_app.py bind to this name and open_queue sends through it:
    one setting decides both (a queue on another account would otherwise never be read).
    """
    if environ.get(QUEUE_STORAGE) or any(
        environ.get(f"{QUEUE_STORAGE}__{key}") for key in IDENTITY_KEYS
    ):
        return QUEUE_STORAGE
    return HOST_STORAGE


def open_queue(
    settings: Settings, environ: Mapping[str, str], name: str = QUEUE_NAME
) -> QueueClient:
    """The partition queue, through the connection queue_connection() names (as the host reads
    it): a connection string in the setting itself, or an identity-based endpoint under it
    (``__queueServiceUri``, ``__serviceUri`` or ``__accountName``; Azurite's
    ``http://127.0.0.1:<port>/devstoreaccount1`` is read with its published key). Errors name the
    setting the value came from.
    """
    policies: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        **QUEUE_OPTIONS,
    }
    values = dict(environ)
    if settings.get(QUEUE_STORAGE):
        values[QUEUE_STORAGE] = settings.require(QUEUE_STORAGE)
    connection = queue_connection(values)
    if location := values.get(connection):
        if not is_connection_string(location):
            # The host honours the plain setting first and only as a connection string.
            raise config_error(
                connection,
                "the Functions host reads this setting as a connection string; for an account "
                f"reached with the app's identity set {connection}__queueServiceUri instead",
            )
        connection_string = parse_connection_string(connection, location, "queue").sdk_text
        return QueueClient.from_connection_string(connection_string, name, **policies)
    for key in IDENTITY_KEYS:
        setting = f"{connection}__{key}"
        if not (text := values.get(setting)):
            continue
        if key == "accountName":
            text = f"https://{text}.queue.core.windows.net"
        url = parse_storage_url(setting, text, ("queue",))
        if url.path:
            raise config_error(setting, f"{url.safe_text}: give the account URL {url.account_url}")
        if url.connection_string is not None:  # Azurite, with its published key
            return QueueClient.from_connection_string(url.connection_string, name, **policies)
        return QueueClient(
            url.account_url, name, credential=checked_credential(settings), **policies
        )
    raise ConfigError(
        QUEUE_STORAGE,
        f"is required (or {HOST_STORAGE}, or {HOST_STORAGE}__accountName) to fan out partitions",
    )


def enqueue(queue: QueueClient, tasks: Iterable[PartitionTask | PlanTask]) -> int:
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    sent = 0
    for task in tasks:
        queue.send_message(encode_task(task))
        sent += 1
    return sent


def fan_out(state: StateStore, queue: QueueClient, plan: TablePlan) -> int:
    """Send the partitions of ``plan`` unless they were sent already; the number sent.

    Sending is recorded per plan (by its start token, so a rebuilt table's new plan is sent
    again) after the messages are out: a planner that died between planning and sending leaves
    no record, and the next one sends them. One that died after sending and before recording
    sends them twice, which is harmless: a partition's later run takes over from the published
    progress. A message lost later reaches the poison queue and status, never silence.
    """
    if not plan.pending_partitions or _sent(state, plan):
        return 0
    sent = enqueue(queue, pending_tasks([plan]))
    record: JsonObject = {"start_token": plan.start_token}
    update(state, FAN_OUT_KIND, plan.table.folder, lambda _: record)
    return sent


def _sent(state: StateStore, plan: TablePlan) -> bool:
    record = state.get(FAN_OUT_KIND, plan.table.folder)
    return record is not None and record.value.get("start_token") == plan.start_token


def start_planning(settings: Settings, queue: QueueClient) -> PlanTask:
    """What ``POST /api/snapshot`` does: send the first planning page, touching nothing else
    (no MongoDB, no landing zone, no state), so it answers in one queue call."""
    task = PlanTask(settings.require("MONGODB_DATABASE"))
    enqueue(queue, [task])
    return task


@dataclass(frozen=True)
class PlanPage:
    planned: list[TablePlan]
    stopped: dict[str, str]
    messages: int  # partition messages sent
    next: PlanTask | None  # the page sent after this one


def plan_page(ctx: MirrorContext, queue: QueueClient, task: PlanTask) -> PlanPage:
    """One planning message: plan at most PLAN_TABLES_PER_MESSAGE collections after
    ``task.after``, send their partitions, then the next page (if any collection is left).

    Every step is idempotent (a plan is made once; partitions are sent once per plan), so a
    redelivered page redoes nothing; the next page is sent last, so a page that failed is
    retried by the host before the chain goes on. A table that cannot be planned is stopped
    alone and recorded for status, as the tick does.
    """
    database = ctx.settings.require("MONGODB_DATABASE")
    if task.database != database:
        # Sent before MONGODB_DATABASE changed: that database is no longer this app's.
        log.warning("planning message for %s ignored: this app mirrors %s", task.database, database)
        return PlanPage([], {}, 0, None)
    sources = sorted(
        selected_sources(ctx.mongo, ctx.settings, mirrored_collections(ctx)),
        key=lambda source: source.name,
    )
    ensure_checkpoint(ctx, database)  # the stream starts before any table's snapshot reads
    remaining = [s for s in sources if task.after is None or s.name > task.after]
    page = remaining[:PLAN_TABLES_PER_MESSAGE]
    selection = plan_sources(ctx, page)
    messages = sum(fan_out(ctx.state, queue, plan) for plan in selection.plans)
    for why in selection.stopped.values():
        record_error(ctx.state, database, f"planning: {why}")
    following = None
    if len(remaining) > len(page):
        following = PlanTask(database, page[-1].name)
        enqueue(queue, [following])
    return PlanPage(selection.plans, selection.stopped, messages, following)
