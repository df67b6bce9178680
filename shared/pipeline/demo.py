"""The embedded demo: the real snapshot pipeline against an embedded MongoDB sandbox.

The sandbox is a stand-in for MongoDB, for trying the mirror out without one: it runs in this
process, is loaded with sample orders, and the local process pool snapshots it to the landing
zone exactly as it would a real cluster.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import TextIO

from bson import Decimal128, ObjectId
from pymongo import MongoClient

from shared.config import Settings, load_settings
from shared.pipeline.local_snapshot import SnapshotSummary, run_local_snapshot

DEMO_DATABASE = "demo"
DEMO_ORDERS = 50_000


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


def run_demo(settings: Settings, out: TextIO, orders: int = DEMO_ORDERS) -> SnapshotSummary:
    """Snapshot a sandbox holding ``orders`` sample orders and an empty ``returns`` collection."""
    # The sandbox is a test and demo tool kept out of the Functions package: import it only here.
    from mongodb_sandbox import SandboxServer

    with SandboxServer() as sandbox:
        with MongoClient[dict[str, object]](sandbox.uri) as client:
            database = client[DEMO_DATABASE]
            database.create_collection("returns")  # empty: mirrored as metadata and no rows
            database.orders.insert_many(sample_orders(orders))  # the driver batches it
        demo = {
            **settings.values,
            "MONGODB_URI": sandbox.uri,
            "MONGODB_DATABASE": DEMO_DATABASE,
            "MONGODB_COLLECTIONS": "all",
        }
        return run_local_snapshot(load_settings(demo), out)
