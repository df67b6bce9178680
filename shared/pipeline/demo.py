"""The embedded demo: a small orders table published through the real publisher, then inspected."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

import bson
from bson import Decimal128, ObjectId

from shared.conversion import BatchConverter, TableSchema
from shared.landing_zone.parquet_files import RowMarker
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.tables import TableRef

DEMO_TABLE = TableRef("demo", "orders")
WRITER = "demo"


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


def publish_demo(publisher: Publisher, count: int = 1000, batch_size: int = 400) -> int:
    """Publish ``count`` orders in batches, then an update and a delete; returns files written.

    Resumable: progress is recorded with each file, so a rerun continues where it stopped.
    """
    publisher.prepare_table(DEMO_TABLE)
    documents = list(sample_orders(count))
    steps = [
        [(document, RowMarker.UPSERT) for document in documents[start : start + batch_size]]
        for start in range(0, count, batch_size)
    ]
    cancelled = {**documents[0], "status": "cancelled"}
    steps.append([(cancelled, RowMarker.UPSERT), ({"_id": documents[1]["_id"]}, RowMarker.DELETE)])
    done = int((publisher.progress(DEMO_TABLE, WRITER) or {"steps": 0})["steps"])
    converter = BatchConverter(TableSchema())
    for index, rows in enumerate(steps):
        # Converted even when already published so the schema grows exactly as in the first run.
        table = converter.convert_rows(
            [bson.encode(document) for document, _ in rows], markers=[m for _, m in rows]
        )
        if index >= done:
            publisher.publish(DEMO_TABLE, table, WRITER, {"steps": index + 1})
    return len(steps) - done
