"""State in one local SQLite file, shared safely by the threads and processes of one machine.

WAL mode lets readers proceed while one writer commits; every write runs in ``BEGIN IMMEDIATE`` so
a compare-and-swap is atomic across processes, and a writer killed mid-transaction leaves the
file consistent. ETags are random tokens, so a record deleted and re-created never matches an
ETag read from its predecessor.

Opening checks the file before anything is written to it: a wrong path (a folder, a file
inside a file, a read-only place, another program's database) is a ConfigError naming
STATE_STORE; a damaged file (not a database, a broken page, a record that is not JSON) is a
CorruptStateError naming the file. The state is small, so every record is checked.

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

from shared.errors import ConfigError, MirrorError
from shared.state.base import ConflictError, JsonObject, Record
from shared.state.codec import (
    CorruptStateError,
    check_key,
    check_kind,
    dump_value,
    load_value,
    record_name,
)

# Generous: a writer waits for another process's transaction rather than failing the activity.
BUSY_TIMEOUT_SECONDS = 30
SETTING = "STATE_STORE"
TABLE = "records"
RECOVERY_ADVICE = (
    "restore the file from a backup, or set STATE_STORE to the state this landing zone was "
    "written with"
)

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
        _check_location(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One connection per store; the lock serialises the threads that share it.
            self._connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise _opening_failure(path, error) from None
        try:
            self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
            # Read-only checks first: nothing is written to a damaged or foreign file.
            self._check_content()
            self._connection.execute("PRAGMA journal_mode = WAL")
            # FULL (not WAL's usual NORMAL): checkpoints must survive a power cut, not only a crash.
            self._connection.execute("PRAGMA synchronous = FULL")
            self._connection.execute(_SCHEMA)
        except BaseException as error:
            self._connection.close()
            if isinstance(error, sqlite3.Error):
                raise _opening_failure(path, error) from None
            raise

    def _check_content(self) -> None:
        """CorruptStateError unless the file is a sound SQLite database whose records all parse."""
        problems = [str(row[0]) for row in self._connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            first = " ".join(problems[0].split())[:200]  # one line, however long SQLite's list
            raise _corrupt(self._path, f"SQLite's quick_check found {first}")
        tables = [
            str(row[0])
            for row in self._connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        if tables and TABLE not in tables:
            raise ConfigError(
                SETTING,
                f"{self._path} is another program's SQLite database (tables "
                f"{', '.join(sorted(tables)[:5])}), not a mirror state store",
            )
        if TABLE not in tables:
            return
        # As bytes: text that is not UTF-8 must be reported as damage, not fail on every read.
        for kind, key, value, etag in self._connection.execute(
            "SELECT CAST(kind AS BLOB), CAST(key AS BLOB), CAST(value AS BLOB),"
            " CAST(etag AS BLOB) FROM records"
        ):
            names = [_text(kind), _text(key), _text(etag)]
            if None in names:
                raise _corrupt(self._path, f"a record's name is not UTF-8 text: {kind!r}/{key!r}")
            try:
                load_value(str(names[0]), str(names[1]), value, self.description)
            except CorruptStateError as error:
                raise CorruptStateError(f"{error}; {RECOVERY_ADVICE}") from None

    @property
    def description(self) -> str:
        # Absolute, as StateLocation.description: it is recorded in _mirror-binding.json.
        return f"SQLite file {self._path.absolute()}"

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def get(self, kind: str, key: str) -> Record | None:
        check_kind(kind)
        check_key(key)
        with self._connected() as connection:
            row = connection.execute(
                "SELECT CAST(value AS BLOB), etag FROM records WHERE kind = ? AND key = ?",
                (kind, key),
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
                "SELECT key, CAST(value AS BLOB), etag FROM records WHERE kind = ? ORDER BY key",
                (kind,),
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
            try:
                yield self._connection
            except sqlite3.DatabaseError as error:
                if _is_damage(error):  # damaged since it was opened
                    raise _corrupt(self._path, str(error)) from None
                raise

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


def _check_location(path: Path) -> None:
    """ConfigError unless ``path`` can be a state file this process reads and writes."""
    existing = path
    try:
        while not existing.exists():
            existing = existing.parent
    except PermissionError:
        raise ConfigError(SETTING, f"{existing} cannot be searched (permission denied)") from None
    if existing == path:
        if path.is_dir():
            raise ConfigError(SETTING, f"{path} is a folder, not a SQLite file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(SETTING, f"{path} cannot be read and written (permission denied)")
        existing = path.parent
    elif not existing.is_dir():
        raise ConfigError(SETTING, f"{path} is inside {existing}, which is a file")
    # SQLite keeps its write-ahead log beside the file: the folder must be writable too.
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(SETTING, f"{path} cannot be written: {existing} is read-only")


def _text(stored: bytes | None) -> str | None:
    try:
        return None if stored is None else stored.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _is_damage(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorname", "").startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def _corrupt(path: Path, problem: str) -> CorruptStateError:
    return CorruptStateError(
        f"state store SQLite file {path} is damaged ({problem}): {RECOVERY_ADVICE}"
    )


def _opening_failure(path: Path, error: OSError | sqlite3.Error) -> MirrorError:
    if isinstance(error, sqlite3.Error) and _is_damage(error):
        return _corrupt(path, str(error))
    if isinstance(error, OSError) or getattr(error, "sqlite_errorname", "").startswith(
        ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
    ):
        return ConfigError(SETTING, f"{path} cannot be opened for writing: {error}")
    return MirrorError(f"state store SQLite file {path} cannot be opened: {error}")
