"""The change timer ``mirror_tick`` and ``POST /api/tables/{table}/resync``, called through
``app.get_functions()`` against Azurite (Blob landing zone, Table state, Storage queue) and the
MongoDB sandbox.

The Functions host cannot run here (its installer downloads a binary), so these tests play its
part: they invoke the timer function tick after tick as its schedule would, and hand every queue
message to ``snapshot_partition`` (receive, invoke, delete) as the queue trigger would. The
binding metadata the host reads is asserted from the indexed functions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest  # what the worker builds for a timer trigger
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from function_app import contexts
from shared.config import SPECS, Settings, load_settings
from shared.errors import ConfigError, MirrorError
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.tables import TableRef
from shared.pipeline import wiring
from shared.pipeline.changes import CHANGES_WRITER, ChangeReader
from shared.pipeline.fanout import enqueue, open_queue
from shared.pipeline.plans import REBUILD_KIND, Phase, load_plan
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.pipeline.verify import VerifyReport, format_report, verify_mirror
from tests.function_host import FUNCTIONS, REGISTERED

ROOT = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = "2"  # one or two windows per tick keeps each test quick
MOST_TICKS = 8  # ticks a converging mirror may take; each drains what is ready


@pytest.fixture
def functions_env(
    azurite, mongodb_uri: str, mongo_db_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    suffix = mongo_db_name[-8:]
    env = {
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": mongo_db_name,
        "LANDING_ZONE": f"{azurite.connection_string};Container=tick{suffix}",
        "STATE_STORE": f"{azurite.connection_string};TableName=tick{suffix}",
        "QUEUE_STORAGE": azurite.connection_string,
        "FILE_ROWS": "100",
        "SNAPSHOT_PARTITIONS": "3",
        "CHANGE_SCHEDULE": "*/10 * * * * *",
        "CHANGE_BUDGET_SECONDS": BUDGET_SECONDS,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    contexts.close()  # one opened for another test's settings
    settings = load_settings(env)
    enqueue(open_queue(settings, {}), [])  # creates the queue if need be
    open_queue(settings, {}).clear_messages()  # the queue is shared by the session's Azurite
    yield settings
    contexts.close()


def context() -> wiring.MirrorContext:
    ctx = contexts.opened
    assert ctx is not None, "no function has opened the process context"
    return ctx


def tick(past_due: bool = False) -> None:
    FUNCTIONS["mirror_tick"](TimerRequest(past_due=past_due))


def deliver_partitions(settings: Settings, meanwhile: Callable[[], None] = lambda: None) -> int:
    """Hand every queued partition to the queue trigger, as the host would; ``meanwhile`` runs
    after each one (writes landing while the snapshot is under way)."""
    queue = open_queue(settings, {})
    delivered = 0
    for message in queue.receive_messages(messages_per_page=32, visibility_timeout=120):
        body = message.content.encode()
        FUNCTIONS["snapshot_partition"](func.QueueMessage(id=message.id, body=body))
        queue.delete_message(message)
        delivered += 1
        meanwhile()
    return delivered


def queued(settings: Settings) -> int:
    return int(open_queue(settings, {}).get_queue_properties().approximate_message_count)


def verify(database: Database[Any]) -> VerifyReport:
    return verify_mirror(context().publisher.store, database, None)


def tick_until_verified(settings: Settings, database: Database[Any]) -> int:
    """Tick as the schedule would, running what the ticks queue as the queue trigger would,
    until the landing zone equals the source; returns the ticks it took."""
    for ticks in range(1, MOST_TICKS + 1):
        tick()
        deliver_partitions(settings)
        if verify(database).equal:
            return ticks
    pytest.fail(f"not converged after {MOST_TICKS} ticks:\n{format_report(verify(database))}")


def files(table: TableRef) -> int:
    return inspect_table(context().publisher.store, table).files


def mixed_orders(count: int) -> list[dict[str, Any]]:
    ids: list[Any] = [
        i if i % 3 == 0 else f"o-{i}" if i % 3 == 1 else ObjectId() for i in range(count)
    ]
    return [
        {"_id": _id, "sku": f"s{n % 7}", "qty": n % 5, "tags": ["a", n]}
        for n, _id in enumerate(ids)
    ]


# --- binding metadata ------------------------------------------------------------------------


def test_timer_binding_reads_its_schedule_from_the_change_schedule_setting():
    function = REGISTERED["mirror_tick"]
    (raw,) = function.get_raw_bindings()
    assert json.loads(raw) == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "%CHANGE_SCHEDULE%",
        "runOnStartup": False,
        "useMonitor": True,
    }
    assert function.get_trigger() is not None
    assert function.get_trigger().get_binding_name() == "timerTrigger"


def test_the_schedule_the_host_resolves_is_set_locally_and_valid():
    # The host resolves %CHANGE_SCHEDULE% from app settings itself: Settings' default never
    # reaches the binding, so the local example must set it (and Bicep does, tests/infra).
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    settings = load_settings(values)
    assert settings.get("CHANGE_SCHEDULE") == values["CHANGE_SCHEDULE"]
    assert int(values["CHANGE_BUDGET_SECONDS"]) < 10  # below the local period, every 10 s


def test_the_default_budget_is_well_inside_the_function_timeout():
    hours, minutes, seconds = json.loads((ROOT / "host.json").read_text())["functionTimeout"].split(
        ":"
    )
    timeout = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    assert 4 * int(SPECS["CHANGE_BUDGET_SECONDS"].default or 0) <= timeout


def test_resync_route_binding():
    bindings = [json.loads(raw) for raw in REGISTERED["resync"].get_raw_bindings()]
    (trigger,) = [b for b in bindings if b["type"] == "httpTrigger"]
    assert trigger["route"] == "tables/{table}/resync"
    assert trigger["methods"] == ["POST"]


# --- tick after tick ---------------------------------------------------------------------------


def test_ticks_snapshot_through_the_queue_then_stream_until_the_landing_zone_converges(
    functions_env: Settings, mongo_client: MongoClient, mongo_db_name: str
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many(mixed_orders(600))
    database.customers.insert_many([{"_id": n, "name": f"c{n}"} for n in range(40)])
    orders = TableRef(mongo_db_name, "orders")
    customers = TableRef(mongo_db_name, "customers")

    # First tick: both tables planned, their partitions fanned out; nothing published yet.
    tick()
    state = context().state
    for table in (orders, customers):
        plan = load_plan(state, table)
        assert plan is not None and plan.phase == Phase.SNAPSHOTTING
    messages = queued(functions_env)
    assert messages >= 2
    assert files(orders) == 0

    # Writes while the partitions run, and a tick among them (the schedule does not wait for
    # the snapshot): the changes of tables still snapshotting are held in the landing zone.
    changes = iter(range(1_000))

    def write_meanwhile() -> None:
        n = next(changes)
        database.orders.insert_one({"_id": f"new-{n}", "sku": "late", "qty": n})
        database.orders.update_one({"_id": 3 * n}, {"$set": {"qty": 100 + n, "note": "updated"}})
        database.orders.delete_one({"_id": f"o-{3 * n + 1}"})
        database.customers.replace_one({"_id": n}, {"name": f"renamed {n}", "vip": True})
        if n == 1:
            tick()

    assert deliver_partitions(functions_env, write_meanwhile) == messages
    held = context().publisher.progress(orders, CHANGES_WRITER)
    assert held is not None and held["held"] >= 1
    tick()  # a tick between partitions' writes and streaming: releases what was held
    for table in (orders, customers):
        assert load_plan(state, table).phase == Phase.STREAMING  # type: ignore[union-attr]
    tick_until_verified(functions_env, database)
    snapshot_and_held = files(orders)

    # Steady streaming: only the ticks can carry these to the landing zone.
    database.orders.insert_many([{"_id": 10_000 + n, "qty": n, "when": "later"} for n in range(50)])
    database.orders.update_many({"qty": 4}, {"$inc": {"qty": 1}, "$set": {"tag": "bumped"}})
    database.orders.delete_many({"sku": "s2"})
    database.customers.delete_many({"_id": {"$gte": 30}})
    assert not verify(database).equal
    tick_until_verified(functions_env, database)
    assert files(orders) > snapshot_and_held

    # A collection created later: a tick discovers it, plans it and fans it out; then it streams.
    database.returns.insert_many([{"_id": ObjectId(), "order": n} for n in range(25)])
    tick_until_verified(functions_env, database)
    plan = load_plan(state, TableRef(mongo_db_name, "returns"))
    assert plan is not None and plan.phase == Phase.STREAMING
    assert queued(functions_env) == 0

    # An idle tick publishes nothing and still checkpoints.
    checkpoint = state.get(STREAM_KIND, mongo_db_name)
    before = files(orders), files(customers)
    tick()
    assert (files(orders), files(customers)) == before
    after = state.get(STREAM_KIND, mongo_db_name)
    assert checkpoint is not None and after is not None
    assert after.value["checkpoint_at"] > checkpoint.value["checkpoint_at"]
    assert verify(database).equal


def test_overlapping_tick_leaves_the_stream_to_the_lease_holder(
    functions_env: Settings,
    mongo_client: MongoClient,
    mongo_db_name: str,
    caplog: pytest.LogCaptureFixture,
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many([{"_id": n, "qty": n} for n in range(100)])
    orders = TableRef(mongo_db_name, "orders")
    tick()
    deliver_partitions(functions_env)
    tick_until_verified(functions_env, database)

    # Another tick (a slow one, or another instance) holds the database's reader lease.
    holder = ChangeReader(context(), mongo_db_name, None)
    holder.acquire()
    database.orders.insert_one({"_id": "while-held", "qty": 1})
    database.orders.delete_one({"_id": 5})
    checkpoint = context().state.get(STREAM_KIND, mongo_db_name)
    published = files(orders)
    caplog.set_level(logging.INFO, logger="mongo_fabric_mirror")
    tick()  # no error: the overlap is expected, not a failure
    assert files(orders) == published
    assert context().state.get(STREAM_KIND, mongo_db_name) == checkpoint
    assert "the stream is read by another tick" in caplog.text
    assert not verify(database).equal

    # The holder finishes; the next tick carries the changes made meanwhile.
    holder.release()
    tick_until_verified(functions_env, database)
    assert files(orders) > published


def test_a_table_stopped_by_its_folder_fails_the_tick_after_the_others_streamed(
    functions_env: Settings, mongo_client: MongoClient, mongo_db_name: str
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many([{"_id": n} for n in range(30)])
    database.legacy.insert_many([{"_id": n} for n in range(5)])
    legacy = TableRef(mongo_db_name, "legacy")
    # A data file some other tool wrote: the mirror must not adopt the folder.
    store = wiring.open_landing_zone_store(functions_env)
    store.write(legacy.data_file(1), b"not ours")

    with pytest.raises(MirrorError, match=f"tables stopped: {mongo_db_name}.legacy: "):
        tick()
    assert load_plan(context().state, TableRef(mongo_db_name, "orders")) is not None
    assert load_plan(context().state, legacy) is None

    # The operator's way out is the resync the message names; then the ticks mirror it.
    response = FUNCTIONS["resync"](resync_request(str(legacy)))
    assert response.status_code == 202
    tick()
    deliver_partitions(functions_env)
    tick_until_verified(functions_env, database)


def test_a_tick_that_died_after_planning_has_its_partitions_sent_by_the_next(
    functions_env: Settings, mongo_client: MongoClient, mongo_db_name: str
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many([{"_id": n} for n in range(90)])
    # The first tick planned the table, then its instance went away before sending anything.
    (plan,) = plan_selected(contexts.get(functions_env)).plans
    assert plan.phase == Phase.SNAPSHOTTING and queued(functions_env) == 0

    tick()
    assert queued(functions_env) == len(plan.ranges)
    tick()  # sent once per plan, not once per tick
    assert queued(functions_env) == len(plan.ranges)
    tick_until_verified(functions_env, database)


# --- failures are failed invocations ----------------------------------------------------------


def test_a_bad_setting_fails_the_tick_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("CHANGE_BUDGET_SECONDS", "0")
    contexts.close()
    with pytest.raises(ConfigError, match="CHANGE_BUDGET_SECONDS"):
        tick()
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == (
        "tick failed: configuration error: CHANGE_BUDGET_SECONDS: "
        "must be a whole number from 1 to 600"
    )
    assert "\n" not in record.getMessage()
    assert contexts.opened is None  # nothing was opened


# --- resync ----------------------------------------------------------------------------------


def resync_request(table: str) -> func.HttpRequest:
    return func.HttpRequest(
        "POST",
        f"http://localhost/api/tables/{table}/resync",
        route_params={"table": table},
        body=b"",
    )


def test_resync_rebuilds_the_table_and_the_ticks_mirror_it_afresh(
    functions_env: Settings, mongo_client: MongoClient, mongo_db_name: str
):
    database = mongo_client[mongo_db_name]
    database.orders.insert_many([{"_id": n, "qty": n} for n in range(120)])
    orders = TableRef(mongo_db_name, "orders")
    tick()
    deliver_partitions(functions_env)
    tick_until_verified(functions_env, database)

    response = FUNCTIONS["resync"](resync_request(f"{mongo_db_name}.orders"))
    assert response.status_code == 202
    assert json.loads(response.get_body()) == {"table": str(orders), "rebuilds": 1}
    state = context().state
    assert load_plan(state, orders) is None
    rebuilds = state.get(REBUILD_KIND, orders.folder)
    assert rebuilds is not None
    assert rebuilds.value["causes"][-1]["cause"] == "resync requested by an operator"
    assert context().publisher.store.size(orders.metadata_file) is None

    database.orders.delete_many({"qty": {"$lt": 10}})
    tick()  # plans the rebuilt table afresh and fans it out
    assert load_plan(state, orders).phase == Phase.SNAPSHOTTING  # type: ignore[union-attr]
    assert deliver_partitions(functions_env) >= 1
    tick_until_verified(functions_env, database)

    second = FUNCTIONS["resync"](resync_request(f"{mongo_db_name}.orders"))
    assert json.loads(second.get_body())["rebuilds"] == 2


@pytest.mark.parametrize("name", ["orders", "db.", ".orders", "db.orders\x00x"])
def test_resync_of_a_malformed_table_name_is_a_400_with_one_line(name: str):
    response = FUNCTIONS["resync"](resync_request(name))
    assert response.status_code == 400
    error = json.loads(response.get_body())["error"]
    assert error and "\n" not in error


def test_resync_of_a_table_this_app_does_not_mirror_is_a_404(
    functions_env: Settings, mongo_db_name: str
):
    response = FUNCTIONS["resync"](resync_request("elsewhere.orders"))
    assert response.status_code == 404
    assert "MONGODB_DATABASE" in json.loads(response.get_body())["error"]
