"""Initial sync end to end (MongoDB sandbox → local landing zone): ours vs the partner app's way.

Run: .venv/bin/python benchmarks/bench_snapshot.py [--docs N]
The sandbox runs as its own process. The baseline runs in this process, as the partner app
does: one thread, batches of 100,000 documents decoded to dicts, its pandas transform, one
parquet file per batch (without its 30 s sleep per file). Ours runs the `snapshot` command with
1 and 2 worker processes, timed from process start to exit. Peak worker memory is reported
for N and for 2N documents: it must not grow with the collection. The last line is
``ratio_vs_baseline: <x>`` (ours with 2 workers).
"""

from __future__ import annotations

import argparse
import io
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_conversion import PartnerAppBaseline, orders

PARTNER_BATCH = 100_000  # the partner app's INIT_LOAD_BATCH_SIZE
SCRIPT = Path(sys.executable).with_name("mongo-fabric-mirror")
SUMMARY = re.compile(
    r"published (?P<documents>[\d,]+) documents .* peak worker memory (?P<peak>[\d,]+) MB"
)


def start_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([str(SCRIPT), "sandbox", "--port", str(port)])
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    MongoClient(uri, serverSelectionTimeoutMS=30_000).admin.command("ping")  # waits until up
    return process, uri


def load(uri: str, name: str, count: int) -> None:
    collection = MongoClient(uri)["bench"][name]
    raws = orders(count)
    for start in range(0, count, 50_000):
        collection.insert_many([RawBSONDocument(raw) for raw in raws[start : start + 50_000]])


def baseline(uri: str, name: str, folder: Path) -> int:
    collection = MongoClient(uri)["bench"][name]
    app = PartnerAppBaseline()
    total = collection.estimated_document_count()
    app.bootstrap(list(collection.aggregate([{"$sample": {"size": max(1, int(total * 0.049))}}])))
    folder.mkdir(parents=True)
    done = 0
    cursor = collection.find({}, sort=[("_id", 1)], batch_size=PARTNER_BATCH)
    while True:
        batch = [document for _, document in zip(range(PARTNER_BATCH), cursor, strict=False)]
        if not batch:
            return done
        frame = pd.DataFrame(batch)
        app.process_dataframe(frame)
        app.finalize(frame)
        sink = io.BytesIO()
        frame.to_parquet(sink, index=False)
        done += len(batch)
        (folder / f"{done // PARTNER_BATCH:020d}.parquet").write_bytes(sink.getvalue())


def ours(uri: str, name: str, root: Path, workers: int, peaks: list[float]) -> int:
    """The real `snapshot` command; returns documents published, records peak worker memory."""
    command = [
        str(SCRIPT),
        "--log-level",
        "WARNING",
        "snapshot",
        "--mongodb-uri",
        uri,
        "--database",
        "bench",
        "--collections",
        name,
        "--landing-zone",
        str(root / "lz"),
        "--state",
        str(root / "state.db"),
        "--workers",
        str(workers),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = SUMMARY.search(result.stdout)
    assert summary is not None, result.stdout
    peaks.append(float(summary["peak"].replace(",", "")))
    return int(summary["documents"].replace(",", ""))


def timed(label: str, count: int, run: object) -> float:
    start = time.perf_counter()
    done = run()  # type: ignore[operator]
    rate = done / (time.perf_counter() - start)
    assert done == count, f"{label} mirrored {done} of {count} documents"
    print(f"{label}: {rate:,.0f} docs/s ({count:,} docs)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=1_000_000)
    args = parser.parse_args()
    sandbox, uri = start_sandbox()
    try:
        load(uri, "orders", args.docs)
        load(uri, "orders_double", 2 * args.docs)
        with tempfile.TemporaryDirectory() as work:
            root = Path(work)
            base = timed(
                "baseline (partner app, 1 thread)",
                args.docs,
                lambda: baseline(uri, "orders", root / "baseline"),
            )
            peaks: list[float] = []
            timed("ours, 1 worker", args.docs, lambda: ours(uri, "orders", root / "one", 1, peaks))
            two = timed(
                "ours, 2 workers", args.docs, lambda: ours(uri, "orders", root / "two", 2, peaks)
            )
            timed(
                "ours, 2 workers, 2N",
                2 * args.docs,
                lambda: ours(uri, "orders_double", root / "double", 2, peaks),
            )
            print(
                f"peak worker RSS (2 workers): {peaks[1]:,.0f} MB for {args.docs:,} docs, "
                f"{peaks[2]:,.0f} MB for {2 * args.docs:,} docs"
            )
    finally:
        sandbox.terminate()
        sandbox.wait()
    print(f"ratio_vs_baseline: {two / base:.1f}")


if __name__ == "__main__":
    main()
