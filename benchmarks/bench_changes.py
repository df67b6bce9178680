"""Change capture end to end (MongoDB sandbox → local landing zone): ours vs the partner app's way.

Run: .venv/bin/python benchmarks/bench_changes.py [--events N] [--baseline-events B]
                                                  [--live-seconds S] [--rate R]

The sandbox runs as its own process. Each collection is first snapshotted by the real `snapshot`
command (which records the database's stream checkpoint); then a backlog of change events
(inserts, updates, replaces, deletes of order documents) is written, and timed while drained:

- ours: a fresh process runs our ChangeReader (default settings) window after window until the
  backlog is published: read, convert, publish one parquet file per window, checkpoint. Its
  peak RSS is reported for N and for 2N events: memory is bounded by the window, not the stream.
- baseline: the partner app's change listener (v1.4.4 `listening.py`), in this process: each
  event becomes a one-row DataFrame, goes through its `process_dataframe` (the transform
  re-implemented in bench_conversion.py), gets its row marker and is concatenated onto the
  accumulated DataFrame; every DELTA_SYNC_BATCH_SIZE events the batch is finalized and written
  as one parquet file, then its resume token and file number are saved (as JSON here, where the
  app pickles them). The OneLake upload is left out: CPU and local disk only, as for ours.

Latency: the real `run` command streams a collection with default settings while a writer
process applies a steady R events/s mix, stamping each written document with its write time;
this process polls the table folder for new numbered files and, per row, takes (time the file
was first seen - write stamp). Deletes carry no stamp and are not sampled.

The last lines are ``latency_p95_s: <x>`` and ``ratio_vs_baseline: <x>`` (ours ÷ baseline
events/s).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from bson import ObjectId, json_util
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, InsertOne, MongoClient, ReplaceOne, UpdateOne

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_conversion import PartnerAppBaseline, orders
from benchmarks.bench_snapshot import SCRIPT, start_sandbox
from shared.source.resume_tokens import token_from_json

ROOT = Path(__file__).resolve().parents[1]
DELTA_SYNC_BATCH_SIZE = 100  # the partner app's default
ROW_MARKER = "__rowMarker__"
PARTNER_MARKERS = {"insert": 0, "update": 4, "replace": 4, "delete": 2}  # its operation map
COLLECTION = "orders"
SEED_DOCUMENTS = 1_000
BULK = 1_000
POLL_SECONDS = 0.05
STATUSES = ("new", "paid", "shipped", "delivered", "cancelled")


# --- the change stream every contender reads ------------------------------------------------


def settings_values(uri: str, database: str, root: Path) -> dict[str, str]:
    """Default settings for one database mirrored into ``root`` (a local folder and SQLite)."""
    return {
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": database,
        "MONGODB_COLLECTIONS": COLLECTION,
        "LANDING_ZONE": str(root / "lz"),
        "STATE_STORE": str(root / "state.db"),
        "LOG_LEVEL": "WARNING",
    }


def snapshot(uri: str, database: str, root: Path) -> None:
    """Seed the collection and snapshot it with the real command: the table is then streaming."""
    seed = MongoClient[dict[str, Any]](uri)[database][COLLECTION]
    seed.insert_many([RawBSONDocument(raw) for raw in orders(SEED_DOCUMENTS, seed=3)])
    command = mirror_command("snapshot", settings_values(uri, database, root))
    subprocess.run(command, capture_output=True, text=True, check=True)


def mirror_command(name: str, values: dict[str, str]) -> list[str]:
    """The console script's ``name`` command with these settings as its flags."""
    command = [str(SCRIPT), "--log-level", "WARNING", name]
    for flag, setting in (
        ("--mongodb-uri", "MONGODB_URI"),
        ("--database", "MONGODB_DATABASE"),
        ("--collections", "MONGODB_COLLECTIONS"),
        ("--landing-zone", "LANDING_ZONE"),
        ("--state", "STATE_STORE"),
    ):
        command += [flag, values[setting]]
    return command


