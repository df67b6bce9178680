"""SQLite-only behaviour: one file shared by several real processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from shared.state import JsonObject, SqliteStateStore, open_state_store, update

PROCESSES = 4
INCREMENTS = 25


def _increment(value: JsonObject | None) -> JsonObject:
    return {"count": (value or {"count": 0})["count"] + 1}


def _increment_many(location: str) -> None:
    # Runs in a spawned process: each process opens its own store, as the engine's pool does.
    store = open_state_store(location)
    assert isinstance(store, SqliteStateStore)
    try:
        for _ in range(INCREMENTS):
            update(store, "counter", "shared", _increment)
    finally:
        store.close()


def test_update_from_several_processes_loses_no_increment(tmp_path: Path) -> None:
    location = str(tmp_path / "state.db")
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        pool.map(_increment_many, [location] * PROCESSES)
    store = open_state_store(location)
    assert isinstance(store, SqliteStateStore)
    try:
        record = store.get("counter", "shared")
        assert record is not None and record.value == {"count": PROCESSES * INCREMENTS}
    finally:
        store.close()


def test_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.sqlite"
    store = open_state_store(f"sqlite://{path}")
    assert isinstance(store, SqliteStateStore)
    store.close()
    assert path.is_file()
