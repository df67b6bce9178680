"""Throughput of BSON → parquet (ZSTD): our converter vs the partner app's pandas approach.

Run: .venv/bin/python benchmarks/bench_conversion.py [--docs N] [--batch B]
The last line is ``ratio_vs_baseline: <x>``. Both run in this process, one core.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import bson
import pandas as pd
import pyarrow.parquet as pq
from bson import Decimal128, Int64, ObjectId

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared.conversion import BatchConverter


def orders(n: int, seed: int = 7) -> list[bytes]:
    """Realistic e-commerce orders as raw BSON documents."""
    rnd = random.Random(seed)
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    out = []
    for i in range(n):
        items = [
            {
                "sku": f"SKU-{rnd.randrange(10_000):05d}",
                "qty": rnd.randrange(1, 6),
                "price": Decimal128(f"{rnd.randrange(100, 50_000) / 100:.2f}"),
            }
            for _ in range(3)
        ]
        doc = {
            "_id": ObjectId(),
            "orderNo": Int64(10_000_000 + i),
            "customer": f"customer-{rnd.randrange(100_000)}",
            "email": f"user{rnd.randrange(1_000_000)}@example.com",
            "status": rnd.choice(["new", "paid", "shipped", "delivered", "cancelled"]),
            "itemCount": 3,
            "weightKg": round(rnd.uniform(0.1, 30), 3),
            "discount": rnd.random() / 4,
            "createdAt": base + datetime.timedelta(seconds=rnd.randrange(30_000_000)),
            "total": Decimal128(f"{rnd.randrange(1_000, 500_000) / 100:.2f}"),
            "address": {
                "street": f"{rnd.randrange(1, 999)} Main Street",
                "city": rnd.choice(["Springfield", "Shelbyville", "Ogdenville"]),
                "zip": f"{rnd.randrange(10_000, 99_999)}",
                "country": "US",
            },
            "items": items,
        }
        out.append(bson.encode(doc))
    return out


def ours(raws: list[bytes], batch: int) -> int:
    conv = BatchConverter()
    size = 0
    for start in range(0, len(raws), batch):
        table = conv.convert(b"".join(raws[start : start + batch]))
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        size += sink.tell()
    return size


def _to_text(value: Any) -> Any:
    # What the partner app does per value: dispatch on type, stringify BSON types,
    # Decimal128 through float, dicts/lists through json.dumps(default=str).
    if value is None:
        return None
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return float(str(value))
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return value


def baseline(raws: list[bytes], batch: int) -> int:
    size = 0
    for start in range(0, len(raws), batch):
        docs = bson.decode_all(b"".join(raws[start : start + batch]))
        df = pd.DataFrame(docs)
        for col in df.columns:
            df[col] = df[col].apply(_to_text)
        sink = io.BytesIO()
        df.to_parquet(sink, compression="zstd", index=False)
        size += sink.tell()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    raws = orders(args.docs)
    rates = {}
    for name, fn in (("baseline", baseline), ("ours", ours)):
        start = time.perf_counter()
        size = fn(raws, args.batch)
        elapsed = time.perf_counter() - start
        rates[name] = args.docs / elapsed
        print(f"{name}: {rates[name]:,.0f} docs/s ({args.docs} docs, {size / 1e6:.1f} MB parquet)")
    print(f"ratio_vs_baseline: {rates['ours'] / rates['baseline']:.1f}")


if __name__ == "__main__":
    main()
