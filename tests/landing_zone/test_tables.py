"""Table folders: every MongoDB collection name gets a usable, distinct, reversible folder name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.landing_zone.tables import (
    FOLDER_NAME_BYTES,
    TableRef,
    collection_folder,
    collection_name,
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
        ("orders", "orders"),
        ("a%2Fb", "a%2Fb"),  # a folder name as status shows it
        ("a/b", "a%2Fb"),  # a collection's own name
        ("\x01" * 90, collection_folder("\x01" * 90)),
        (collection_folder("\x01" * 90), collection_folder("\x01" * 90)),
        ("a" * 200, collection_folder("a" * 200)),  # could name a folder, but is not its folder
    ],
)
def test_a_table_is_named_by_its_folder_or_its_collection(name: str, folder: str):
    assert TableRef.for_name("shop", name) == TableRef("shop", folder)


@given(names, names)
def test_different_collections_never_share_a_folder(first: str, second: str):
    if first != second:
        assert collection_folder(first) != collection_folder(second)
