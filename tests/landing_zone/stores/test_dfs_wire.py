"""What the DFS store sends on the wire, checked against the recording DFS test double.

``fake_dfs.FakeDfs`` is a test double of the ADLS Gen2 REST API (no DFS endpoint can run here:
Azurite has none, OneLake is out of reach). These tests pin the requests that make publishing
safe on OneLake: the final name appears only through a conditional rename, laid out exactly as
Microsoft's open-mirroring sample sends it (``PUT <target>?mode=legacy`` with
``x-ms-rename-source: /<workspace>/<item>/Files/LandingZone/...``).
"""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.landing_zone.stores import StoredFile, parse_landing_zone
from shared.landing_zone.stores.onelake import ConditionIgnored
from shared.landing_zone.stores.retrying import RetryingStore
from tests.landing_zone.stores.conftest import DFS_BASE, open_fake_dfs_store
from tests.landing_zone.stores.fake_dfs import FakeDfs, Recorded

TARGET = "db.schema/coll/00000000000000000001.parquet"
ONELAKE_PATH = "ws/item/Files/LandingZone"


def _workspace() -> str:
    return f"ws-{uuid.uuid4().hex[:12]}"


def _full(workspace: str, path: str) -> str:
    return f"/{workspace}/{DFS_BASE}/{path}"


def _renames(requests: list[Recorded]) -> list[Recorded]:
    return [r for r in requests if r.method == "PUT" and "x-ms-rename-source" in r.headers]


def test_write_new_publishes_only_by_conditional_rename(fake_dfs: FakeDfs) -> None:
    workspace = _workspace()
    open_fake_dfs_store(fake_dfs, workspace).write_new(TARGET, b"parquet bytes")

    requests = fake_dfs.requests_for(workspace)
    final = _full(workspace, TARGET)
    (rename,) = _renames(requests)
    # Before the rename nothing touched the final name: no 0-byte create, no append, no flush.
    assert all(r.path != final for r in requests[: requests.index(rename)])
    assert rename.path == final
    assert rename.query == {"mode": "legacy"}
    assert rename.headers["if-none-match"] == "*"

    staged = rename.headers["x-ms-rename-source"]
    folder, _, name = staged.rpartition("/")
    assert folder == _full(workspace, "db.schema/coll")
    assert name.startswith("_")  # ignored by Fabric's replicator while it exists
    steps = [(r.method, r.query.get("resource") or r.query.get("action")) for r in requests]
    writes = [step for r, step in zip(requests, steps, strict=True) if r.path == staged]
    assert writes == [("PUT", "file"), ("PATCH", "append"), ("PATCH", "flush")]
    flush = next(r for r in requests if r.path == staged and r.query.get("action") == "flush")
    assert flush.query["position"] == str(len(b"parquet bytes"))


def test_write_replaces_by_unconditional_rename(fake_dfs: FakeDfs) -> None:
    workspace = _workspace()
    store = open_fake_dfs_store(fake_dfs, workspace)
    store.write("db.schema/coll/_metadata.json", b"{}")
    store.write("db.schema/coll/_metadata.json", b'{"keyColumns": ["_id"]}')

    renames = _renames(fake_dfs.requests_for(workspace))
    assert [r.path for r in renames] == [_full(workspace, "db.schema/coll/_metadata.json")] * 2
    assert all("if-none-match" not in r.headers for r in renames)
    assert store.read("db.schema/coll/_metadata.json") == b'{"keyColumns": ["_id"]}'


def test_rename_new_is_one_conditional_rename(fake_dfs: FakeDfs) -> None:
    workspace = _workspace()
    store = open_fake_dfs_store(fake_dfs, workspace)
    store.write("db.schema/coll/_staged", b"x")
    before = len(fake_dfs.requests_for(workspace))
    store.rename_new("db.schema/coll/_staged", TARGET)

    (rename,) = fake_dfs.requests_for(workspace)[before:]
    assert rename.path == _full(workspace, TARGET)
    assert rename.query == {"mode": "legacy"}
    assert rename.headers["x-ms-rename-source"] == _full(workspace, "db.schema/coll/_staged")
    assert rename.headers["if-none-match"] == "*"
    assert rename.headers["authorization"].startswith("Bearer ")


def test_rename_new_across_folders_creates_the_parent_only_if_absent(fake_dfs: FakeDfs) -> None:
    workspace = _workspace()
    store = open_fake_dfs_store(fake_dfs, workspace)
    store.write("_scratchPad/batch", b"x")
    before = len(fake_dfs.requests_for(workspace))
    store.rename_new("_scratchPad/batch", TARGET)

    create, rename = fake_dfs.requests_for(workspace)[before:]
    assert create.path == _full(workspace, "db.schema/coll")
    assert create.query == {"resource": "directory"}
    assert create.headers["if-none-match"] == "*"
    assert rename.path == _full(workspace, TARGET)


