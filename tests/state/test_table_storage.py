"""Table-Storage-only behaviour: entity layout, and errors that must not read as "absent"."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from shared.state import CorruptStateError, TableStateStore, open_state_store
from shared.state.codec import encode_row_key
from tests.fixtures.azurite import Azurite


def _open(location: str) -> TableStateStore:
    store = open_state_store(location)
    assert isinstance(store, TableStateStore)
    return store


def test_azurite_url_form_opens_and_creates_the_table(azurite: Azurite) -> None:
    store = _open(f"{azurite.table_endpoint}/urlform1")
    try:
        store.create("plan", "k", {"n": 1})
        assert "urlform1" in store.description
        # A second instance on the same table is fine (the table already exists).
        again = _open(f"{azurite.table_endpoint}/urlform1")
        assert again.get("plan", "k") is not None
        again.close()
    finally:
        store.close()


def test_large_values_are_split_into_64_kib_binary_properties(azurite: Azurite) -> None:
    store = _open(f"{azurite.table_endpoint}/layout1")
    try:
        store.create("schema", "a/b", {"text": "x" * 200_000})
    finally:
        store.close()
    with TableClient.from_connection_string(azurite.connection_string, "layout1") as table:
        entity = table.get_entity("schema", encode_row_key("a/b"))
    assert entity["RowKey"] == "a%2Fb"
    assert entity["json_chunks"] == 4
    assert all(len(entity[f"json_{index}"]) <= 64 * 1024 for index in range(4))


def test_missing_chunk_is_corruption_not_absence(azurite: Azurite) -> None:
    store = _open(f"{azurite.table_endpoint}/layout2")
    try:
        with TableClient.from_connection_string(azurite.connection_string, "layout2") as table:
            table.upsert_entity(
                {"PartitionKey": "plan", "RowKey": "k", "json_chunks": 2, "json_0": b"{}"}
            )
        with pytest.raises(CorruptStateError, match="json_1"):
            store.get("plan", "k")
    finally:
        store.close()


def test_a_missing_table_raises_instead_of_reading_as_absent(azurite: Azurite) -> None:
    store = _open(f"{azurite.table_endpoint}/dropped1")
    try:
        with TableClient.from_connection_string(azurite.connection_string, "dropped1") as table:
            table.delete_table()
        with pytest.raises(ResourceNotFoundError):
            store.get("plan", "k")
    finally:
        store.close()
