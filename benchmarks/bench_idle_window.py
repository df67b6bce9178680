"""One change-window cycle over a database of idle collections (issue: 200 idle, under 2 s).

Run: .venv/bin/python benchmarks/bench_idle_window.py [--collections N] [--cycles K]
The sandbox runs in this process (background threads, loopback TCP); the landing zone is a local
folder and the state SQLite, in a temporary directory. It plans N empty collections (each goes
straight to streaming), then times K calls of ``ChangeReader.window()`` with the default settings
(one database stream: one getMore that waits CHANGE_AWAIT_MS for events, one checkpoint write;
the wait is most of the figure). The baseline, in the same process, is
the per-collection design: N collection streams, each polled once per cycle with the same await.
Last lines: ``idle_window_seconds: <median>`` and ``ratio_vs_baseline: <baseline / ours>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mongodb_sandbox import SandboxServer
from shared.config import load_settings
from shared.pipeline.changes import ChangeReader
from shared.pipeline.snapshot import plan_selected
from shared.pipeline.wiring import open_context

DATABASE = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collections", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    with SandboxServer() as server, tempfile.TemporaryDirectory() as folder:
        with MongoClient(server.uri) as client:
            for i in range(args.collections):
                client[DATABASE].create_collection(f"c{i:04d}")
        settings = load_settings(
            {
                "MONGODB_URI": server.uri,
                "MONGODB_DATABASE": DATABASE,
                "LANDING_ZONE": f"{folder}/lz",
                "STATE_STORE": f"{folder}/state.db",
            }
        )
        ctx = open_context(settings)
        try:
            started = time.perf_counter()
            plans = plan_selected(ctx).plans
            print(f"planned {len(plans)} idle tables in {time.perf_counter() - started:.1f} s")
            reader = ChangeReader(ctx, DATABASE, None)
            reader.acquire()
            ours = []
            for _ in range(args.cycles):
                started = time.perf_counter()
                result = reader.window()
                ours.append(time.perf_counter() - started)
                if result.events or not result.idle:
                    raise SystemExit("the database was not idle")
            reader.release()
            await_ms = settings.integer("CHANGE_AWAIT_MS") or 0
            # Each baseline cycle waits out every idle stream's await: a couple suffice.
            baseline = per_collection_cycles(ctx.mongo, args.collections, 2, await_ms)
        finally:
            ctx.close()
    ours_median, baseline_median = statistics.median(ours), statistics.median(baseline)
    print(f"one database stream, {args.collections} tables: median {ours_median:.3f} s")
    print(f"{args.collections} collection streams, one poll each: median {baseline_median:.3f} s")
    print(f"idle_window_seconds: {ours_median:.3f}")
    print(f"ratio_vs_baseline: {baseline_median / ours_median:.1f}")


def per_collection_cycles(
    client: MongoClient[RawBSONDocument], collections: int, cycles: int, await_ms: int
) -> list[float]:
    """The other design: a stream per collection, every one polled each cycle."""
    database = client[DATABASE]
    streams = [
        database[f"c{i:04d}"].watch(full_document="updateLookup", max_await_time_ms=await_ms)
        for i in range(collections)
    ]
    try:
        times = []
        for _ in range(cycles):
            started = time.perf_counter()
            for stream in streams:
                if stream.try_next() is not None:
                    raise SystemExit("the database was not idle")
                _ = stream.resume_token  # what a checkpoint would record
            times.append(time.perf_counter() - started)
        return times
    finally:
        for stream in streams:
            stream.close()


if __name__ == "__main__":
    main()
