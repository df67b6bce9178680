"""The retrying landing-zone store on Azure Blob (Azurite) through the fault proxy: writes and
renames whose answers are lost are recognised as done by their bytes, error statuses are ridden
out, and a fault that outlasts STORAGE_RETRY_SECONDS fails with one line."""

from __future__ import annotations

import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from shared.errors import MirrorError
from shared.landing_zone.stores import LandingZoneStore, PathExistsError, open_landing_zone
from shared.landing_zone.stores.retrying import RetryingStore
from tests.fixtures.azurite import ACCOUNT_KEY
from tests.fixtures.fault_proxy import FaultyAzurite, Request

BASE = "item/LandingZone"
FILE = "db.schema/orders/00000000000000000001.parquet"
STAGED = "db.schema/orders/_staging-1.parquet"


@pytest.fixture
def container() -> str:
    return f"retry{uuid.uuid4().hex[:12]}"


def open_store(faulty_azurite: FaultyAzurite, container: str, budget: float) -> LandingZoneStore:
    location = f"{faulty_azurite.connection_string}Container={container};Path={BASE}"
    return RetryingStore(open_landing_zone(location), budget)


@pytest.fixture
def store(faulty_azurite: FaultyAzurite, container: str) -> LandingZoneStore:
    return open_store(faulty_azurite, container, budget=30)


def blob_path(path: str) -> str:
    return rf"/{BASE}/{path}$"


def test_write_new_whose_answer_is_lost_is_recognised_as_done(
    faulty_azurite: FaultyAzurite, store: LandingZoneStore
):
    lost = faulty_azurite.blob.lose_answers("PUT", blob_path(FILE))
    store.write_new(FILE, b"parquet bytes")
    assert lost.hits == 1
    assert store.read(FILE) == b"parquet bytes"
    with pytest.raises(PathExistsError):  # a first attempt that meets a file still reports it
        store.write_new(FILE, b"parquet bytes")


def test_write_new_retried_onto_another_writers_file_reports_it(
    faulty_azurite: FaultyAzurite, store: LandingZoneStore, container: str
):
    rival = BlobServiceClient.from_connection_string(
        faulty_azurite.azurite.connection_string
    ).get_container_client(container)

    def rival_writes_first(request: Request) -> bool:
        # Another writer publishes the same name while this write's attempt fails.
        rival.upload_blob(f"{BASE}/{FILE}", b"the rival's bytes")
        return True

    busy = faulty_azurite.blob.answer_status(503, "PUT", blob_path(FILE), when=rival_writes_first)
    with pytest.raises(PathExistsError):
        store.write_new(FILE, b"parquet bytes")
    assert busy.hits == 1 and store.read(FILE) == b"the rival's bytes"


def test_rename_new_whose_copy_answer_is_lost_is_recognised_as_done(
    faulty_azurite: FaultyAzurite, store: LandingZoneStore
):
    # On Blob a rename is a read, a conditional Put of the target, and a delete of the source:
    # here the Put lands, its answer is lost, and the retry's Put meets the target.
    store.write(STAGED, b"staged bytes")
    lost = faulty_azurite.blob.lose_answers("PUT", blob_path(FILE))
    store.rename_new(STAGED, FILE)
    assert lost.hits == 1
    assert store.read(FILE) == b"staged bytes"
    assert store.size(STAGED) is None
    assert [file.path for file in store.list_files("db.schema/orders")] == [FILE]


def test_a_rename_whose_source_was_read_then_lost_its_delete_answer_is_done(
    faulty_azurite: FaultyAzurite, store: LandingZoneStore
):
    # The first attempt fails before anything moved (the source is read again on the retry);
    # the retry's delete of the source lands but its answer is lost; the third attempt finds
    # the source gone and the target holding its bytes.
    store.write(STAGED, b"staged bytes")
    busy = faulty_azurite.blob.answer_status(503, "GET", blob_path(STAGED))
    lost = faulty_azurite.blob.lose_answers("DELETE", blob_path(STAGED))
    store.rename_new(STAGED, FILE)
    assert (busy.hits, lost.hits) == (1, 1)
    assert store.read(FILE) == b"staged bytes" and store.size(STAGED) is None


def test_error_statuses_are_ridden_out(faulty_azurite: FaultyAzurite, store: LandingZoneStore):
    faults = [
        faulty_azurite.blob.answer_status(status, "PUT", blob_path(STAGED)) for status in (500, 503)
    ]
    faults.append(faulty_azurite.blob.answer_status(429, "GET", r"comp=list"))
    store.write(STAGED, b"staged")
    assert [file.path for file in store.list_files("db.schema/orders")] == [STAGED]
    assert [fault.hits for fault in faults] == [1, 1, 1]


def test_a_fault_outlasting_the_budget_fails_with_one_line_without_the_key(
    faulty_azurite: FaultyAzurite, container: str
):
    store = open_store(faulty_azurite, container, budget=1)
    busy = faulty_azurite.blob.answer_status(503, "PUT", blob_path(FILE), times=None)
    with pytest.raises(MirrorError) as raised:
        store.write_new(FILE, b"parquet bytes")
    message = str(raised.value)
    assert message.startswith(
        f"blob container http://127.0.0.1:{faulty_azurite.blob.port}/devstoreaccount1/"
        f"{container}/{BASE}: writing {FILE}: HttpResponseError (HTTP 503): Service Unavailable "
        "(still failing after "
    )
    assert message.endswith("STORAGE_RETRY_SECONDS=1)") and busy.hits >= 2
    assert "\n" not in message and ACCOUNT_KEY not in message
