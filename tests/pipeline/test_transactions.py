"""Transactions mirrored exactly wherever a window boundary or a crash falls.

Each seed writes transactions of 50-500 operations over two collections (some aborted: they
emit nothing), with a few plain writes between them, then runs `run --once` as a real process
that is frozen and SIGKILLed at a seeded point inside a transaction's events, twice, and
finally lets a third `run --once` finish; `verify` must find both tables equal.

The events of one transaction share one clusterTime and are ordered only by their resume
tokens. Windows are a few dozen events (CHANGE_WINDOW_EVENTS), so their boundaries fall inside
transactions; the kill points are chosen from the stream itself (read here through PyMongo) so
that the killed window ends inside a transaction and the checkpoint it restarts from lies inside
one too:
- kill 1: at the checkpoint of window k, after every table of the window was published: the
  restart re-reads the window and each table skips what it already holds;
- kill 2: before the second table of a window is applied: one table published part of a
  transaction, the other nothing of it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared.config import load_settings
from shared.landing_zone.tables import TableRef
from shared.pipeline.changes import CHANGES_WRITER
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.pipeline.wiring import open_context
from shared.source.resume_tokens import token_from_json
from tests.fixtures.console import console_command, console_env
from tests.fixtures.freezing import Freeze
from tests.pipeline.in_process import snapshot
from tests.pipeline.test_run_cli import (
    REPO_ROOT,
    assert_verified_in_process,
    local_backend,
    open_publisher,
)

Client = MongoClient[dict[str, Any]]
COLLECTIONS = ("orders", "lines")
# Seeds run in CI: each writes 3-4 transactions and kills `run` twice (a few seconds each).
SEEDS = (0, 1, 2)
TRANSACTIONS = 4
AWAIT_MS = 100


@dataclass(frozen=True)
class Event:
    token: str  # the resume token's _data
    collection: str
    transaction: tuple[bytes, int] | None  # (lsid id, txnNumber); None outside transactions


class Workload:
    """Seeded writes: transactions over both collections (some aborted) and plain writes."""

    def __init__(self, db: Any, client: Client, rng: random.Random) -> None:
        self._db = db
        self._client = client
        self._rng = rng
        self._next_id = 0
        self.ids: dict[str, set[int]] = {name: set() for name in COLLECTIONS}
        self.committed = 0
        self.aborted = 0

    def seed(self, count: int) -> None:
        for name in COLLECTIONS:
            documents = [self._document() for _ in range(count)]
            self._db[name].insert_many(documents)
            self.ids[name].update(d["_id"] for d in documents)

    def _document(self) -> dict[str, Any]:
        self._next_id += 1
        return {"_id": self._next_id, "v": self._rng.randint(0, 1000), "tag": "x" * 20}

    def transaction(self, operations: int, abort: bool) -> None:
        ids = {name: set(values) for name, values in self.ids.items()}
        with self._client.start_session() as session:
            session.start_transaction()
            for _ in range(operations):
                self._operation(ids, session)
            if abort:
                session.abort_transaction()
                self.aborted += 1
                return
            session.commit_transaction()
        self.ids = ids
        self.committed += operations

    def plain(self, operations: int) -> None:
        for _ in range(operations):
            self._operation(self.ids, None)

    def _operation(self, ids: dict[str, set[int]], session: Any) -> None:
        name = self._rng.choice(COLLECTIONS)
        collection = self._db[name]
        existing = sorted(ids[name])
        kind = self._rng.choice(("insert", "insert", "update", "replace", "delete"))
        if kind == "insert" or not existing:
            document = self._document()
            collection.insert_one(document, session=session)
            ids[name].add(document["_id"])
            return
        key = self._rng.choice(existing)
        if kind == "update":
            change = {"$inc": {"v": 1}, "$set": {"seen": self._rng.random()}}
            collection.update_one({"_id": key}, change, session=session)
        elif kind == "replace":
            collection.replace_one({"_id": key}, {"w": self._rng.random()}, session=session)
        else:
            collection.delete_one({"_id": key}, session=session)
            ids[name].discard(key)


def stream_events(db: Any, after: dict[str, Any], marker: int) -> list[Event]:
    """Every event after the checkpoint ``after`` up to the marker insert, as the reader sees
    them (the marker excluded)."""
    found: list[Event] = []
    with db.watch(resume_after=after, max_await_time_ms=AWAIT_MS) as stream:
        for _ in range(100_000):
            event = stream.try_next()
            if event is None:
                continue
            if event["documentKey"]["_id"] == marker:
                return found
            transaction = None
            if "txnNumber" in event:
                transaction = (bytes(event["lsid"]["id"]), int(event["txnNumber"]))
            found.append(Event(event["_id"]["_data"], event["ns"]["coll"], transaction))
    raise AssertionError("the marker never arrived")


def inside_transaction(events: list[Event], boundary: int) -> bool:
    """Whether the boundary before ``events[boundary]`` splits a transaction's events."""
    if not 0 < boundary < len(events):
        return False
    before, after = events[boundary - 1].transaction, events[boundary].transaction
    return before is not None and before == after


