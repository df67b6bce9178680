"""HTTP triggers do bounded work however many collections there are.

An HTTP-triggered function must answer within 230 seconds, whatever ``functionTimeout`` says:
Azure Load Balancer's idle timeout ends the request (Microsoft's "Azure Functions hosting
options", function app timeout duration). So ``POST /api/snapshot`` only queues the planning and
``GET /api/landing-zone/inspect`` replays one page of tables. These tests give them 300
collections and count what one request touches (store calls, tables, queue messages), never
wall time. The Functions host cannot run here: tests/function_host.py calls the registered
functions, and the tests play the queue trigger's part (receive, invoke, delete).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import bson
import pytest
from pymongo import MongoClient

import function_app
from function_app import contexts
from shared.config import Settings, load_settings
from shared.conversion import BatchConverter
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.replayer import find_tables
from shared.landing_zone.stores.base import LandingZoneStore, StoredFile
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.fanout import (
    PLAN_TABLES_PER_MESSAGE,
    PlanTask,
    decode_task,
    enqueue,
    open_queue,
)
from shared.pipeline.inspect import MAX_PAGE_TABLES, PAGE_TABLES, inspect_page
from shared.pipeline.plans import TABLE_KIND, Phase, all_plans
from shared.pipeline.snapshot import PartitionTask
from shared.pipeline.verify import format_report, verify_mirror
from shared.state.sqlite import SqliteStateStore
from tests.function_host import FUNCTIONS

COLLECTIONS = 300


@pytest.fixture
def functions_env(
    azurite, tmp_path: Path, mongodb_uri: str, mongo_db_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    # A local landing zone and SQLite state keep 300 tables quick; the queue is Azurite's.
    env = {
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": mongo_db_name,
        "LANDING_ZONE": str(tmp_path / "lz"),
        "STATE_STORE": str(tmp_path / "state.db"),
        "QUEUE_STORAGE": azurite.connection_string,
        "SNAPSHOT_PARTITIONS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    contexts.close()
    settings = load_settings(env)
    enqueue(open_queue(settings, {}), [])  # creates the queue if need be
    open_queue(settings, {}).clear_messages()  # shared by the session's Azurite
    yield settings
    open_queue(settings, {}).clear_messages()
    contexts.close()


def post_snapshot() -> func.HttpResponse:
    request = func.HttpRequest("POST", "http://localhost/api/snapshot", body=b"")
    return FUNCTIONS["start_snapshot"](request)


def test_post_snapshot_queues_the_planning_and_the_queue_plans_a_page_per_message(
    functions_env: Settings, mongo_client: MongoClient, mongo_db_name: str
):
    database = mongo_client[mongo_db_name]
    for n in range(COLLECTIONS):
        database[f"c{n:03d}"].insert_many([{"_id": n, "v": "a"}, {"_id": f"k{n}", "v": n}])

    response = post_snapshot()

    # The request itself: one queue message, nothing opened (no MongoDB client, no landing
    # zone, no state store), whatever the number of collections.
    assert response.status_code == 202
    body = json.loads(response.get_body())
    assert body == {
        "database": mongo_db_name,
        "planning": "queued",
        "messages": 1,
        "status": "http://localhost/api/status",
    }
    assert response.headers["Location"] == "http://localhost/api/status"
    assert contexts.opened is None
    queue = open_queue(functions_env, {})
    (message,) = queue.peek_messages(max_messages=32)
    assert decode_task(message.content) == PlanTask(mongo_db_name)

    # The queue trigger's part: each planning message plans at most a page of tables.
    pages: list[PlanTask] = []
    partitions = 0
    while messages := list(queue.receive_messages(messages_per_page=32, visibility_timeout=60)):
        for message in messages:
            task = decode_task(message.content)
            state = contexts.opened.state if contexts.opened else None
            before = len(state.list(TABLE_KIND)) if state else 0
            FUNCTIONS["snapshot_partition"](
                func.QueueMessage(id=message.id, body=message.content.encode())
            )
            queue.delete_message(message)
            if isinstance(task, PlanTask):
                pages.append(task)
                made = len(contexts.opened.state.list(TABLE_KIND)) - before  # type: ignore[union-attr]
                assert 0 < made <= PLAN_TABLES_PER_MESSAGE
            else:
                assert isinstance(task, PartitionTask)
                partitions += 1

    assert len(pages) == math.ceil(COLLECTIONS / PLAN_TABLES_PER_MESSAGE)
    assert [page.after for page in pages[1:]] == [
        f"c{n * PLAN_TABLES_PER_MESSAGE - 1:03d}" for n in range(1, len(pages))
    ]
    assert partitions == COLLECTIONS  # one partition each, sent once
    ctx = contexts.opened
    assert ctx is not None
    plans = all_plans(ctx.state)
    assert len(plans) == COLLECTIONS
    assert {plan.phase for plan in plans} == {Phase.STREAMING}
    assert len(find_tables(ctx.publisher.store)) == COLLECTIONS
    # Verified at the page edges (a replay of all 300 would take most of this test's time).
    edges = ["c000", "c024", "c025", "c149", "c150", "c299"]
    report = verify_mirror(ctx.publisher.store, database, edges)
    assert report.equal and len(report.tables) == len(edges), format_report(report)


def test_post_snapshot_twice_sends_no_partition_twice(
    functions_env: Settings, mongo_client: MongoClient, mongo_db_name: str
):
    database = mongo_client[mongo_db_name]
    for n in range(30):
        database[f"c{n:02d}"].insert_one({"_id": n})
    queue = open_queue(functions_env, {})

    def drain() -> list[PartitionTask | PlanTask]:
        done = []
        while messages := list(queue.receive_messages(messages_per_page=32)):
            for message in messages:
                FUNCTIONS["snapshot_partition"](
                    func.QueueMessage(id=message.id, body=message.content.encode())
                )
                queue.delete_message(message)
                done.append(decode_task(message.content))
        return done

    post_snapshot()
    first = drain()
    assert sum(isinstance(task, PartitionTask) for task in first) == 30
    post_snapshot()  # e.g. an operator who was not sure the first one went through
    second = drain()
    assert second == [PlanTask(mongo_db_name), PlanTask(mongo_db_name, "c24")]


# --- inspect ------------------------------------------------------------------------------------


class CountingStore:
    """A landing-zone store that records the paths each call names (reads only here)."""

    def __init__(self, store: LandingZoneStore) -> None:
        self.store = store
        self.paths: list[str] = []

    @property
    def description(self) -> str:
        return self.store.description

    def tables_touched(self) -> set[str]:
        # <schema>.schema/<table>/...: the table folder is the first two segments.
        return {"/".join(path.split("/")[:2]) for path in self.paths if path.count("/") >= 1}

    def read(self, path: str) -> bytes:
        self.paths.append(path)
        return self.store.read(path)

    def size(self, path: str) -> int | None:
        self.paths.append(path)
        return self.store.size(path)

    def list_files(self, folder: str) -> list[StoredFile]:
        self.paths.append(folder)
        return self.store.list_files(folder)

    def list_folders(self, folder: str) -> list[str]:
        self.paths.append(folder)
        return self.store.list_folders(folder)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"inspect must only read the landing zone, not call {name}")


@pytest.fixture(scope="module")
def many_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A landing zone of COLLECTIONS small tables, each one file of two rows."""
    root = tmp_path_factory.mktemp("many")
    state = SqliteStateStore(root / "state.db")
    publisher = Publisher(LocalStore(root / "lz"), state)
    converter = BatchConverter()
    for n in range(COLLECTIONS):
        table = TableRef("db", f"t{n:03d}")
        publisher.prepare_table(table)
        owner, _ = publisher.claim(table, "test")
        rows = converter.convert([bson.encode({"_id": n}), bson.encode({"_id": -n - 1, "x": 1})])
        publisher.publish(table, rows, "test", {}, owner)
    state.close()
    return root / "lz"


