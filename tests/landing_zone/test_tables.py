"""Table folders: every MongoDB collection name gets a usable, distinct, reversible folder name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.landing_zone.tables import TableRef, collection_folder, collection_name


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


# Names built from the characters that matter: separators, escapes, hex digits, "_" and ".".
names = st.text(alphabet="ab/\\%_.2Fc\x01", min_size=1, max_size=12)


@given(names)
def test_every_collection_name_gets_a_usable_reversible_folder(collection: str):
    folder = collection_folder(collection)
    TableRef("shop", folder)  # raises if the name cannot name a folder
    assert collection_name(folder) == collection


@given(names, names)
def test_different_collections_never_share_a_folder(first: str, second: str):
    if first != second:
        assert collection_folder(first) != collection_folder(second)
