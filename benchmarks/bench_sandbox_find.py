"""Throughput of the MongoDB sandbox: insert_many, find (PyMongo, raw batches) and find_arrow_all.

Run: .venv/bin/python benchmarks/bench_sandbox_find.py [--docs N]
Client and server run in this process (the server on background threads), over loopback TCP.
The last line is ``find_docs_per_second: <x>`` (PyMongo decoding dicts, a single client).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mongodb_sandbox import SandboxServer


def timed(label: str, docs: int, action: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = action()
    elapsed = time.perf_counter() - started
    if count != docs:
        raise SystemExit(f"{label}: expected {docs} documents, got {count}")
    rate = docs / elapsed
    print(f"{label:<28} {elapsed:7.2f} s  {rate:>12,.0f} docs/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=200_000)
    docs = parser.parse_args().docs
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # pyarrow ABI notice on import
    from pymongoarrow.api import find_arrow_all

    with SandboxServer() as server, MongoClient(server.uri) as client:
        coll = client.bench.items

        def insert() -> int:
            batch = 10_000
            for start in range(0, docs, batch):
                coll.insert_many(
                    {"_id": i, "n": i, "name": f"item-{i}", "ok": i % 2 == 0}
                    for i in range(start, min(start + batch, docs))
                )
            return coll.estimated_document_count()

        timed("insert_many", docs, insert)
        raw = coll.with_options(
            codec_options=coll.codec_options.with_options(document_class=RawBSONDocument)
        )
        timed("find (raw documents)", docs, lambda: sum(1 for _ in raw.find()))
        timed("find_arrow_all", docs, lambda: find_arrow_all(coll, {}).num_rows)
        timed(
            "find _id range, sorted",
            docs // 2,
            lambda: sum(
                1
                for _ in raw.find({"_id": {"$gte": docs // 4, "$lt": docs // 4 + docs // 2}}).sort(
                    "_id", 1
                )
            ),
        )
        rate = timed("find (dicts)", docs, lambda: sum(1 for _ in coll.find()))
    print(f"find_docs_per_second: {rate:.0f}")


if __name__ == "__main__":
    main()
