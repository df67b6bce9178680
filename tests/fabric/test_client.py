"""The Fabric client's protocol handling, against the HTTPS double (Fabric cannot run here).

The credential is a fake (no Entra here); waits are recorded by the transport, not slept.
"""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.fabric import (
    FabricAccessError,
    FabricClient,
    FabricError,
    create_mirrored_database,
    start_mirroring,
)
from shared.fabric.client import RETRIES
from tests.fabric.fake_fabric import ONELAKE_HOST, FakeCredential, FakeFabric, RecordingTransport

WORKSPACE = str(uuid.uuid4())


def test_create_sends_the_open_mirroring_definition_and_waits_out_the_operation(
    fake_fabric: FakeFabric, client: FabricClient, transport: RecordingTransport
):
    fake_fabric.operation_retry_after = "3"
    fake_fabric.operation_polls = 2

    database = create_mirrored_database(client, WORKSPACE, "orders_mirror")

    (item,) = fake_fabric.items.values()
    assert item.mirroring == {
        "properties": {
            "source": {"type": "GenericMirror", "typeProperties": {}},
            "target": {
                "type": "MountedRelationalDatabase",
                "typeProperties": {"defaultSchema": "dbo", "format": "Delta"},
            },
        }
    }
    assert item.display_name == "orders_mirror"
    assert database.item_id == item.item_id
    assert database.display_name == "orders_mirror"
    # Two "Running" polls and the "Succeeded" one, each after the Retry-After it was given.
    assert len(fake_fabric.requests_to(f"/operations/{_operation_id(fake_fabric)}")) == 3
    assert transport.slept == [3.0, 3.0, 3.0]
    assert len(fake_fabric.requests_to("/result")) == 1
    assert database.landing_zone == (f"{ONELAKE_HOST}/{WORKSPACE}/{item.item_id}/Files/LandingZone")
    assert all(r.authorization == "Bearer fake-fabric-token" for r in fake_fabric.requests)


def test_a_create_that_finishes_at_once_needs_no_polling(
    fake_fabric: FakeFabric, client: FabricClient, transport: RecordingTransport
):
    fake_fabric.create_at_once = True
    database = create_mirrored_database(client, WORKSPACE, "orders_mirror")
    assert database.item_id in fake_fabric.items
    assert [r for r in fake_fabric.requests if "/operations/" in r.path] == []
    assert transport.slept == []


def test_a_failed_operation_is_one_line_naming_fabrics_error(
    fake_fabric: FakeFabric, client: FabricClient
):
    fake_fabric.fail_operations = True
    with pytest.raises(FabricError) as failure:
        create_mirrored_database(client, WORKSPACE, "orders_mirror")
    message = str(failure.value)
    assert message == (
        f"create mirrored database 'orders_mirror' in workspace {WORKSPACE} failed: "
        "ItemDisplayNameAlreadyInUse: Name in use"
    )
    assert fake_fabric.requests_to("/result") == []


def test_throttling_is_retried_after_the_time_fabric_asks(
    fake_fabric: FakeFabric, client: FabricClient, transport: RecordingTransport
):
    item_id = fake_fabric.add_item(WORKSPACE, "db", [])
    fake_fabric.items[item_id].status = "Stopped"
    fake_fabric.throttle_next(2, retry_after="7")

    start_mirroring(client, WORKSPACE, item_id)

    assert fake_fabric.items[item_id].status == "Running"
    assert len(fake_fabric.requests_to("/startMirroring")) == 3
    assert transport.slept == [7.0, 7.0]


def test_throttling_beyond_the_retry_budget_is_an_error(
    fake_fabric: FakeFabric, client: FabricClient
):
    item_id = fake_fabric.add_item(WORKSPACE, "db", [])
    fake_fabric.throttle_next(RETRIES + 1, retry_after="1")
    with pytest.raises(FabricError, match=r"HTTP 429 RequestBlocked"):
        start_mirroring(client, WORKSPACE, item_id)
    assert len(fake_fabric.requests_to("/startMirroring")) == RETRIES + 1


def test_a_workspace_without_a_role_says_which_role_to_grant(
    fake_fabric: FakeFabric, client: FabricClient
):
    fake_fabric.denied_workspaces.add(WORKSPACE)
    with pytest.raises(FabricAccessError) as failure:
        create_mirrored_database(client, WORKSPACE, "orders_mirror")
    message = str(failure.value)
    assert "\n" not in message
    assert f"workspace {WORKSPACE}" in message
    assert "HTTP 403 InsufficientPrivileges" in message
    assert "Contributor role (or higher)" in message
    assert "Service principals can use Fabric APIs" in message


def test_an_untrusted_certificate_is_refused(fake_fabric: FakeFabric):
    # The transport's default verifies TLS against the system's CAs, which never include the
    # double's self-signed certificate; its connection retries are recorded, not slept.
    with FabricClient(fake_fabric.api_url, FakeCredential(), transport=RecordingTransport()) as c:
        with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            c.call("GET", f"workspaces/{WORKSPACE}/mirroredDatabases/x", what="read")
    assert fake_fabric.requests == []


def _operation_id(fake: FakeFabric) -> str:
    (operation_id,) = {r.path.split("/")[3] for r in fake.requests if "/operations/" in r.path}
    return operation_id
