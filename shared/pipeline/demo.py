"""The embedded demo: the whole product, live, against an embedded MongoDB sandbox.

The sandbox is a stand-in for MongoDB, for trying the mirror out without one: it runs in this
process and is loaded with sample orders (and an empty ``returns`` collection). Then, as a user
would run them:
1. ``run``: the mirror snapshots both collections in local worker processes and streams their
   changes, while a generator applies inserts, updates, replaces and deletes at a steady rate —
   during the snapshot too (those changes are held, then published right after it);
2. the generator stops; the mirror finishes its window and stops, and ``run --once`` drains what
   is left up to the present;
3. ``verify`` replays every table as Fabric would and compares it with its collection;
4. ``replicate --once`` applies the files to Delta tables as Fabric's replicator would, and one
   table is queried with DuckDB, as a user would query the mirrored database.
Progress goes to ``out`` (stderr on the command line); the results are returned for printing.

Each demo starts from a fresh sandbox, so tables a previous demo left in the same landing zone and
state are rebuilt first (only the demo database's tables).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from bson import Decimal128, Int64, ObjectId
from pymongo import MongoClient
from pymongo.collection import Collection

from shared.config import Settings, load_settings
from shared.delta_tables import parse_tables_to_write
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.replayer import find_tables
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef
from shared.pipeline.changes import CHANGES_WRITER
from shared.pipeline.local_mirror import RunSummary, run_mirror
from shared.pipeline.plans import Phase, all_plans, load_plan
from shared.pipeline.rebuild import rebuild_on_request
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.pipeline.verify import VerifyReport, verify_mirror
from shared.pipeline.wiring import open_landing_zone_store, open_publisher
from shared.replicator.engine import PassSummary, Replicator, delta_path, read_delta_table
from shared.state.base import StateStore

DEMO_DATABASE = "demo"
DEMO_COLLECTIONS = ("orders", "returns")
DEMO_ORDERS = 50_000
DEMO_SECONDS = 20.0  # how long the generator writes while the mirror runs
DEMO_RATE = 200  # changes per second
PROGRESS_SECONDS = 2.0
OPERATIONS = ("insert", "update", "replace", "delete")


@dataclass
class DemoResult:
    changes: Counter[str]  # changes the generator applied, per operation
    live: RunSummary  # the mirror running while the generator wrote
    drain: RunSummary  # `run --once` afterwards
    verify: VerifyReport
    seconds: float

    @property
    def events(self) -> int:
        return self.live.events + self.drain.events


@dataclass
class _Generator:
    """Random inserts, updates, replaces and deletes: mixed `_id` types, a field whose type
    changes (its values land in a twin column), nested values, an empty collection filling up."""

    orders: Collection[dict[str, Any]]
    returns: Collection[dict[str, Any]]
    live_ids: list[Any]
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    applied: Counter[str] = field(default_factory=Counter)
    inserted: int = 0

    def apply_one(self) -> None:
        draw = self.rng.random()
        if draw < 0.4 or not self.live_ids:
            self._insert()
        elif draw < 0.7:
            update: dict[str, Any] = {"$set": {"status": self.rng.choice(["paid", "shipped"])}}
            if self.rng.random() < 0.2:
                update["$set"]["quantity"] = str(self.rng.randrange(1, 20))  # type changes
            if self.rng.random() < 0.5:
                update["$set"]["address.city"] = self.rng.choice(["Oslo", "Lyon", "Porto", "Kyiv"])
            self.orders.update_one({"_id": self.rng.choice(self.live_ids)}, update)
            self.applied["update"] += 1
        elif draw < 0.85:
            replacement = {
                "customer": f"customer-{self.rng.randrange(1000)}",
                "status": "replaced",
                "total": Decimal128(f"{self.rng.randrange(100, 100000)}.50"),
                "notes": ["replaced", {"by": "demo"}],
            }
            self.orders.replace_one({"_id": self.rng.choice(self.live_ids)}, replacement)
            self.applied["replace"] += 1
        else:
            index = self.rng.randrange(len(self.live_ids))
            self.live_ids[index], self.live_ids[-1] = self.live_ids[-1], self.live_ids[index]
            self.orders.delete_one({"_id": self.live_ids.pop()})
            self.applied["delete"] += 1

    def _insert(self) -> None:
        self.inserted += 1
        if self.rng.random() < 0.1:
            self.returns.insert_one(
                {"_id": f"return-{self.inserted}", "reason": "damaged", "at": _now()}
            )
        else:
            # Mixed _id types in one collection: ObjectIds, integers and strings.
            _id: Any = self.rng.choice(
                [ObjectId(), Int64(10**9 + self.inserted), f"web-{self.inserted}"]
            )
            self.orders.insert_one({**next(sample_orders(1, seed=self.inserted)), "_id": _id})
            self.live_ids.append(_id)
        self.applied["insert"] += 1


def sample_orders(count: int, seed: int = 7) -> Iterator[dict[str, object]]:
    """Orders-shaped documents with the BSON types a real collection has."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for number in range(count):
        yield {
            "_id": ObjectId(f"{number:024x}"),
            "customer": f"customer-{rng.randrange(1000)}",
            "status": rng.choice(["new", "paid", "shipped"]),
            "quantity": rng.randrange(1, 20),
            "weight_kg": round(rng.uniform(0.1, 30), 3),
            "total": Decimal128(f"{rng.randrange(100, 100000)}.{rng.randrange(100):02d}"),
            "ordered_at": start + dt.timedelta(minutes=number),
            "address": {"city": rng.choice(["Oslo", "Lyon", "Porto"]), "zip": f"{number:05d}"},
            "items": [{"sku": f"sku-{rng.randrange(50)}", "qty": rng.randrange(1, 4)}],
        }


