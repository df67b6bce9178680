"""One ``store`` fixture, parametrised over every landing-zone store, each in a fresh place.

- local: a temporary folder.
- blob: a fresh container in the session's Azurite, opened from a connection string.
- dfs: the DFS store against ``fake_dfs.FakeDfs`` (an HTTP test double: no DFS endpoint can run
  here), in a fresh file system laid out like OneLake (``<item>/Files/LandingZone``).
- onelake: the DFS store against real OneLake when ``ONELAKE_TEST_URL`` (a landing-zone URL)
  and DefaultAzureCredential's environment are set; skipped otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.landing_zone.stores import (
    LandingZoneStore,
    OneLakeStore,
    open_landing_zone,
)
from tests.fixtures.azurite import Azurite
from tests.landing_zone.stores.fake_dfs import FakeCredential, FakeDfs, running_fake_dfs

ONELAKE_URL = os.environ.get("ONELAKE_TEST_URL", "")
DFS_BASE = "item-0000/Files/LandingZone"


@pytest.fixture(scope="session")
def fake_dfs() -> Iterator[FakeDfs]:
    with running_fake_dfs() as fake:
        yield fake


def open_fake_dfs_store(
    fake: FakeDfs, file_system: str, base: str = DFS_BASE, **options: Any
) -> OneLakeStore:
    # retry_total=0 unless a test says otherwise: the double never fails transiently, and a
    # wrong status must fail fast.
    settings = {"create_file_system": True, "retry_total": 0, **options}
    return OneLakeStore.connect(
        fake.url, file_system, base, FakeCredential(), connection_verify=fake.ca_path, **settings
    )


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "blob", "dfs", "onelake"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LandingZoneStore]:
    kind = request.param
    if kind == "local":
        yield open_landing_zone(str(tmp_path / "landing zone"))
    elif kind == "blob":
        azurite: Azurite = request.getfixturevalue("azurite")
        location = f"{azurite.connection_string}Container={_unique('lz-')};Path=item/LandingZone"
        yield open_landing_zone(location)
    elif kind == "dfs":
        yield open_fake_dfs_store(request.getfixturevalue("fake_dfs"), _unique("ws-"))
    else:
        yield from _real_onelake()


def _real_onelake() -> Iterator[LandingZoneStore]:
    if not ONELAKE_URL:
        pytest.skip(
            "real OneLake: set ONELAKE_TEST_URL to a landing-zone URL and the "
            "DefaultAzureCredential environment (e.g. AZURE_CLIENT_ID/SECRET/TENANT_ID)"
        )
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    # A "_" folder: Fabric's replicator ignores it, so tests never create mirrored tables.
    folder = _unique("_contract-tests-")
    yield open_landing_zone(f"{ONELAKE_URL.rstrip('/')}/{folder}", credential)
    open_landing_zone(ONELAKE_URL, credential).delete_folder(folder)
