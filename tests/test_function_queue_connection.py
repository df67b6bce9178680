"""The queue triggers listen where the engine sends: one setting decides both (issue 16, item 2).

The Functions host reads a trigger's ``connection`` as the name of an app setting: a connection
string in that setting, or an identity-based endpoint under it (``<name>__queueServiceUri``).
Each case indexes function_app.py in a fresh process with the given app settings, as the host's
worker does, reads the connection the queue triggers bind to, resolves it the host's way, and
checks that a message sent through ``open_queue`` arrives on that queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from shared.config import load_settings
from shared.errors import ConfigError
from shared.pipeline.fanout import QUEUE_NAME, PlanTask, decode_task, enqueue, open_queue
from shared.storage_location import is_connection_string, parse_storage_url
from tests.fixtures.azurite import Azurite

REPO_ROOT = Path(__file__).resolve().parents[1]
QUEUE_TRIGGERS = ("snapshot_partition", "snapshot_partition_poison")
# The host's own storage on an account nothing serves here: a message sent there is never read.
OTHER_HOST_STORAGE = "UseDevelopmentStorage=true"

INDEX = f"""
import json
from tests.function_host import REGISTERED
print(json.dumps({{
    name: [binding.get_dict_repr().get("connection") for binding in REGISTERED[name].get_bindings()]
    for name in {QUEUE_TRIGGERS!r}
}}))
"""


def trigger_connections(app_settings: dict[str, str]) -> set[str]:
    """The connections the queue triggers bind to when the worker indexes with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_STORAGE", "AzureWeb"))}
    result = subprocess.run(
        [sys.executable, "-c", INDEX],
        cwd=REPO_ROOT,
        env={**env, **app_settings, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    bindings = json.loads(result.stdout)
    return {connection for name in QUEUE_TRIGGERS for connection in bindings[name]}


def host_queue(app_settings: dict[str, str], connection: str) -> QueueClient:
    """The queue the host's trigger reads: the setting itself as a connection string, or the
    identity-based ``__queueServiceUri`` under it (Azurite's URL carries its published key)."""
    if text := app_settings.get(connection):
        assert is_connection_string(text), f"the host cannot read {connection}={text!r}"
        return QueueClient.from_connection_string(
            text, QUEUE_NAME, message_decode_policy=TextBase64DecodePolicy()
        )
    url = parse_storage_url(connection, app_settings[f"{connection}__queueServiceUri"], ("queue",))
    assert url.connection_string is not None
    return QueueClient.from_connection_string(
        url.connection_string, QUEUE_NAME, message_decode_policy=TextBase64DecodePolicy()
    )


@pytest.fixture
def empty_queue(azurite: Azurite) -> Iterator[None]:
    queue = QueueClient.from_connection_string(azurite.connection_string, QUEUE_NAME)
    enqueue(open_queue(load_settings({"QUEUE_STORAGE": azurite.connection_string}), {}), [])
    queue.clear_messages()  # the queue is shared by the session's Azurite
    yield
    queue.clear_messages()


def cases(azurite: Azurite) -> dict[str, tuple[dict[str, str], str]]:
    return {
        "QUEUE_STORAGE on another account than the host": (
            {"AzureWebJobsStorage": OTHER_HOST_STORAGE, "QUEUE_STORAGE": azurite.connection_string},
            "QUEUE_STORAGE",
        ),
        "QUEUE_STORAGE by identity, host storage by identity": (
            {
                "AzureWebJobsStorage__accountName": "hostaccount",
                "QUEUE_STORAGE__queueServiceUri": azurite.queue_endpoint,
            },
            "QUEUE_STORAGE",
        ),
        "no QUEUE_STORAGE: the host storage": (
            {"AzureWebJobsStorage": azurite.connection_string},
            "AzureWebJobsStorage",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "QUEUE_STORAGE on another account than the host",
        "QUEUE_STORAGE by identity, host storage by identity",
        "no QUEUE_STORAGE: the host storage",
    ],
)
def test_the_queue_triggers_read_the_queue_the_engine_sends_to(
    case: str, azurite: Azurite, empty_queue: None
) -> None:
    app_settings, expected = cases(azurite)[case]
    assert trigger_connections(app_settings) == {expected}
    sender = open_queue(load_settings(app_settings), app_settings)
    enqueue(sender, [PlanTask("shop")])
    received = list(host_queue(app_settings, expected).receive_messages(max_messages=5))
    assert [decode_task(message.content) for message in received] == [PlanTask("shop")]


def test_a_url_in_the_plain_setting_is_refused_naming_the_identity_setting() -> None:
    # The host honours QUEUE_STORAGE itself first and only as a connection string, so a URL there
    # would bind the triggers to nothing; the engine refuses it rather than send where none listen.
    settings = load_settings({"QUEUE_STORAGE": "https://acct.queue.core.windows.net"})
    with pytest.raises(ConfigError, match=r"QUEUE_STORAGE__queueServiceUri") as raised:
        open_queue(settings, {})
    assert raised.value.setting == "QUEUE_STORAGE"