def run_demo(
    settings: Settings,
    out: TextIO,
    *,
    orders: int = DEMO_ORDERS,
    seconds: float = DEMO_SECONDS,
    rate: int = DEMO_RATE,
) -> DemoResult:
    """Seed a sandbox with ``orders`` sample orders, mirror it live while ``rate`` changes per
    second are applied for ``seconds``, drain, and verify."""
    # The sandbox is a test and demo tool kept out of the Functions package: import it only here.
    from mongodb_sandbox import SandboxServer

    started = time.monotonic()
    with SandboxServer() as sandbox:
        demo = load_settings(
            {
                **settings.values,
                "MONGODB_URI": sandbox.uri,
                "MONGODB_DATABASE": DEMO_DATABASE,
                "MONGODB_COLLECTIONS": "all",
            }
        )
        _forget_previous_demo(demo, out)
        with MongoClient[dict[str, Any]](sandbox.uri) as client:
            database = client[DEMO_DATABASE]
            database.create_collection("returns")  # empty: mirrored as metadata and no rows
            database.orders.insert_many(sample_orders(orders))  # the driver batches it
            _say(out, f"sandbox {sandbox.uri}: seeded {orders:,} orders and an empty 'returns'")
            generator = _Generator(
                database.orders,
                database.returns,
                [document["_id"] for document in sample_orders(orders)],
            )
            stop = threading.Event()
            writer = threading.Thread(
                target=_write_then_stop,
                args=(generator, demo, seconds, rate, stop, out),
                name="demo-generator",
                daemon=True,
            )
            _say(out, f"mirror: running; the generator applies {rate:,} changes/s for {seconds:g}s")
            writer.start()
            try:
                live = run_mirror(demo, stop=stop, out=out)
            finally:
                stop.set()
                writer.join()
            _say(out, "mirror: stopped; draining what is left (run --once)")
            drain = run_mirror(demo, once=True, out=out)
            _say(out, "verify: replaying each table and comparing it with its collection")
            report = verify_mirror(open_landing_zone_store(demo), database, demo.collections())
    return DemoResult(generator.applied, live, drain, report, time.monotonic() - started)


