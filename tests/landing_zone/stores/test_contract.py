"""The landing-zone store contract, run unchanged against every store (see conftest.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from shared.landing_zone.stores import (
    LandingZoneStore,
    PathExistsError,
    PathNotFoundError,
    StoredFile,
)
from shared.landing_zone.stores._common import InvalidPathError

TABLE = "sales.schema/orders"
FIRST = f"{TABLE}/00000000000000000001.parquet"


def test_write_read_size_and_replace(store: LandingZoneStore) -> None:
    store.write(f"{TABLE}/_metadata.json", b'{"keyColumns": ["_id"]}')
    assert store.read(f"{TABLE}/_metadata.json") == b'{"keyColumns": ["_id"]}'
    assert store.size(f"{TABLE}/_metadata.json") == 23

    store.write(f"{TABLE}/_metadata.json", b"{}")
    assert store.read(f"{TABLE}/_metadata.json") == b"{}"
    assert store.list_files(TABLE) == [StoredFile(f"{TABLE}/_metadata.json", 2)]


def test_missing_paths(store: LandingZoneStore) -> None:
    assert store.size("nowhere/file") is None
    with pytest.raises(PathNotFoundError):
        store.read("nowhere/file")
    assert store.list_files("nowhere") == []
    assert store.list_folders("nowhere") == []
    store.delete("nowhere/file")
    store.delete_folder("nowhere")


def test_empty_file(store: LandingZoneStore) -> None:
    store.write_new("t/_empty", b"")
    assert store.read("t/_empty") == b""
    assert store.size("t/_empty") == 0


def test_listing_is_direct_children_sorted(store: LandingZoneStore) -> None:
    for path in ["b/2", "b/1", "b/c/3", "b/a/deep/4", "top", "bb/5"]:
        store.write(path, path.encode())

    assert store.list_files("") == [StoredFile("top", 3)]
    assert store.list_folders("") == ["b", "bb"]
    assert store.list_files("b") == [StoredFile("b/1", 3), StoredFile("b/2", 3)]
    assert store.list_files("b/") == store.list_files("b")
    assert store.list_folders("b") == ["b/a", "b/c"]
    assert store.list_folders("b/a") == ["b/a/deep"]


def test_delete_and_delete_folder(store: LandingZoneStore) -> None:
    for path in ["t/a/1", "t/a/sub/2", "t/ab/3", "u/4"]:
        store.write(path, b"x")

    store.delete("t/a/1")
    assert store.size("t/a/1") is None
    # A sibling sharing the name prefix ("ab" vs "a") survives: folders are not string prefixes.
    store.delete_folder("t/a")
    assert store.list_folders("t") == ["t/ab"]
    assert store.read("t/ab/3") == b"x"

    store.delete_folder("")
    assert store.list_files("") == []
    assert store.list_folders("") == []
    store.write("again", b"y")  # the root stays usable
    assert store.read("again") == b"y"


def test_write_new_never_overwrites(store: LandingZoneStore) -> None:
    store.write_new(FIRST, b"original")
    with pytest.raises(PathExistsError):
        store.write_new(FIRST, b"replacement")
    assert store.read(FIRST) == b"original"
    # Nothing left behind: no staging file from either attempt.
    assert store.list_files(TABLE) == [StoredFile(FIRST, 8)]


def test_rename_new(store: LandingZoneStore) -> None:
    store.write(f"{TABLE}/_staged.parquet", b"data")
    store.rename_new(f"{TABLE}/_staged.parquet", FIRST)
    assert store.read(FIRST) == b"data"
    assert store.size(f"{TABLE}/_staged.parquet") is None
    assert store.list_files(TABLE) == [StoredFile(FIRST, 4)]


def test_rename_new_into_a_new_folder(store: LandingZoneStore) -> None:
    store.write("_scratchPad/batch-7", b"data")
    store.rename_new("_scratchPad/batch-7", FIRST)
    assert store.read(FIRST) == b"data"
    assert store.list_files("_scratchPad") == []


def test_rename_new_refuses_to_overwrite(store: LandingZoneStore) -> None:
    store.write_new(FIRST, b"published")
    store.write(f"{TABLE}/_staged", b"other")
    with pytest.raises(PathExistsError):
        store.rename_new(f"{TABLE}/_staged", FIRST)
    assert store.read(FIRST) == b"published"
    assert store.read(f"{TABLE}/_staged") == b"other"


def test_rename_new_missing_source(store: LandingZoneStore) -> None:
    with pytest.raises(PathNotFoundError):
        store.rename_new(f"{TABLE}/_absent", FIRST)
    assert store.size(FIRST) is None


def _race(count: int, attempt: Callable[[int], None]) -> tuple[list[int], list[BaseException]]:
    """Run ``attempt(i)`` in ``count`` threads released together; (winners, failures)."""
    barrier = threading.Barrier(count)
    winners: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        barrier.wait()
        try:
            attempt(index)
        except BaseException as error:
            with lock:
                failures.append(error)
        else:
            with lock:
                winners.append(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners, failures


def test_racing_write_new_exactly_one_wins(store: LandingZoneStore) -> None:
    winners, failures = _race(6, lambda i: store.write_new(FIRST, f"writer {i}".encode()))
    assert len(winners) == 1
    assert all(isinstance(error, PathExistsError) for error in failures), failures
    assert store.read(FIRST) == f"writer {winners[0]}".encode()
    assert store.list_files(TABLE) == [StoredFile(FIRST, len(f"writer {winners[0]}"))]


def test_racing_rename_new_exactly_one_wins(store: LandingZoneStore) -> None:
    for i in range(6):
        store.write(f"{TABLE}/_staged-{i}", f"writer {i}".encode())
    winners, failures = _race(6, lambda i: store.rename_new(f"{TABLE}/_staged-{i}", FIRST))
    assert len(winners) == 1
    assert all(isinstance(error, PathExistsError) for error in failures), failures
    assert store.read(FIRST) == f"writer {winners[0]}".encode()
    losers = {i for i in range(6)} - set(winners)
    assert {f.path for f in store.list_files(TABLE)} == {FIRST} | {
        f"{TABLE}/_staged-{i}" for i in losers
    }


def test_large_file_round_trip(store: LandingZoneStore) -> None:
    data = os.urandom(20 * 1024 * 1024)
    store.write_new(f"{TABLE}/_big", data)
    store.rename_new(f"{TABLE}/_big", FIRST)
    assert store.size(FIRST) == len(data)
    assert store.read(FIRST) == data


@pytest.mark.parametrize(
    "path",
    [
        "with space/file name.parquet",
        "ünïcödé.schema/名前/données 1.parquet",
        "_scratchPad/_partial",
        "db.schema/coll/_metadata.json",
        "_partnerEvents.json",
        "percent%20and+plus.schema/c%41/f%.parquet",
    ],
)
def test_awkward_names(store: LandingZoneStore, path: str) -> None:
    store.write_new(path, b"x")
    folder = path.rpartition("/")[0]
    assert store.read(path) == b"x"
    assert store.list_files(folder) == [StoredFile(path, 1)]
    if folder:
        assert store.list_folders(folder.rpartition("/")[0]) == [folder]
    target = f"{folder}/renamed é" if folder else "renamed é"
    store.rename_new(path, target)
    assert store.read(target) == b"x"


@pytest.mark.parametrize("path", ["../escape", "a/../../b", "/absolute", "a//b", "./a", "a\\b"])
def test_paths_cannot_escape_the_root(store: LandingZoneStore, path: str) -> None:
    with pytest.raises(InvalidPathError):
        store.write(path, b"x")
    with pytest.raises(InvalidPathError):
        store.read(path)
    with pytest.raises(InvalidPathError):
        store.list_files(path)


def test_description_names_the_place_without_secrets(store: LandingZoneStore) -> None:
    description = store.description
    assert description
    for secret in ("AccountKey", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1", "sig=", "Bearer"):
        assert secret not in description


def test_delete_unchanged_spares_a_file_replaced_since_it_was_listed(
    store: LandingZoneStore,
) -> None:
    """A fenced rebuild deletes what it listed; a newer writer's file of the same name stays."""
    store.write_new("t/kept", b"old")
    store.write_new("t/gone", b"old")
    listed = {file.path: file for file in store.list_files("t")}
    assert all(file.version for file in listed.values())
    store.delete("t/kept")
    store.write_new("t/kept", b"new generation")

    assert store.delete_unchanged(listed["t/gone"]) is True
    assert store.delete_unchanged(listed["t/kept"]) is False
    assert store.delete_unchanged(listed["t/gone"]) is False  # already gone
    assert store.read("t/kept") == b"new generation"
    assert store.size("t/gone") is None


def test_delete_empty_folder_only_when_empty(store: LandingZoneStore) -> None:
    store.write_new("t/inner/file", b"x")
    store.delete_empty_folder("t/inner")
    assert store.read("t/inner/file") == b"x"
    store.delete("t/inner/file")
    store.delete_empty_folder("t/inner")
    store.delete_empty_folder("t")
    assert store.list_folders("") == []
    store.delete_empty_folder("missing")
