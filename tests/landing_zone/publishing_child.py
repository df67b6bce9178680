"""A publishing process for crash and race tests: run as a real subprocess, killed with SIGKILL.

    python -m tests.landing_zone.publishing_child ROOT STATE_DB WRITER BATCHES ROWS [CRASH_STEP]

Publishes BATCHES batches of ROWS rows (ids ``WRITER-<batch>-<row>``) to one table, resuming from
the progress the publisher recorded. With CRASH_STEP, the process kills itself at that step of its
second publish: after-staging, after-allocating, after-renaming or before-recording.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pyarrow as pa

from shared.landing_zone.publisher import STAGING_PREFIX, Publisher
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.state.base import JsonObject, Record
from shared.state.sqlite import SqliteStateStore

TABLE = TableRef("crash", "rows")
CRASH_IN_PUBLISH = 2


def batch(writer: str, number: int, rows: int) -> pa.Table:
    ids = [f"{writer}-{number:04d}-{row:04d}" for row in range(rows)]
    return pa.table(
        {
            "_id": pa.array(ids, pa.string()),
            "batch": pa.array([number] * rows, pa.int64()),
            "__rowMarker__": pa.array([4] * rows, pa.int32()),
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


class CrashingStore(LocalStore):
    def __init__(self, root: str, crash: Crash) -> None:
        super().__init__(root)
        self.crash = crash

    def write(self, path: str, data: bytes) -> None:
        super().write(path, data)
        if STAGING_PREFIX in path:
            self.crash.publishes += 1
            self.crash.state_writes = 0
            self.crash.at("after-staging")

    def rename_new(self, source: str, target: str) -> None:
        super().rename_new(source, target)
        self.crash.at("after-renaming")


class CrashingState(SqliteStateStore):
    def __init__(self, path: Path, crash: Crash) -> None:
        super().__init__(path)
        self.crash = crash

    def _before_write(self) -> None:
        if self.crash.state_writes == 1:
            self.crash.at("before-recording")

    def _after_write(self) -> None:
        self.crash.state_writes += 1
        if self.crash.state_writes == 1:
            self.crash.at("after-allocating")

    def create(self, kind: str, key: str, value: JsonObject) -> Record:
        self._before_write()
        record = super().create(kind, key, value)
        self._after_write()
        return record

    def replace(self, kind: str, key: str, value: JsonObject, etag: str) -> Record:
        self._before_write()
        record = super().replace(kind, key, value, etag)
        self._after_write()
        return record


def main(argv: list[str]) -> None:
    root, state_db, writer, batches, rows = argv[:5]
    crash = Crash(argv[5] if len(argv) > 5 else "")
    publisher = Publisher(CrashingStore(root, crash), CrashingState(Path(state_db), crash))
    publisher.prepare_table(TABLE)
    done = int((publisher.progress(TABLE, writer) or {"batches": 0})["batches"])
    for number in range(done, int(batches)):
        publisher.publish(TABLE, batch(writer, number, int(rows)), writer, {"batches": number + 1})


if __name__ == "__main__":
    main(sys.argv[1:])