def _write_then_stop(
    generator: _Generator,
    settings: Settings,
    seconds: float,
    rate: int,
    stop: threading.Event,
    out: TextIO,
) -> None:
    """Apply changes at a steady rate, then stop the mirror once every table is streaming (a
    change held during a snapshot is drained either way; stopping mid-snapshot would only
    leave partitions for the drain to redo)."""
    publisher = open_publisher(settings)
    try:
        began = time.monotonic()
        shown = began
        while not stop.is_set() and (now := time.monotonic()) - began < seconds:
            due = int((now - began) * rate) - sum(generator.applied.values())
            for _ in range(due):
                generator.apply_one()
            if now - shown >= PROGRESS_SECONDS:
                shown = now
                _say(out, _progress(generator.applied, publisher))
            stop.wait(0.01)  # pacing the writes
        _say(out, f"generator: done, {_tally(generator.applied)}")
        while not stop.is_set() and not _all_streaming(publisher.state):
            stop.wait(PROGRESS_SECONDS / 4)
    finally:
        publisher.state.close()
        stop.set()


def _progress(applied: Counter[str], publisher: Publisher) -> str:
    """What the generator applied and, per table, what the mirror has published of it."""
    mirrored = []
    for name in DEMO_COLLECTIONS:
        table = TableRef(DEMO_DATABASE, name)
        plan = load_plan(publisher.state, table)
        progress = publisher.progress(table, CHANGES_WRITER) or {}
        if plan is None or plan.phase != Phase.STREAMING:
            held = int(progress.get("events", 0))
            mirrored.append(f"{table} snapshotting ({held:,} change events held)")
            continue
        events = int(progress.get("events", 0))
        lag = float(progress.get("lag_seconds", 0.0))
        mirrored.append(f"{table} {events:,} change events mirrored, lag {lag:.1f}s")
    return f"generator: {_tally(applied)}; " + "; ".join(mirrored)


def _all_streaming(state: StateStore) -> bool:
    plans = [plan for plan in all_plans(state) if plan.database == DEMO_DATABASE]
    return bool(plans) and all(plan.phase == Phase.STREAMING for plan in plans)


def _forget_previous_demo(settings: Settings, out: TextIO) -> None:
    """Rebuild the demo database's tables left by an earlier demo: its sandbox is gone."""
    publisher = open_publisher(settings)
    try:
        tables = {plan.table for plan in all_plans(publisher.state)}
        tables |= set(find_tables(publisher.store))
        previous = sorted((table for table in tables if table.schema == DEMO_DATABASE), key=str)
        for table in previous:
            rebuild_on_request(publisher, table, "a new demo starts from a fresh sandbox")
        publisher.state.delete(STREAM_KIND, DEMO_DATABASE)
        if previous:
            _say(out, f"demo: removed the previous demo's {', '.join(map(str, previous))}")
    finally:
        publisher.state.close()


def _tally(applied: Counter[str]) -> str:
    total = sum(applied.values())
    parts = ", ".join(f"{applied[operation]:,} {operation}s" for operation in OPERATIONS)
    return f"{total:,} changes applied ({parts})"


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# What the demo asks of the replicated orders table, as a user of the mirrored database would.
DEMO_QUERY = (
    "SELECT status, count(*) AS orders, sum(quantity) AS items, "
    "sum(CAST(total AS DECIMAL(18, 2))) AS total FROM orders GROUP BY status ORDER BY status"
)


@dataclass
class ReplicatedQuery:
    summary: PassSummary
    table: str  # where the queried Delta table is
    columns: list[str]
    rows: list[tuple[Any, ...]]


def replicate_and_query(landing: LandingZoneStore, tables_location: str) -> ReplicatedQuery:
    """One replicator pass over the demo's landing zone, then ``DEMO_QUERY`` over its orders.

    The Delta table is read with deltalake into Arrow and handed to DuckDB: DuckDB's own delta
    extension is downloaded on first use, which an offline machine cannot do.
    """
    import duckdb

    tables = parse_tables_to_write(tables_location)
    summary = Replicator(landing, tables).run_once()
    orders = TableRef(DEMO_DATABASE, "orders")
    arrow = read_delta_table(tables, orders)
    connection = duckdb.connect()
    try:
        connection.register("orders", arrow)
        result = connection.sql(DEMO_QUERY)
        columns, rows = list(result.columns), result.fetchall()
    finally:
        connection.close()
    return ReplicatedQuery(summary, f"{tables.description}/{delta_path(orders)}", columns, rows)
