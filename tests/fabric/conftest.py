"""A fresh Fabric REST double per test (Fabric cannot run here), and a client trusting it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.fabric import FabricClient
from tests.fabric.fake_fabric import (
    FakeCredential,
    FakeFabric,
    RecordingTransport,
    running_fake_fabric,
)


@pytest.fixture
def fake_fabric() -> Iterator[FakeFabric]:
    with running_fake_fabric() as fake:
        yield fake


@pytest.fixture
def transport(fake_fabric: FakeFabric) -> RecordingTransport:
    return RecordingTransport(connection_verify=fake_fabric.ca_path)


@pytest.fixture
def client(fake_fabric: FakeFabric, transport: RecordingTransport) -> Iterator[FabricClient]:
    with FabricClient(fake_fabric.api_url, FakeCredential(), transport=transport) as fabric:
        yield fabric
