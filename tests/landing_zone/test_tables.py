"""Table folders: every MongoDB collection name gets a usable, distinct, reversible folder name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import MirrorError
from shared.landing_zone.tables import (
    FOLDER_NAME_BYTES,
    TableRef,
    collection_folder,
    collection_name,
    table_for_name,
)


@pytest.mark.parametrize(
    ("collection", "folder"),
    [
        ("orders", "orders"),
        ("a_b", "a_b"),
        ("50%off", "50%off"),
        ("a/b", "a%2Fb"),
        ("c\\d", "c%5Cd"),
        ("_tmp", "%5Ftmp"),
        ("tab\there", "tab%09here"),
        ("a%2Fb", "a%252Fb"),  # a real name that looks escaped cannot collide with "a/b"
    ],
)
def test_collection_folder_names(collection: str, folder: str):
    assert collection_folder(collection) == folder
    assert TableRef.for_collection("shop", collection).folder == f"shop.schema/{folder}"
    assert collection_name(folder) == collection


# Names built from the characters that matter: separators, escapes, hex digits, "_" and ".",
# a character of three UTF-8 bytes; short ones, and long ones that must be hashed to fit.
names = st.text(alphabet="ab/\\%_.2Fc\x01~7E€", min_size=1, max_size=12) | st.text(
    alphabet="a%2F\x01~7E€", min_size=30, max_size=250
)


@given(names)
def test_every_collection_name_gets_a_usable_reversible_folder(collection: str):
    folder = collection_folder(collection)
    TableRef("shop", folder)  # raises if the name cannot name a folder
    assert len(folder.encode()) <= FOLDER_NAME_BYTES
    assert collection_name(folder, ["other", collection]) == collection
    decoded = collection_name(folder)  # from the name alone: exact, or None for a hashed one
    assert decoded == collection or (decoded is None and folder != collection)


def test_a_name_too_long_for_a_folder_keeps_a_readable_prefix_and_a_hash():
    collection = "\x01" * 90  # escaped, 270 bytes: more than a folder name may hold (255)
    folder = collection_folder(collection)
    assert folder.startswith("%01" * 33 + "%7E") and len(folder) == 99 + 3 + 24
    assert collection_folder("\x01" * 91) != folder  # the same prefix, another hash
    assert collection_name(folder) is None  # a hashed name is found only by mapping forward
    assert collection_name(folder, ["orders", collection]) == collection
    long_plain = "a" * (FOLDER_NAME_BYTES + 1)
    assert collection_folder(long_plain) != long_plain
    # Names the mirror never writes are no collection's folder.
    assert collection_name(long_plain) is None
    assert collection_name("%41") is None


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("shop.orders", "orders"),
        ("shop.a/b", "a%2Fb"),  # a collection's own name
        ("shop._tmp", "%5Ftmp"),
        ("shop.%5Ftmp", "%255Ftmp"),  # the collection literally named so, never a folder name
        ("shop.a%2Fb", "a%252Fb"),
        ("shop.fs.chunks", "fs.chunks"),  # the first dot ends the database
        ("shop." + "\x01" * 90, collection_folder("\x01" * 90)),
        ("shop." + "a" * 200, collection_folder("a" * 200)),
    ],
)
def test_a_user_names_a_table_by_its_collection_never_its_folder(name: str, folder: str):
    assert table_for_name(name) == TableRef("shop", folder)


@pytest.mark.parametrize(
    ("folder", "label", "argument"),
    [
        ("orders", "shop.orders", "shop.orders"),
        ("%5Ftmp", "shop._tmp (folder %5Ftmp)", "shop._tmp"),
        ("a%2Fb c", "shop.a/b c (folder a%2Fb c)", "'shop.a/b c'"),
        ("tab%09x", "shop.'tab\\tx' (folder tab%09x)", "'shop.tab\tx'"),
    ],
)
def test_a_table_is_shown_and_suggested_by_its_collection(folder: str, label: str, argument: str):
    table = TableRef("shop", folder)
    assert table.label == label
    assert table.command_name == argument
    assert table_for_name(f"shop.{table.collection}") == table


def test_a_hashed_folder_is_shown_as_it_is_and_asks_for_the_collection():
    folder = collection_folder("\x01" * 90)
    table = TableRef("shop", folder)
    assert table.collection is None and table.label == f"shop.{folder}"
    long_name = "\x01" * 90
    assert table.label_for(long_name) == f"shop.{long_name!r} (folder {folder})"
    assert table.command_name == f"shop.<the collection of folder {folder}>"


@pytest.mark.parametrize("name", ["orders", ".orders", "shop.", ""])
def test_a_table_name_without_database_and_collection_is_refused(name: str):
    with pytest.raises(MirrorError, match=r"must be <database>\.<collection>"):
        table_for_name(name)


@given(names, names)
def test_different_collections_never_share_a_folder(first: str, second: str):
    if first != second:
        assert collection_folder(first) != collection_folder(second)
