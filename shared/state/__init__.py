"""Durable engine state: JSON records with ETag compare-and-swap, in Table Storage or SQLite.

``open_state_store(settings.STATE_STORE, credential)`` is the one way in; see ``location`` for
the accepted forms.
"""

from __future__ import annotations

from azure.core.credentials import TokenCredential

from shared.state.base import ConflictError, JsonObject, Record, StateStore, update
from shared.state.codec import MAX_VALUE_BYTES, CorruptStateError
from shared.state.location import StateLocation, parse_state_location
from shared.state.sqlite import SqliteStateStore
from shared.state.table_storage import TableStateStore

__all__ = [
    "MAX_VALUE_BYTES",
    "ConflictError",
    "CorruptStateError",
    "JsonObject",
    "Record",
    "SqliteStateStore",
    "StateLocation",
    "StateStore",
    "TableStateStore",
    "open_state_store",
    "parse_state_location",
    "update",
]


def open_state_store(location: str, credential: TokenCredential | None = None) -> StateStore:
    """Open the store named by ``location``, creating its file or table if missing.

    ``credential`` authenticates account URLs; without one, DefaultAzureCredential is used.
    Connection strings and Azurite URLs carry their own authentication.
    """
    parsed = parse_state_location(location)
    if parsed.kind == "sqlite":
        assert parsed.path is not None
        return SqliteStateStore(parsed.path)
    assert parsed.table_name is not None and parsed.endpoint is not None
    if parsed.connection_string is not None:
        return TableStateStore.from_connection_string(
            parsed.connection_string, parsed.table_name, parsed.description
        )
    if credential is None:
        # Imported here: azure-identity is heavy and only account URLs need it.
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return TableStateStore.from_endpoint(
        parsed.endpoint, parsed.table_name, credential, parsed.description
    )