def frozen_run(env: dict[str, str], freeze: Freeze, folder: Path) -> None:
    """`run --once` stopped at ``freeze``'s point, then SIGKILLed (and its workers)."""
    with (folder / "run.err").open("a") as err:
        process = subprocess.Popen(
            console_command("run", "--once"),
            cwd=REPO_ROOT,
            env=freeze.env(env),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        freeze.wait(process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def checkpoint(env: dict[str, str], database: str) -> str:
    ctx = open_context(load_settings(env))
    try:
        record = ctx.state.get(STREAM_KIND, database)
        assert record is not None
        return str(record.value["token"])
    finally:
        ctx.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_transactions_are_mirrored_exactly_through_kills_inside_their_events(
    seed: int, tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: Client
) -> None:
    rng = random.Random(seed)
    window = rng.randint(23, 47)
    backend = local_backend(tmp_path)
    env = console_env(
        {
            "MONGODB_URI": mongodb_uri,
            "MONGODB_DATABASE": mongo_db_name,
            "LANDING_ZONE": backend[0],
            "STATE_STORE": backend[1],
            "CHANGE_WINDOW_EVENTS": str(window),
            "CHANGE_WINDOW_SECONDS": "300",  # windows end by their event count alone
            "CHANGE_AWAIT_MS": "50",
            "SNAPSHOT_WORKERS": "1",
            "FILE_ROWS": "40",
        }
    )
    db = mongo_client[mongo_db_name]
    workload = Workload(db, mongo_client, rng)
    workload.seed(40)
    ctx = open_context(load_settings(env))
    try:
        snapshot(ctx)  # both tables stream from the checkpoint recorded before it
    finally:
        ctx.close()
    start = checkpoint(env, mongo_db_name)

    sizes = [rng.randint(50, 500) for _ in range(TRANSACTIONS)]
    aborted = rng.randrange(TRANSACTIONS)
    for index, size in enumerate(sizes):
        workload.transaction(size, abort=index == aborted or rng.random() < 0.2)
        workload.plain(rng.randint(0, 5))
    marker = 10**9
    db[COLLECTIONS[0]].insert_one({"_id": marker})
    events = stream_events(db, token_from_json(start), marker)
    assert workload.aborted >= 1
    transactional = [e for e in events if e.transaction is not None]
    assert len(transactional) == workload.committed  # aborted ones emitted nothing

    # Window k (1-based) of a run that resumes at events[first] covers
    # events[first + (k-1)*window : first + k*window].
    def boundaries(first: int) -> list[int]:
        return [
            k
            for k in range(2, (len(events) - first) // window)
            if inside_transaction(events, first + (k - 1) * window)
            and inside_transaction(events, first + k * window)
        ]

    # Kill 1: at window k's checkpoint, its tables published, the window ending mid-transaction.
    candidates = boundaries(0)
    assert candidates, "no window ends inside a transaction: the workload is too small"
    k = rng.choice(candidates[: max(1, len(candidates) // 2)])
    freeze = Freeze(tmp_path, "shared.pipeline.changes:ChangeReader._checkpoint", call=k)
    frozen_run(env, freeze, tmp_path)
    resumed_at = (k - 1) * window  # the killed window's first event
    assert token_from_json(checkpoint(env, mongo_db_name))["_data"] == (
        events[resumed_at - 1].token
    )
    assert inside_transaction(events, resumed_at)

    # Kill 2: before the second table of a window that touches both is applied.
    candidates = [
        k
        for k in boundaries(resumed_at)
        if len({e.collection for e in windows_of(events, resumed_at, window)[k - 1]}) == 2
    ]
    assert candidates, "no window touching both tables ends inside a transaction"
    k = rng.choice(candidates)
    # _apply runs once per table a window touches.
    calls = sum(
        len({e.collection for e in part})
        for part in windows_of(events, resumed_at, window)[: k - 1]
    )
    point = "shared.pipeline.changes:ChangeReader._apply"
    frozen_run(env, Freeze(tmp_path, point, call=calls + 2), tmp_path)
    # The killed window's first table has published its part of the transaction, the other
    # table nothing of it, and the checkpoint is still at the window's start.
    killed = windows_of(events, resumed_at, window)[k - 1]
    first_table = killed[0].collection
    published = open_publisher(backend).progress(
        TableRef.for_collection(mongo_db_name, first_table), CHANGES_WRITER
    )
    assert published is not None
    last_of_first = [e.token for e in killed if e.collection == first_table][-1]
    assert token_from_json(published["token"])["_data"] == last_of_first
    resumed_at += (k - 1) * window
    assert token_from_json(checkpoint(env, mongo_db_name))["_data"] == (
        events[resumed_at - 1].token
    )
    assert inside_transaction(events, resumed_at)

    finished = subprocess.run(
        console_command("run", "--once"),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_verified_in_process(mongodb_uri, mongo_db_name, backend)


def windows_of(events: list[Event], first: int, window: int) -> list[list[Event]]:
    return [events[i : i + window] for i in range(first, len(events), window)]