@pytest.fixture
def counted(many_tables: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[CountingStore]]:
    monkeypatch.setenv("LANDING_ZONE", str(many_tables))
    stores: list[CountingStore] = []

    def open_counting(settings: Settings) -> CountingStore:
        stores.append(CountingStore(LocalStore(many_tables)))
        return stores[-1]

    monkeypatch.setattr(function_app, "open_landing_zone_store", open_counting)
    yield stores


def inspect(url: str) -> func.HttpResponse:
    parts = urlsplit(url)
    params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    request = func.HttpRequest("GET", url, params=params, body=b"")
    return FUNCTIONS["inspect"](request)


def test_inspect_replays_one_page_of_tables_and_links_the_next(counted: list[CountingStore]):
    url: str | None = "http://localhost/api/landing-zone/inspect"
    seen: list[str] = []
    pages = 0
    while url is not None:
        response = inspect(url)
        assert response.status_code == 200
        body = json.loads(response.get_body())
        assert body["conforms"] is True
        assert all(table["rows"] == 2 for table in body["tables"])
        # Bounded: the root listing, then only the tables of this page.
        store = counted[-1]
        assert len(store.tables_touched()) == len(body["tables"]) <= PAGE_TABLES
        assert {folder.split("/")[1] for folder in store.tables_touched()} == {
            table["table"].split(".")[1] for table in body["tables"]
        }
        seen += [table["table"] for table in body["tables"]]
        pages += 1
        url = body["next"]
        assert body["complete"] is (url is None)
        if url is not None:
            assert response.headers["Link"] == f'<{url}>; rel="next"'
    assert pages == math.ceil(COLLECTIONS / PAGE_TABLES)
    assert seen == [f"db.t{n:03d}" for n in range(COLLECTIONS)]  # each once, in order


def test_inspect_limit_and_one_table(counted: list[CountingStore]):
    base = "http://localhost/api/landing-zone/inspect"
    body = json.loads(inspect(f"{base}?limit={MAX_PAGE_TABLES}").get_body())
    assert len(body["tables"]) == MAX_PAGE_TABLES
    assert body["next"] == f"{base}?after=db.schema%2Ft099&limit={MAX_PAGE_TABLES}"
    last = json.loads(inspect(f"{base}?after=db.schema/t297").get_body())
    assert [t["table"] for t in last["tables"]] == ["db.t298", "db.t299"]
    assert last["complete"] is True and last["next"] is None

    one = inspect(f"{base}?table=db.t150")
    assert one.status_code == 200
    assert [t["table"] for t in json.loads(one.get_body())["tables"]] == ["db.t150"]
    assert counted[-1].tables_touched() == {"db.schema/t150"}

    for bad in ("0", "abc", str(MAX_PAGE_TABLES + 1), "-1"):
        response = inspect(f"{base}?limit={bad}")
        assert response.status_code == 400
        assert "limit" in json.loads(response.get_body())["error"]


def test_a_page_ends_early_once_its_file_budget_is_spent(many_tables: Path):
    store = LocalStore(many_tables)
    page = inspect_page(store, limit=50, max_files=3)
    assert [report.table.name for report in page.reports] == ["t000", "t001", "t002"]
    assert page.after == "db.schema/t002"
    # A table larger than the budget is still inspected whole, alone on its page.
    single = inspect_page(store, after="db.schema/t010", limit=50, max_files=0)
    assert [report.table.name for report in single.reports] == ["t011"]
