"""Fan-out of snapshot partitions as Azure Storage queue messages (the Functions path).

Messages are base64 text, as host.json's ``messageEncoding`` tells the queue trigger to expect.
A message is only a pointer (table folder + partition index): everything else is read from state,
so a redelivered, duplicated or stale message is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.config import Settings
from shared.errors import ConfigError, MirrorError
from shared.landing_zone.tables import TableRef
from shared.pipeline.snapshot import PartitionTask, Selection, pending_tasks, plan_selected
from shared.pipeline.wiring import MirrorContext, checked_credential
from shared.storage_location import (
    config_error,
    is_connection_string,
    parse_connection_string,
    parse_storage_url,
)

QUEUE_NAME = "snapshot-partitions"
POISON_QUEUE_NAME = f"{QUEUE_NAME}-poison"  # where the Functions host moves repeated failures
MESSAGE_ENCODING = "base64"
QUEUE_OPTIONS: dict[str, Any] = {"retry_total": 5, "connection_timeout": 20, "read_timeout": 60}


def encode_task(task: PartitionTask) -> str:
    return json.dumps({"table": task.table.folder, "partition": task.index})


def decode_task(text: str) -> PartitionTask:
    """Validate a message body; anything malformed is refused, never guessed at."""
    try:
        body = json.loads(text)
    except ValueError:
        raise MirrorError("partition message is not JSON") from None
    if not isinstance(body, dict) or set(body) != {"table", "partition"}:
        raise MirrorError("partition message must have exactly 'table' and 'partition'")
    table, index = body["table"], body["partition"]
    if not isinstance(table, str) or not isinstance(index, int) or isinstance(index, bool):
        raise MirrorError("partition message has a wrong type for 'table' or 'partition'")
    if index < 0:
        raise MirrorError("partition message has a negative partition")
    return PartitionTask(TableRef.from_folder(table), index)


def open_queue(
    settings: Settings, environ: Mapping[str, str], name: str = QUEUE_NAME
) -> QueueClient:
    """The partition queue, on QUEUE_STORAGE or else the Functions host storage.

    Both take :mod:`shared.storage_location`'s forms: a connection string, an account URL
    ``https://<account>.queue.core.windows.net`` (token credential) or Azurite's
    ``http://127.0.0.1:<port>/devstoreaccount1``; errors name the setting the value came from.
    """
    policies: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        **QUEUE_OPTIONS,
    }
    setting, location = "QUEUE_STORAGE", settings.get("QUEUE_STORAGE")
    if not location and environ.get("AzureWebJobsStorage"):
        setting, location = "AzureWebJobsStorage", environ["AzureWebJobsStorage"]
    if location and is_connection_string(location):
        connection_string = parse_connection_string(setting, location, "queue").sdk_text
        return QueueClient.from_connection_string(connection_string, name, **policies)
    if location:
        url = parse_storage_url(setting, location, ("queue",))
        if url.path:
            raise config_error(setting, f"{url.safe_text}: give the account URL {url.account_url}")
        if url.connection_string is not None:  # Azurite, with its published key
            return QueueClient.from_connection_string(url.connection_string, name, **policies)
        return QueueClient(
            url.account_url, name, credential=checked_credential(settings), **policies
        )
    if account := environ.get("AzureWebJobsStorage__accountName"):
        url = parse_storage_url(
            "AzureWebJobsStorage__accountName",
            f"https://{account}.queue.core.windows.net",
            ("queue",),
        )
        return QueueClient(
            url.account_url, name, credential=checked_credential(settings), **policies
        )
    raise ConfigError("QUEUE_STORAGE", "is required (or AzureWebJobsStorage) to fan out partitions")


def enqueue(queue: QueueClient, tasks: Iterable[PartitionTask]) -> int:
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    sent = 0
    for task in tasks:
        queue.send_message(encode_task(task))
        sent += 1
    return sent


def orchestrate_snapshot(ctx: MirrorContext, queue: QueueClient) -> tuple[Selection, int]:
    """Plan the selected tables and send one message per unfinished partition."""
    selection = plan_selected(ctx)
    return selection, enqueue(queue, pending_tasks(selection.plans))