def write_backlog(uri: str, database: str, count: int, seed: int = 11) -> dict[str, int]:
    """``count`` change events: half inserts, then updates, replaces and deletes (3:1:1) of the
    inserted orders, each document touched by at most one of them (so every lookup finds it)."""
    collection = MongoClient[dict[str, Any]](uri)[database][COLLECTION]
    rng = random.Random(seed)
    inserts = count // 2
    raws = orders(inserts, seed=seed)
    for start in range(0, inserts, BULK):
        collection.insert_many([RawBSONDocument(raw) for raw in raws[start : start + BULK]])
    ids = [RawBSONDocument(raw)["_id"] for raw in raws]
    rng.shuffle(ids)
    rest = count - inserts
    replaces = deletes = rest // 5
    updates = rest - replaces - deletes
    operations: list[Any] = []
    for number, _id in enumerate(ids[:rest]):
        if number < updates:
            change = {"status": rng.choice(STATUSES), "weightKg": rng.uniform(0.1, 30)}
            operations.append(UpdateOne({"_id": _id}, {"$set": change}))
        elif number < updates + replaces:
            operations.append(ReplaceOne({"_id": _id}, {"status": "replaced", "n": number}))
        else:
            operations.append(DeleteOne({"_id": _id}))
    rng.shuffle(operations)
    for start in range(0, len(operations), BULK):
        collection.bulk_write(operations[start : start + BULK], ordered=False)
    return {"insert": inserts, "update": updates, "replace": replaces, "delete": deletes}


def stream_token(root: Path, database: str) -> str:
    """The database checkpoint `snapshot` recorded: where both contenders start reading."""
    from shared.config import load_settings
    from shared.pipeline.stream_checkpoint import STREAM_KIND
    from shared.state import open_state_store

    settings = load_settings(settings_values("mongodb://unused", database, root))
    state = open_state_store(settings.require("STATE_STORE"))
    try:
        record = state.get(STREAM_KIND, database)
        assert record is not None, "snapshot recorded no stream checkpoint"
        return str(record.value["token"])
    finally:
        state.close()


# --- ours: the ChangeReader in a process of its own --------------------------------------------


def drain_with_change_reader(
    values: dict[str, str], count: int
) -> tuple[int, float, float, int, float, float]:
    """Windows until the backlog's ``count`` events are published and checkpointed (or the
    stream is idle: then fewer were read, which the caller refuses); (events, seconds, CPU
    seconds, files published, peak RSS MB once half of the events were read, peak RSS MB at the
    end). The clock stops with the window that holds the last event, as the baseline's stops at
    its last event: neither waits out an idle getMore after the backlog."""
    from shared.config import load_settings
    from shared.pipeline.changes import ChangeReader
    from shared.pipeline.wiring import open_context

    settings = load_settings(values)
    ctx = open_context(settings)
    reader = ChangeReader(ctx, values["MONGODB_DATABASE"], [COLLECTION])
    events = 0
    half_peak = 0.0
    try:
        reader.acquire()
        started, cpu = time.perf_counter(), time.process_time()
        while events < count:
            result = reader.window()
            events += result.events
            if not half_peak and events >= count // 2:
                half_peak = peak_rss_mb()
            if result.idle:
                break
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        reader.release()
        ctx.close()
    folder = Path(values["LANDING_ZONE"]) / f"{values['MONGODB_DATABASE']}.schema" / COLLECTION
    files = len(list(folder.glob("[0-9]*.parquet")))
    return events, seconds, cpu, files, half_peak, peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ours(uri: str, sandbox: int, database: str, root: Path, count: int) -> tuple[float, float]:
    """Our reader draining a backlog of ``count`` events: prints its figures, returns
    (events/s, peak RSS MB)."""
    snapshot(uri, database, root)
    write_backlog(uri, database, count)
    sandbox_cpu = process_cpu(sandbox)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        events, seconds, cpu, files, half_peak, peak = pool.submit(
            drain_with_change_reader, settings_values(uri, database, root), count
        ).result()
    sandbox_cpu = process_cpu(sandbox) - sandbox_cpu
    assert events == count, f"ours read {events} of {count} events"
    print(
        f"ours (ChangeReader, default settings): {events / seconds:,.0f} events/s "
        f"({count:,} events, {files} files; CPU per event: reader {cpu / count * 1e6:,.0f} µs, "
        f"sandbox {sandbox_cpu / count * 1e6:,.0f} µs; peak RSS {half_peak:,.0f} MB after half "
        f"the events, {peak:,.0f} MB at the end)"
    )
    return events / seconds, peak


