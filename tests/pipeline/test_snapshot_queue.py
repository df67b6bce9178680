"""The Functions path of the initial sync: Blob landing zone, Table state, Storage queue — all on
Azurite — with the queue-triggered function invoked directly with each real queue message (the
Functions host cannot run here, so this test plays its part: receive, invoke, delete)."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as HostQueueMessage  # what the worker builds
from pymongo import MongoClient

from function_app import contexts
from shared.config import load_settings
from shared.errors import MirrorError
from shared.landing_zone.tables import TableRef
from shared.pipeline.fanout import PlanTask, decode_task, open_queue
from shared.pipeline.plans import Phase, load_plan
from shared.pipeline.snapshot import PartitionTask
from tests.function_host import FUNCTIONS
from tests.pipeline.mirror_checks import assert_mirrors, rows_in_files


@pytest.fixture
def azure_settings(azurite, mongodb_uri: str, mongo_db_name: str, monkeypatch: pytest.MonkeyPatch):
    env = {
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": mongo_db_name,
        "LANDING_ZONE": f"{azurite.connection_string};Container=lz{mongo_db_name[-8:]}",
        "STATE_STORE": f"{azurite.connection_string};TableName=state{mongo_db_name[-8:]}",
        "QUEUE_STORAGE": azurite.connection_string,
        "FILE_ROWS": "100",
        "SNAPSHOT_PARTITIONS": "3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    contexts.close()  # one opened for another test's settings
    yield load_settings(env)
    contexts.close()


def deliver(queue: Any, times: int = 1) -> list[str]:
    """Receive every message (those sent while delivering too) and hand each to the trigger
    ``times`` times, then delete it; until the queue is empty."""
    bodies: list[str] = []
    while True:
        messages = list(queue.receive_messages(messages_per_page=32, visibility_timeout=60))
        if not messages:
            return bodies
        for message in messages:
            body = message.content
            for _ in range(times):
                FUNCTIONS["snapshot_partition"](
                    func.QueueMessage(id=message.id, body=body.encode())
                )
            queue.delete_message(message)
            bodies.append(body)


def test_queue_fan_out_publishes_every_document_once(
    azure_settings, mongo_client: MongoClient, mongo_db_name: str
):
    orders = mongo_client[mongo_db_name].orders
    orders.insert_many([{"_id": i, "sku": f"s{i % 7}", "qty": i % 5} for i in range(1000)])
    started = FUNCTIONS["start_snapshot"](
        func.HttpRequest("POST", "http://localhost/api/snapshot", body=b"")
    )
    assert started.status_code == 202

    queue = open_queue(azure_settings, {})
    bodies = deliver(queue, times=2)  # every message redelivered once more: must be harmless
    tasks = [decode_task(body) for body in bodies]
    assert tasks[0] == PlanTask(mongo_db_name)  # the planning page, then its partitions
    assert sorted(task.index for task in tasks[1:] if isinstance(task, PartitionTask)) == [0, 1, 2]
    assert len(tasks) == 4

    ctx = contexts.opened
    assert ctx is not None
    table = TableRef(mongo_db_name, "orders")
    plan = load_plan(ctx.state, table)
    assert plan is not None and plan.phase == Phase.STREAMING
    assert rows_in_files(ctx.publisher.store, table) == 1000
    assert_mirrors(ctx.publisher.store, ctx.state, table, orders)


def test_poison_message_is_reported_in_status(
    azure_settings, mongo_client: MongoClient, mongo_db_name: str
):
    mongo_client[mongo_db_name].orders.insert_many([{"_id": i} for i in range(10)])
    FUNCTIONS["start_snapshot"](func.HttpRequest("POST", "http://localhost/api/snapshot", body=b""))
    queue = open_queue(azure_settings, {})
    (planning,) = queue.receive_messages(visibility_timeout=60)
    FUNCTIONS["snapshot_partition"](
        func.QueueMessage(id=planning.id, body=planning.content.encode())
    )
    queue.delete_message(planning)
    message = next(iter(queue.receive_messages(visibility_timeout=60)))
    FUNCTIONS["snapshot_partition_poison"](
        HostQueueMessage(id=message.id, body=message.content.encode(), dequeue_count=5)
    )
    response = FUNCTIONS["status"](func.HttpRequest("GET", "http://localhost/api/status", body=b""))
    tables = json.loads(response.get_body())["tables"]
    assert tables[0]["phase"] == "snapshotting"
    assert [entry["status"] for entry in tables[0]["failed_partitions"]] == ["failed"]
    assert "gave up after 5 deliveries" in tables[0]["failed_partitions"][0]["error"]


def test_malformed_message_is_refused(azure_settings):
    with pytest.raises(MirrorError, match="partition message"):
        FUNCTIONS["snapshot_partition"](func.QueueMessage(body=b'{"table": "x", "partition": "0"}'))


def test_a_planning_page_that_kept_failing_is_reported_in_status(azure_settings, mongo_db_name):
    FUNCTIONS["snapshot_partition_poison"](
        HostQueueMessage(
            id="m-1",
            body=json.dumps({"plan": mongo_db_name, "after": "b"}).encode(),
            dequeue_count=5,
        )
    )
    response = FUNCTIONS["status"](func.HttpRequest("GET", "http://localhost/api/status", body=b""))
    (database,) = json.loads(response.get_body())["databases"]
    assert database["database"] == mongo_db_name
    assert database["last_error"]["error"] == (
        "planning the tables after b gave up after 5 deliveries (message m-1)"
    )
