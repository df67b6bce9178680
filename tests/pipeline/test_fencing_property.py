"""Property: whatever the interleaving of pauses, takeovers, lost answers and DDL, the mirror ends
equal to the source (issue 13).

Per seed: a writer changes `items` (inserts, updates, replaces, deletes; the collection is
sometimes dropped, and a second one appears and goes); up to two `run` processes (each a reader
and one snapshot worker) start, are frozen with SIGSTOP and woken at random; Table Storage
(Azurite through the fault proxy) applies some writes and loses their answers. At the end every
process is woken and stopped, one `run --once` drains, and `verify` and `inspect` judge the
landing zone. Every process must exit 0, or 1 with one line (superseded, lease held): never a
traceback. The schedule is drawn from the seed; the seeds are fixed, so CI judges the same runs.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.state import open_state_store
from tests.fixtures.fault_proxy import FaultyAzurite, Request
from tests.pipeline.test_run_cli import RunProcess, Writer, assert_verified
from tests.pipeline.test_storage_faults import backends, run_once

STEPS = 36
TAKEOVER_AT = 8
STEP_SECONDS = 0.5  # the schedule's clock: how long the world runs between two random actions
LOST_ANSWER_CHANCE = 0.04
LEASE = ["--change-lease-seconds", "5"]


CONTENTION = re.compile(
    r"^error: (database [^\s:]+( is being mirrored by another process|: another reader took over)"
    r"|\S+: (a newer reader \(epoch \d+\) holds|another process took over) changes)",
    re.MULTILINE,
)


class Lottery:
    """A thread-safe, seeded predicate for the fault proxy: true with a fixed chance."""

    def __init__(self, seed: int, chance: float) -> None:
        self._rng = random.Random(seed)
        self._chance = chance
        self._lock = threading.Lock()
        self.drawn = 0

    def __call__(self, request: Request) -> bool:
        with self._lock:
            won = self._rng.random() < self._chance
            self.drawn += won
            return won


@pytest.mark.parametrize("seed", [1, 2])
def test_pauses_takeovers_and_lost_answers_never_leave_a_wrong_mirror(
    faulty_azurite: FaultyAzurite,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient[Any],
    tmp_path: Path,
    seed: int,
) -> None:
    rng = random.Random(seed)
    db = mongo_client[mongo_db_name]
    writer = Writer(mongodb_uri, mongo_db_name, seed=seed, rate=60)
    writer.seed(db.items, 80)
    proxied, direct, table = backends(faulty_azurite)
    lottery = Lottery(seed, LOST_ANSWER_CHANCE)
    for method in ("POST", "PUT", "DELETE"):
        faulty_azurite.table.lose_answers(
            method, rf"^/devstoreaccount1/{table}", times=None, when=lottery
        )

    runs: list[RunProcess] = []
    frozen: set[int] = set()
    takeovers = 0
    writer.start()
    try:
        for step in range(STEPS):
            alive = [run for run in runs if run.running()]
            action = rng.choice(["start", "freeze", "wake", "wake", "ddl", "wait", "wait"])
            # At least one takeover per seed: a run, frozen, then another started after it.
            scripted = {
                TAKEOVER_AT: "start",
                TAKEOVER_AT + 2: "freeze all",
                TAKEOVER_AT + 3: "start",
            }
            action = scripted.get(step, action)
            if action == "freeze all":
                for run in alive:
                    os.killpg(run.popen.pid, signal.SIGSTOP)
                    frozen.add(run.popen.pid)
            elif action == "start" and (
                len(alive) < 2 or all(run.popen.pid in frozen for run in alive)
            ):
                if alive and all(run.popen.pid in frozen for run in alive):
                    # A takeover: the frozen reader's lease runs out first, as on a frozen VM.
                    wait_for_lease_to_lapse(direct, mongo_db_name)
                    takeovers += 1
                runs.append(RunProcess(tmp_path, mongodb_uri, mongo_db_name, proxied, *LEASE))
            elif action == "freeze" and alive:
                victim = rng.choice(alive)
                os.killpg(victim.popen.pid, signal.SIGSTOP)
                frozen.add(victim.popen.pid)
            elif action == "wake" and frozen:
                pid = rng.choice(sorted(frozen))
                os.killpg(pid, signal.SIGCONT)
                frozen.discard(pid)
            elif action == "ddl":
                if rng.random() < 0.3:
                    db.items.drop()  # the writer's next inserts re-create it
                elif "extra" in db.list_collection_names():
                    db.extra.drop()
                else:
                    db.extra.insert_many([{"_id": i, "v": rng.random()} for i in range(20)])
            time.sleep(STEP_SECONDS)
    finally:
        writer.finish()
        for run in runs:
            if run.running():
                os.killpg(run.popen.pid, signal.SIGCONT)
        codes = [run.stop() if run.running() else run.popen.returncode for run in runs]
    for run, code in zip(runs, codes, strict=True):
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        if code != 0:  # only contention may stop a run: never a failure of its own
            # (SIGTERM may meet a run already on its way out with that line: -15.)
            assert code in (1, -signal.SIGTERM), run.stderr[-3000:]
            assert CONTENTION.search(run.stderr), run.stderr[-3000:]
    assert takeovers and lottery.drawn, "the schedule froze no reader out, or lost no answer"

    faulty_azurite.table.clear()
    final = drain(mongodb_uri, mongo_db_name, direct)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_verified(mongodb_uri, mongo_db_name, direct)


def wait_for_lease_to_lapse(backend: tuple[str, str], database: str) -> None:
    state = open_state_store(backend[1])
    try:
        record = state.get(STREAM_KIND, database)
        expires = 0.0 if record is None else float(record.value.get("lease_expires", 0))
    finally:
        state.close()
    while time.time() <= expires:
        time.sleep(0.05)


def drain(uri: str, database: str, backend: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    """`run --once`, again while a stopped run's lease (given back on SIGTERM unless the run
    was superseded first) still stands."""
    deadline = time.monotonic() + 60
    while True:
        result = run_once(uri, database, backend)
        if "another process" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(1)