def test_onelake_workspace_is_never_created(fake_dfs: FakeDfs) -> None:
    # On OneLake the file system is the workspace: it exists or the setting is wrong.
    workspace = _workspace()
    store = open_fake_dfs_store(fake_dfs, workspace, create_file_system=False)
    with pytest.raises(ResourceNotFoundError):
        store.write_new(TARGET, b"x")
    assert not any(r.query.get("restype") == "container" for r in fake_dfs.requests_for(workspace))
    assert parse_landing_zone(f"https://onelake.dfs.fabric.microsoft.com/{ONELAKE_PATH}").is_onelake


def test_write_new_survives_a_lost_rename_response(fake_dfs: FakeDfs) -> None:
    # The rename happens but its response is lost; the engine retries the whole write, whose
    # conditional rename finds the file published: our own bytes, so our own success.
    workspace = _workspace()
    store = RetryingStore(open_fake_dfs_store(fake_dfs, workspace), budget_seconds=30)
    fake_dfs.drop_next_response(
        lambda r: r.path.startswith(f"/{workspace}/") and "x-ms-rename-source" in r.headers
    )
    store.write_new(TARGET, b"published once")

    assert len(_renames(fake_dfs.requests_for(workspace))) == 2
    assert store.read(TARGET) == b"published once"
    assert store.list_files("db.schema/coll") == [StoredFile(TARGET, 14)]


# --- OneLake ignoring a condition ---------------------------------------------------------------
# OneLake ignores the request headers of actions it does not allow, carries out the rest of the
# call and names them in x-ms-rejected-headers ("OneLake and ADLS Gen2 API parity", Microsoft
# Learn). A conditional publish whose condition was ignored must stop the mirror, not go on.


def test_an_ignored_if_none_match_on_the_rename_fails_loudly_and_stops_later_publishes(
    fake_dfs: FakeDfs,
) -> None:
    workspace = _workspace()
    store = open_fake_dfs_store(fake_dfs, workspace)
    store.write_new(TARGET, b"first")  # honoured: published
    fake_dfs.ignore_headers(workspace, "If-None-Match")

    # The same name again: OneLake would carry the rename out over the published file.
    with pytest.raises(ConditionIgnored) as raised:
        store.write_new(TARGET, b"second")
    message = str(raised.value)
    assert "the rename of db.schema/coll/_" in message and f"to {TARGET}" in message
    assert "without its If-None-Match condition" in message
    assert "x-ms-rejected-headers: if-none-match" in message
    assert "mongo-fabric-mirror inspect --table" in message
    (rename,) = _renames(fake_dfs.requests_for(workspace))[-1:]
    assert rename.headers["if-none-match"] == "*"  # it was sent; the service ignored it

    # From now on nothing conditional is even sent: no staging, no rename.
    before = len(fake_dfs.requests_for(workspace))
    with pytest.raises(ConditionIgnored):
        store.write_new("db.schema/coll/00000000000000000002.parquet", b"next")
    with pytest.raises(ConditionIgnored):
        store.rename_new("db.schema/coll/_x", "db.schema/coll/00000000000000000003.parquet")
    assert len(fake_dfs.requests_for(workspace)) == before


def test_the_check_is_not_retried_away(fake_dfs: FakeDfs) -> None:
    # Not a transient fault: the retrying store hands it on at once.
    workspace = _workspace()
    fake_dfs.ignore_headers(workspace, "If-None-Match")
    store = RetryingStore(open_fake_dfs_store(fake_dfs, workspace), budget_seconds=30)
    with pytest.raises(ConditionIgnored):
        store.write_new(TARGET, b"x")
    assert len(_renames(fake_dfs.requests_for(workspace))) == 1


def test_an_ignored_if_match_on_a_conditional_delete_fails_loudly(fake_dfs: FakeDfs) -> None:
    workspace = _workspace()
    store = open_fake_dfs_store(fake_dfs, workspace)
    store.write_new(TARGET, b"x")
    (listed,) = store.list_files("db.schema/coll")
    fake_dfs.ignore_headers(workspace, "If-Match")
    with pytest.raises(ConditionIgnored, match="without its If-Match condition"):
        store.delete_unchanged(listed)


def test_unconditional_requests_ignore_the_header(fake_dfs: FakeDfs) -> None:
    # x-ms-owner is one of the headers OneLake documents ignoring; nothing of ours relies on it.
    workspace = _workspace()
    fake_dfs.ignore_headers(workspace, "If-None-Match", "x-ms-owner")
    store = open_fake_dfs_store(fake_dfs, workspace)
    store.write("db.schema/coll/_metadata.json", b"{}")
    assert store.read("db.schema/coll/_metadata.json") == b"{}"
