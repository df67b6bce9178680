"""State in one local SQLite file, shared safely by the threads and processes of one machine.

WAL mode lets readers proceed while one writer commits; every write runs in ``BEGIN IMMEDIATE`` so
a compare-and-swap is atomic across processes, and a writer killed mid-transaction leaves the
file consistent. ETags are random tokens, so a record deleted and re-created never matches an
ETag read from its predecessor.

Not fork-safe: a store opened before ``fork`` must not be used in the child; open one per process.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import MirrorError
from shared.state.base import ConflictError, JsonObject, Record
from shared.state.codec import check_key, check_kind, dump_value, load_value, record_name

# Generous: a writer waits for another process's transaction rather than failing the activity.
BUSY_TIMEOUT_SECONDS = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    etag TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID
"""


class SqliteStateStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._pid = os.getpid()
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per store; the lock serialises the threads that share it.
        self._connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
            self._connection.execute("PRAGMA journal_mode = WAL")
            # FULL (not WAL's usual NORMAL): checkpoints must survive a power cut, not only a crash.
            self._connection.execute("PRAGMA synchronous = FULL")
            self._connection.execute(_SCHEMA)
        except BaseException:
            self._connection.close()
            raise

    @property
    def description(self) -> str:
        return f"SQLite file {self._path}"

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def get(self, kind: str, key: str) -> Record | None:
        check_kind(kind)
        check_key(key)
        with self._connected() as connection:
            row = connection.execute(
                "SELECT value, etag FROM records WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        if row is None:
            return None
        return Record(load_value(kind, key, row[0], self.description), row[1])

    def create(self, kind: str, key: str, value: JsonObject) -> Record:
        text = self._checked(kind, key, value)
        etag = uuid.uuid4().hex
        with self._write() as connection:
            inserted = connection.execute(
                "INSERT INTO records (kind, key, value, etag) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (kind, key, text, etag),
            ).rowcount
        if not inserted:
            raise ConflictError(f"{record_name(kind, key)} already exists")
        return Record(load_value(kind, key, text, self.description), etag)

    def replace(self, kind: str, key: str, value: JsonObject, etag: str) -> Record:
        text = self._checked(kind, key, value)
        new_etag = uuid.uuid4().hex
        with self._write() as connection:
            replaced = connection.execute(
                "UPDATE records SET value = ?, etag = ? WHERE kind = ? AND key = ? AND etag = ?",
                (text, new_etag, kind, key, etag),
            ).rowcount
        if not replaced:
            raise ConflictError(f"{record_name(kind, key)} changed or vanished since it was read")
        return Record(load_value(kind, key, text, self.description), new_etag)

    def list(self, kind: str) -> list[tuple[str, Record]]:
        check_kind(kind)
        with self._connected() as connection:
            # SQLite's BINARY collation compares UTF-8 bytes: the same order as Python's str.
            rows = connection.execute(
                "SELECT key, value, etag FROM records WHERE kind = ? ORDER BY key", (kind,)
            ).fetchall()
        return [
            (key, Record(load_value(kind, key, value, self.description), etag))
            for key, value, etag in rows
        ]

    def delete(self, kind: str, key: str, etag: str | None = None) -> None:
        check_kind(kind)
        check_key(key)
        with self._write() as connection:
            current = connection.execute(
                "SELECT etag FROM records WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            if current is None:
                return
            if etag is not None and current[0] != etag:
                raise ConflictError(f"{record_name(kind, key)} changed since it was read")
            connection.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))

    def _checked(self, kind: str, key: str, value: JsonObject) -> str:
        check_kind(kind)
        check_key(key)
        return dump_value(kind, key, value)

    @contextmanager
    def _connected(self) -> Iterator[sqlite3.Connection]:
        if os.getpid() != self._pid:
            raise MirrorError(
                f"{self.description} was opened in another process; open a store after fork"
            )
        with self._lock:
            yield self._connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its first statement."""
        with self._connected() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
