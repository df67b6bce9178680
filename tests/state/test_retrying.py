"""The retrying state store on Azure Table Storage (Azurite) through the fault proxy: writes whose
answers are lost, and a fault that outlasts STORAGE_RETRY_SECONDS."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from shared.errors import MirrorError
from shared.state import ConflictError, StateStore, open_state_store, update
from shared.state.retrying import RetryingStateStore
from tests.fixtures.azurite import ACCOUNT_KEY
from tests.fixtures.fault_proxy import FaultyAzurite

KIND, KEY = "sequence", "db.orders"


@pytest.fixture
def table_name() -> str:
    return f"retry{uuid.uuid4().hex[:16]}"


@pytest.fixture
def store(faulty_azurite: FaultyAzurite, table_name: str) -> Iterator[StateStore]:
    location = f"{faulty_azurite.connection_string};TableName={table_name}"
    store = RetryingStateStore(open_state_store(location), budget_seconds=30)
    yield store
    store.close()


def entity_path(table_name: str) -> str:
    """Entity requests of one table (inserts are POSTs to the table itself)."""
    return rf"^/devstoreaccount1/{table_name}(\(|\?|$)"


def test_an_insert_whose_answer_is_lost_is_retried_and_meets_its_own_record(
    faulty_azurite: FaultyAzurite, store: StateStore, table_name: str
):
    # The SDK never repeats an insert (POST); without the engine's retry the lost answer
    # would end the step with ServiceResponseError.
    lost = faulty_azurite.table.lose_answers("POST", entity_path(table_name))
    with pytest.raises(ConflictError):
        store.create(KIND, KEY, {"next": 1})
    inserts = [
        r
        for r in faulty_azurite.table.requests
        if r.method == "POST" and re.search(entity_path(table_name), r.target)
    ]
    assert lost.hits == 1 and len(inserts) == 2  # the lost one and its retry
    record = store.get(KIND, KEY)
    assert record is not None and record.value == {"next": 1}


def test_update_rides_out_lost_answers_of_its_insert_and_its_replace(
    faulty_azurite: FaultyAzurite, store: StateStore, table_name: str
):
    """Each write lands and its answer is lost: the retry meets a conflict, and update() finds
    its own operation in the record instead of applying the change a second time."""

    def allocate(value: dict[str, object] | None) -> dict[str, object]:
        return {"next": int(str((value or {}).get("next", 0))) + 1, "pending": []}

    lost_insert = faulty_azurite.table.lose_answers("POST", entity_path(table_name))
    assert update(store, KIND, KEY, allocate).value["next"] == 1
    lost_replace = faulty_azurite.table.lose_answers("PUT", entity_path(table_name))
    assert update(store, KIND, KEY, allocate).value["next"] == 2
    assert (lost_insert.hits, lost_replace.hits) == (1, 1)
    record = store.get(KIND, KEY)
    assert record is not None and record.value["next"] == 2 and record.value["pending"] == []


def test_a_fault_outlasting_the_budget_fails_with_one_line_without_the_key(
    faulty_azurite: FaultyAzurite, table_name: str
):
    location = f"{faulty_azurite.connection_string};TableName={table_name}"
    store = RetryingStateStore(open_state_store(location), budget_seconds=1)
    lost = faulty_azurite.table.lose_answers("POST", entity_path(table_name), times=None)
    try:
        with pytest.raises(MirrorError) as raised:
            store.create(KIND, KEY, {"next": 1})
    finally:
        store.close()
    message = str(raised.value)
    assert message.startswith(
        f"Azure Table Storage table {table_name} at http://127.0.0.1:{faulty_azurite.table.port}"
        f"/devstoreaccount1: creating state record {KIND}/{KEY!r}: ServiceResponseError"
    )
    assert "STORAGE_RETRY_SECONDS=1)" in message and lost.hits >= 2
    assert "\n" not in message and ACCOUNT_KEY not in message and "AccountKey" not in message


def test_a_zero_budget_leaves_retrying_to_the_sdk(faulty_azurite: FaultyAzurite, table_name: str):
    location = f"{faulty_azurite.connection_string};TableName={table_name}"
    store = RetryingStateStore(open_state_store(location), budget_seconds=0)
    lost = faulty_azurite.table.lose_answers("POST", entity_path(table_name))
    try:
        with pytest.raises(MirrorError, match="STORAGE_RETRY_SECONDS=0"):
            store.create(KIND, KEY, {"next": 1})
    finally:
        store.close()
    assert lost.hits == 1
