"""A publishing process for crash and race tests: run as a real subprocess, killed with SIGKILL.

    python -m tests.landing_zone.publishing_child LANDING_ZONE STATE_STORE WRITER BATCHES ROWS
        [CRASH_STEP]

LANDING_ZONE and STATE_STORE take the settings' forms (a folder and a SQLite file, or Azurite
connection strings). Publishes BATCHES batches of ROWS rows (ids ``WRITER-<batch>-<row>``) to one
table, resuming from the progress the publisher recorded. With CRASH_STEP, the process kills
itself at that step of its second publish: after-staging, after-allocating, after-renaming or
before-recording.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pyarrow as pa

from shared.landing_zone.parquet_files import ROW_MARKER, RowMarker
from shared.landing_zone.publisher import STAGING_PREFIX, Publisher
from shared.landing_zone.stores import open_landing_zone
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef
from shared.state import open_state_store
from shared.state.base import JsonObject, Record, StateStore

TABLE = TableRef("crash", "rows")
CRASH_IN_PUBLISH = 2


def batch(writer: str, number: int, rows: int) -> pa.Table:
    ids = [f"{writer}-{number:04d}-{row:04d}" for row in range(rows)]
    return pa.table(
        {
            "_id": pa.array(ids, pa.string()),
            "batch": pa.array([number] * rows, pa.int64()),
            ROW_MARKER: pa.array([RowMarker.UPSERT] * rows, pa.int32()),
        }
    )


class Crash:
    """Kills this process at one named step of its second publish."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.publishes = 0
        self.state_writes = 0  # in the current publish: 1 = allocated, 2 = recorded

    def at(self, point: str) -> None:
        if point == self.step and self.publishes == CRASH_IN_PUBLISH:
            os.kill(os.getpid(), signal.SIGKILL)


class CrashingStore:
    """The real store, with a crash point after staging and after renaming."""

    def __init__(self, inner: LandingZoneStore, crash: Crash) -> None:
        self.inner = inner
        self.crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, path: str, data: bytes) -> None:
        self.inner.write(path, data)
        if STAGING_PREFIX in path:
            self.crash.publishes += 1
            self.crash.state_writes = 0
            self.crash.at("after-staging")

    def rename_new(self, source: str, target: str) -> None:
        self.inner.rename_new(source, target)
        self.crash.at("after-renaming")


class CrashingState:
    """The real state store, with a crash point after allocating and before recording."""

    def __init__(self, inner: StateStore, crash: Crash) -> None:
        self.inner = inner
        self.crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _write(self, write: Any, *args: Any) -> Record:
        if self.crash.state_writes == 1:
            self.crash.at("before-recording")
        record: Record = write(*args)
        self.crash.state_writes += 1
        if self.crash.state_writes == 1:
            self.crash.at("after-allocating")
        return record

    def create(self, kind: str, key: str, value: JsonObject) -> Record:
        return self._write(self.inner.create, kind, key, value)

    def replace(self, kind: str, key: str, value: JsonObject, etag: str) -> Record:
        return self._write(self.inner.replace, kind, key, value, etag)


def main(argv: list[str]) -> None:
    landing_zone, state_store, writer, batches, rows = argv[:5]
    crash = Crash(argv[5] if len(argv) > 5 else "")
    store = CrashingStore(open_landing_zone(landing_zone), crash)
    state = CrashingState(open_state_store(state_store), crash)
    publisher = Publisher(store, state)  # type: ignore[arg-type]
    publisher.prepare_table(TABLE)
    owner, progress = publisher.claim(TABLE, writer)  # finishes what a killed run left pending
    done = int(progress.get("batches", 0))
    for number in range(done, int(batches)):
        progress = {"batches": number + 1}
        publisher.publish(TABLE, batch(writer, number, int(rows)), writer, progress, owner)


if __name__ == "__main__":
    main(sys.argv[1:])