# --- baseline: the partner app's listener --------------------------------------------------------


def baseline(uri: str, database: str, root: Path, count: int) -> float:
    """Events/s of the partner app's change listener over a backlog of ``count`` events."""
    snapshot(uri, database, root)
    token = token_from_json(stream_token(root, database))
    write_backlog(uri, database, count)
    collection = MongoClient[dict[str, Any]](uri)[database][COLLECTION]
    app = PartnerAppBaseline()
    app.bootstrap(list(collection.aggregate([{"$sample": {"size": 49}}])))  # its 4.9 % sample
    folder = root / "baseline"
    folder.mkdir()
    accumulated: pd.DataFrame | None = None
    files = done = 0
    started, cpu = time.perf_counter(), time.process_time()
    with collection.watch(full_document="updateLookup", resume_after=token) as stream:
        while done < count:
            change = stream.try_next()
            if change is None:
                continue
            operation = change["operationType"]
            document = change["documentKey"] if operation == "delete" else change["fullDocument"]
            frame = pd.DataFrame([document])
            resume_token = change["_id"]
            app.process_dataframe(frame)
            frame.insert(0, ROW_MARKER, [PARTNER_MARKERS[operation]])
            accumulated = (
                frame if accumulated is None else pd.concat([accumulated, frame], ignore_index=True)
            )
            done += 1
            if accumulated.shape[0] >= DELTA_SYNC_BATCH_SIZE:
                app.finalize(accumulated)
                files += 1
                accumulated.to_parquet(folder / f"{files:020d}.parquet")
                accumulated = None
                (folder / "resume_token.json").write_text(json_util.dumps(resume_token))
                (folder / "last_parquet_file_number.json").write_text(str(files))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"baseline (partner app listener, batches of {DELTA_SYNC_BATCH_SIZE}): "
        f"{done / seconds:,.0f} events/s ({done:,} events, {files} files; CPU per event: "
        f"listener {cpu / done * 1e6:,.0f} µs)"
    )
    return done / seconds


# --- latency: the `run` command under a steady writer ------------------------------------------


def steady_writer(uri: str, database: str, rate: int, seconds: float) -> int:
    """Apply ``rate`` events/s for ``seconds`` (insert 5 : update 3 : replace 1 : delete 1),
    stamping every written document with ``writtenAt`` (epoch seconds). Returns events written."""
    collection = MongoClient[dict[str, Any]](uri)[database][COLLECTION]
    rng = random.Random(5)
    live: list[ObjectId] = []
    written = 0
    started = time.time()
    while (now := time.time()) - started < seconds:
        due = int((now - started) * rate) - written
        if due <= 0:
            time.sleep(0.002)  # pacing the writer, not synchronising with anything
            continue
        operations: list[Any] = []
        for _ in range(due):
            draw = rng.random()
            stamp = time.time()
            if draw < 0.5 or len(live) < 100:
                _id = ObjectId()
                live.append(_id)
                operations.append(InsertOne({"_id": _id, "status": "new", "writtenAt": stamp}))
            elif draw < 0.8:
                change = {"status": rng.choice(STATUSES), "writtenAt": stamp}
                operations.append(UpdateOne({"_id": rng.choice(live)}, {"$set": change}))
            elif draw < 0.9:
                document = {"status": "replaced", "writtenAt": stamp}
                operations.append(ReplaceOne({"_id": rng.choice(live)}, document))
            else:
                operations.append(DeleteOne({"_id": live.pop(rng.randrange(len(live)))}))
        collection.bulk_write(operations, ordered=True)
        written += due
    return written


