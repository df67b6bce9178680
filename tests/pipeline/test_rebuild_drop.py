"""A rebuilt table is recreated only after Fabric dropped the old one (issue 15, item 2).

Microsoft's recovery advice for one table: delete its folder, wait until the table disappears
from the mirrored database, then recreate it (open-mirroring best practices, "Plan for
recovery"). Fabric cannot run here, so its REST API is the HTTPS test double
(tests/fabric/fake_fabric.py), driven directly: a test decides when it stops listing a table.
Without the Fabric ids the wait is REBUILD_DROP_WAIT_SECONDS, set short here.

And `resync` while a reader streams into the table: the reader frozen just before it publishes
(tests/fixtures/freezing.py), the resync fences it, deletes the folder, and the woken reader
leaves nothing behind in it; the table comes back, equal, once the drop is confirmed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared.config import AzureAuth
from shared.landing_zone.publisher import DROP_KIND, SEQUENCE_KIND
from shared.landing_zone.tables import TableRef, table_for_name
from shared.pipeline.plans import load_plan
from shared.pipeline.rebuild import resync_table
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.status import AWAITING_DROP, format_status, status_report
from shared.pipeline.wiring import MirrorContext
from tests.fabric.fake_fabric import FakeCredential, FakeFabric, running_fake_fabric
from tests.fixtures.freezing import Freeze
from tests.pipeline.in_process import (
    MakeContext,
    assert_verified,
    drain,
    snapshot,
    streaming,
)
from tests.pipeline.test_fencing import console, finish, mirror_context, mirror_env, start_reader
from tests.pipeline.test_run_cli import (
    assert_verified as assert_verified_cli,
)
from tests.pipeline.test_run_cli import local_backend, run_once

Client = MongoClient[dict[str, Any]]
WORKSPACE = str(uuid.uuid4())
DEADLINE_SECONDS = 60


@pytest.fixture
def fabric(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFabric]:
    """The Fabric REST double, trusted by the production client (no Entra here: a fake
    credential), as tests/fabric/test_commands.py does."""
    with running_fake_fabric() as fake:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_path)
        monkeypatch.setattr(AzureAuth, "credential", lambda self: FakeCredential())
        yield fake


def fabric_entry(schema: str, table: str) -> dict[str, Any]:
    """One table as getTablesMirroringStatus reports it (Microsoft Learn, REST API for
    mirrored databases)."""
    return {
        "sourceObjectType": "Table",
        "sourceSchemaName": schema,
        "sourceTableName": table,
        "status": "Replicating",
        "metrics": {"processedRows": 1, "processedBytes": 1, "lastSyncLatencyInSeconds": 1},
    }


def folder_files(ctx: MirrorContext, table: TableRef) -> list[str]:
    store = ctx.publisher.store
    found = []
    pending = [table.folder]
    while pending:
        folder = pending.pop()
        found += [file.path for file in store.list_files(folder)]
        pending += store.list_folders(folder)
    return found


def planned(ctx: MirrorContext, name: str) -> bool:
    return any(str(plan.table) == name for plan in plan_selected(ctx).plans)


def test_a_rebuild_waits_while_fabric_still_lists_the_table(
    make_context: MakeContext, mongo_client: Client, mongo_db_name: str, fabric: FakeFabric
) -> None:
    database = mongo_db_name
    item = fabric.add_item(
        WORKSPACE, "mirror", [fabric_entry(database, "orders"), fabric_entry(database, "users")]
    )
    ctx = make_context(
        FABRIC_WORKSPACE_ID=WORKSPACE,
        FABRIC_ITEM_ID=item,
        FABRIC_API_URL=fabric.api_url,
    )
    db, reader = streaming(
        ctx,
        mongo_client,
        orders=[{"_id": i, "n": i} for i in range(30)],
        users=[{"_id": i} for i in range(5)],
    )
    orders, users = TableRef(database, "orders"), TableRef(database, "users")
    db.orders.drop()  # an automatic rebuild: the reader deletes the folder
    db.orders.insert_many([{"_id": i, "n": -i} for i in range(10, 20)])
    drain(reader, ctx)  # replans after the rebuild: orders waits, nothing of it is published

    assert folder_files(ctx, orders) == []
    assert load_plan(ctx.state, orders) is None
    asked = len(fabric.requests_to("/getTablesMirroringStatus"))
    assert asked >= 1
    # Other tables stream on while orders waits; orders' own changes are not published.
    db.users.insert_one({"_id": "during the wait"})
    db.orders.insert_one({"_id": "during the wait", "n": 0})
    drain(reader, ctx)
    assert_verified(ctx, ["users"])
    assert folder_files(ctx, orders) == []
    selection = plan_selected(ctx)
    assert f"{database}.orders" in selection.waiting
    assert users in {plan.table for plan in selection.plans}
    assert len(fabric.requests_to("/getTablesMirroringStatus")) > asked  # Fabric was asked
    report = status_report(ctx.state)
    (waiting,) = [t for t in report["tables"] if t["table"] == str(orders)]
    assert waiting["phase"] == AWAITING_DROP
    assert waiting["awaiting_drop"]["fabric_status"] == "Replicating"
    assert waiting["awaiting_drop"]["since"] is not None
    assert waiting["rebuilds"] == 1
    assert "waiting for Fabric to drop the old table since" in format_status(report)

    # Fabric drops the table: the next planning recreates it, and it catches up.
    fabric.items[item].tables = [fabric_entry(database, "users")]
    assert planned(ctx, str(orders))
    assert ctx.state.get(DROP_KIND, orders.folder) is None
    snapshot(ctx)
    drain(reader, ctx)
    assert_verified(ctx)
    reader.release()


def test_without_fabric_ids_a_rebuild_waits_the_configured_time(
    make_context: MakeContext, mongo_client: Client
) -> None:
    wait = 2
    ctx = make_context(REBUILD_DROP_WAIT_SECONDS=str(wait))
    db, reader = streaming(ctx, mongo_client, orders=[{"_id": i, "n": i} for i in range(30)])
    reader.release()  # no window in flight for resync to wait for
    name = f"{ctx.settings.require('MONGODB_DATABASE')}.orders"
    orders = table_for_name(name)

    resync_table(ctx.publisher, name)
    drop = ctx.state.get(DROP_KIND, orders.folder)
    assert drop is not None
    deleted_at = float(drop.value["since"])
    assert folder_files(ctx, orders) == []
    assert not planned(ctx, name)

    deadline = time.monotonic() + DEADLINE_SECONDS
    while not planned(ctx, name):  # the condition, checked until its deadline
        assert time.monotonic() < deadline, "never recreated"
        time.sleep(0.1)
    recreated_at = time.time()
    assert recreated_at - deleted_at >= wait
    db.orders.insert_one({"_id": "after", "n": 1})
    reader.acquire()
    snapshot(ctx)
    drain(reader, ctx)
    assert_verified(ctx)
    reader.release()


@pytest.mark.parametrize(
    "point",
    [
        # Just before it stages the window's file (the staged write would re-create the folder).
        "shared.landing_zone.publisher:Publisher.publish",
        # After its number is allocated, just before the file is renamed into place.
        "shared.landing_zone.publisher:Publisher._finish",
    ],
)
def test_resync_while_a_reader_publishes_leaves_no_orphan_file(
    mongo_client: Client, mongodb_uri: str, mongo_db_name: str, tmp_path: Path, point: str
) -> None:
    db = mongo_client[mongo_db_name]
    db.orders.insert_many([{"_id": i, "n": i} for i in range(30)])
    db.users.insert_many([{"_id": i} for i in range(5)])
    backend = local_backend(tmp_path)
    run_once(mongodb_uri, mongo_db_name, backend)
    # The drop is not confirmed while the test looks (run_once below sets no wait).
    env = mirror_env(mongodb_uri, mongo_db_name, backend, REBUILD_DROP_WAIT_SECONDS="3600")
    orders = TableRef(mongo_db_name, "orders")
    db.orders.insert_many([{"_id": f"x{i}", "n": i} for i in range(5)])

    freeze = Freeze(tmp_path, point)
    paused = start_reader(env, freeze)
    freeze.wait(paused)
    started = time.monotonic()
    resync = console(env, "resync", "--table", str(orders))
    took = time.monotonic() - started
    assert resync.returncode == 0, resync.stderr[-3000:]
    # Fenced: it waited for the frozen reader's window (until its 5 s lease lapsed).
    assert took >= 3, took
    folder = Path(backend[0]) / orders.folder
    assert not folder.exists() or not any(folder.rglob("*"))

    freeze.wake()
    code, stderr = finish(paused)
    assert code == 0, stderr[-3000:]
    # Nothing the woken reader did is left of the deleted folder: no staged file, no held
    # changes, no metadata of a new generation (Fabric has not dropped the old table yet), not
    # even the empty folder its staging re-created.
    assert not folder.exists(), sorted(folder.rglob("*"))
    with mirror_context(env) as ctx:
        assert ctx.state.get(SEQUENCE_KIND, orders.folder) is None
        assert ctx.state.get(DROP_KIND, orders.folder) is not None
        tables = {t["table"]: t for t in status_report(ctx.state)["tables"]}
        assert tables[str(orders)]["phase"] == AWAITING_DROP
        assert tables[f"{mongo_db_name}.users"]["phase"] == "streaming"

    db.orders.insert_one({"_id": "after resync", "n": -1})
    run_once(mongodb_uri, mongo_db_name, backend)  # no wait set: the drop counts as done
    names = sorted(path.name for path in folder.rglob("*") if path.is_file())
    assert not [name for name in names if name.startswith("_staging-")], names
    assert not (folder / "_held-changes").exists() or not any((folder / "_held-changes").iterdir())
    assert_verified_cli(mongodb_uri, mongo_db_name, backend)


def test_a_fabric_that_cannot_be_asked_leaves_the_configured_wait_to_decide(
    make_context: MakeContext, mongo_client: Client, mongo_db_name: str, fabric: FakeFabric
) -> None:
    """The app's identity lacks its workspace role: the table is not held back for ever, the
    configured wait decides, and status says why Fabric was not asked."""
    item = fabric.add_item(WORKSPACE, "mirror", [fabric_entry(mongo_db_name, "orders")])
    fabric.denied_workspaces.add(WORKSPACE)
    settings = {
        "FABRIC_WORKSPACE_ID": WORKSPACE,
        "FABRIC_ITEM_ID": item,
        "FABRIC_API_URL": fabric.api_url,
    }
    ctx = make_context(REBUILD_DROP_WAIT_SECONDS="3600", **settings)
    _, reader = streaming(ctx, mongo_client, orders=[{"_id": i} for i in range(5)])
    reader.release()
    name = f"{mongo_db_name}.orders"
    resync_table(ctx.publisher, name)

    assert not planned(ctx, name)
    (waiting,) = status_report(ctx.state)["tables"]
    assert "403" in waiting["awaiting_drop"]["error"]
    assert "Fabric could not be asked" in waiting["awaiting_drop"]["by"]
    shorter = make_context(REBUILD_DROP_WAIT_SECONDS="0", **settings)
    assert planned(shorter, name)  # the wait is over: recreated although Fabric still lists it
    snapshot(shorter)
    assert_verified(shorter)
