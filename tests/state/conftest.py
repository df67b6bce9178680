"""Each contract test runs once per backend: a fresh SQLite file or a fresh Azurite table."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.data.tables import TableClient

from shared.state import SqliteStateStore, StateStore, TableStateStore, open_state_store
from shared.state.codec import encode_row_key


@dataclass(frozen=True)
class Backend:
    location: str
    store: StateStore
    # Stores text as a record's value with the backend's own client, bypassing every check.
    write_raw: Callable[[str, str, str], None]


def _close(store: StateStore) -> None:
    assert isinstance(store, SqliteStateStore | TableStateStore)
    store.close()


def _sqlite_backend(path: Path) -> Iterator[Backend]:
    def write_raw(kind: str, key: str, text: str) -> None:
        with sqlite3.connect(path) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO records (kind, key, value, etag) VALUES (?, ?, ?, 'raw')",
                (kind, key, text),
            )
        connection.close()

    store = open_state_store(str(path))
    yield Backend(str(path), store, write_raw)
    _close(store)


def _table_backend(connection_string: str) -> Iterator[Backend]:
    table_name = f"state{uuid.uuid4().hex[:16]}"

    def write_raw(kind: str, key: str, text: str) -> None:
        with TableClient.from_connection_string(connection_string, table_name) as table:
            table.upsert_entity(
                {
                    "PartitionKey": kind,
                    "RowKey": encode_row_key(key),
                    "json_chunks": 1,
                    "json_0": text.encode("utf-8"),
                }
            )

    location = f"{connection_string};TableName={table_name}"
    store = open_state_store(location)
    yield Backend(location, store, write_raw)
    _close(store)


@pytest.fixture(params=["sqlite", "table"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield from _sqlite_backend(tmp_path / "nested" / "state.db")
    else:
        yield from _table_backend(request.getfixturevalue("azurite").connection_string)


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.store