class FolderWatcher(threading.Thread):
    """Polls a table folder; per new file, (first-seen time - writtenAt) of each stamped row."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.seen: set[str] = set()
        self.latencies: list[float] = []
        self.files = 0
        self.stop = threading.Event()

    def poll(self) -> None:
        for path in sorted(self.folder.glob("[0-9]*.parquet")):
            if path.name in self.seen:
                continue
            seen_at = time.time()
            self.seen.add(path.name)
            table = pq.read_table(path)
            if "writtenAt" not in table.column_names:
                continue  # the snapshot's files
            self.files += 1
            self.latencies += [seen_at - s for s in table["writtenAt"].to_pylist() if s]

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
            self.stop.wait(POLL_SECONDS)


def latency(uri: str, database: str, root: Path, rate: int, seconds: float) -> FolderWatcher:
    snapshot(uri, database, root)
    command = mirror_command("run", settings_values(uri, database, root))
    watcher = FolderWatcher(root / "lz" / f"{database}.schema" / COLLECTION)
    watcher.poll()  # the snapshot's files are not samples
    mirror = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        # Warm-up: one write, published once `run` has started streaming.
        MongoClient[dict[str, Any]](uri)[database][COLLECTION].insert_one(
            {"writtenAt": time.time()}
        )
        while watcher.files == 0:
            watcher.poll()
            time.sleep(POLL_SECONDS)
        watcher.latencies.clear()
        watcher.start()
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            written = pool.submit(steady_writer, uri, database, rate, seconds).result()
        expected = written  # events; rows sampled are fewer (deletes carry no stamp)
        deadline = time.time() + 60
        while time.time() < deadline and len(watcher.latencies) < 0.85 * expected:
            time.sleep(POLL_SECONDS)
        watcher.stop.set()
        watcher.join()
        print(
            f"latency: {written:,} events written in {seconds:.0f} s ({written / seconds:,.0f}/s)"
        )
    finally:
        mirror.send_signal(signal.SIGTERM)
        mirror.wait(timeout=60)
    return watcher


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="N (ours runs N and 2N)")
    parser.add_argument("--baseline-events", type=int, default=2_000)
    parser.add_argument("--live-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=1_000, help="writer events/s for latency")
    args = parser.parse_args()
    # The commands started below (sandbox, snapshot, run) run this checkout's code.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))
    sandbox, uri = start_sandbox()
    try:
        with tempfile.TemporaryDirectory() as work:
            root = Path(work)
            base = baseline(uri, "base", root / "base", args.baseline_events)
            rate, peak = ours(uri, sandbox.pid, "ours", root / "ours", args.events)
            _, peak2 = ours(uri, sandbox.pid, "ours2", root / "ours2", 2 * args.events)
            print(
                f"peak reader RSS: {peak:,.0f} MB for {args.events:,} events, "
                f"{peak2:,.0f} MB for {2 * args.events:,} events"
            )
            watcher = latency(uri, "live", root / "live", args.rate, args.live_seconds)
            samples = watcher.latencies
            print(
                f"latency over {len(samples):,} rows in {watcher.files} files: "
                f"median {statistics.median(samples):.2f} s, max {max(samples):.2f} s"
            )
    finally:
        sandbox.terminate()
        sandbox.wait()
    print(f"latency_p95_s: {percentile(samples, 0.95):.2f}")
    print(f"ratio_vs_baseline: {rate / base:.1f}")


if __name__ == "__main__":
    main()
