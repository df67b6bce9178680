"""SQLite-only behaviour: one file shared by several real processes."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.errors import ConfigError, MirrorError
from shared.state import CorruptStateError, JsonObject, SqliteStateStore, open_state_store, update

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
        assert record is not None and record.value["count"] == PROCESSES * INCREMENTS
    finally:
        store.close()


def test_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.sqlite"
    store = open_state_store(f"sqlite://{path}")
    assert isinstance(store, SqliteStateStore)
    store.close()
    assert path.is_file()


def _filled(path: Path, records: int = 300) -> bytes:
    """A valid state file of several pages; returns its bytes (closed, so no WAL is pending)."""
    store = SqliteStateStore(path)
    for index in range(records):
        store.create("sequence", f"shop.schema/t{index:03d}", {"next": index, "pad": "x" * 200})
    store.close()
    return path.read_bytes()


def _opening_error(path: Path) -> MirrorError:
    with pytest.raises(MirrorError) as caught:
        SqliteStateStore(path)
    return caught.value


def test_a_garbage_file_is_named_on_open_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    garbage = b"not a database at all\n" * 300
    path.write_bytes(garbage)
    error = _opening_error(path)
    assert isinstance(error, CorruptStateError)
    assert str(error).startswith(f"state store SQLite file {path} is damaged")
    assert "restore the file from a backup" in str(error)
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_one_damaged_page_is_found_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    data = bytearray(_filled(path))
    page = 4096
    data[2 * page + 8 : 2 * page + 40] = bytes(32)  # a b-tree page's cell pointers zeroed
    path.write_bytes(data)
    error = _opening_error(path)
    assert isinstance(error, CorruptStateError)
    assert str(error).startswith(f"state store SQLite file {path} is damaged")
    assert "\n" not in str(error)


@pytest.mark.parametrize(("damage", "problem"), [(b"\xff\xfe", "utf-8"), (b"}}", "is corrupt: ")])
def test_a_record_that_is_not_json_text_is_found_on_open_not_on_every_read(
    tmp_path: Path, damage: bytes, problem: str
) -> None:
    path = tmp_path / "state.db"
    data = bytearray(_filled(path))
    at = data.index(b'"next":150')  # inside one record's value: the page structure stays sound
    data[at : at + len(damage)] = damage
    path.write_bytes(data)
    error = _opening_error(path)
    assert isinstance(error, CorruptStateError)
    assert "state record sequence/'shop.schema/t150'" in str(error)
    assert str(path) in str(error)
    assert problem in str(error)


def test_another_programs_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
    before = path.read_bytes()
    error = _opening_error(path)
    assert isinstance(error, ConfigError) and error.setting == "STATE_STORE"
    assert "another program's SQLite database (tables users)" in str(error)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("make", "where", "problem"),
    [
        (lambda root: (root / "state.db").mkdir(), "state.db", "is a folder, not a SQLite file"),
        (lambda root: (root / "f").write_text("x"), "f/state.db", "is inside"),
        (lambda root: (root / "f").write_text("x"), "f/a/state.db", "is inside"),
    ],
)
def test_a_path_that_cannot_be_a_state_file_names_the_setting(
    tmp_path: Path, make: Callable[[Path], None], where: str, problem: str
) -> None:
    make(tmp_path)
    error = _opening_error(tmp_path / where)
    assert isinstance(error, ConfigError) and error.setting == "STATE_STORE"
    assert problem in str(error)
