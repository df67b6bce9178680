"""The publisher's invariants, against the local folder store and SQLite state.

Crash and race tests run the publisher in real subprocesses (tests/landing_zone/publishing_child.py)
and kill them with SIGKILL; the replayer then judges the folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from shared.errors import MirrorError
from shared.landing_zone import parquet_files
from shared.landing_zone.publisher import SEQUENCE_KIND, STAGING_PREFIX, Publisher, Superseded
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.stores import open_landing_zone
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.state import open_state_store
from shared.state.base import update
from shared.state.sqlite import SqliteStateStore
from tests.landing_zone.publishing_child import TABLE, batch

REPO_ROOT = Path(__file__).resolve().parents[2]
CRASH_STEPS = ["after-staging", "after-allocating", "after-renaming", "before-recording"]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "lz")


@pytest.fixture
def publisher(store: LocalStore, tmp_path: Path) -> Publisher:
    return Publisher(store, SqliteStateStore(tmp_path / "state.db"))


CHILD = [sys.executable, "-m", "tests.landing_zone.publishing_child"]


@pytest.fixture(params=["local", "azurite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """LANDING_ZONE and STATE_STORE for the child processes: folder + SQLite, or Blob + Table."""
    if request.param == "local":
        return str(tmp_path / "lz"), str(tmp_path / "state.db")
    azurite = request.getfixturevalue("azurite")
    unique = uuid.uuid4().hex[:10]
    return (
        f"{azurite.connection_string};Container=crash{unique}",
        f"{azurite.connection_string};TableName=crash{unique}",
    )


def run_child(
    backend: tuple[str, str], writer: str, batches: int, rows: int, crash: str = ""
) -> int:
    args = [*backend, writer, str(batches), str(rows), crash]
    return subprocess.run([*CHILD, *args], cwd=REPO_ROOT, check=False).returncode


def test_files_are_numbered_continuously_after_metadata(publisher: Publisher, store: LocalStore):
    publisher.prepare_table(TABLE)
    numbers = [
        publisher.publish(TABLE, batch("w", n, 3), "w", {"batches": n + 1}) for n in range(3)
    ]

    assert numbers == [1, 2, 3]
    names = [f.path.rsplit("/", 1)[1] for f in store.list_files(TABLE.folder)]
    assert names == [
        "00000000000000000001.parquet",
        "00000000000000000002.parquet",
        "00000000000000000003.parquet",
        "_metadata.json",
    ]
    assert json.loads(store.read(TABLE.metadata_file)) == {"keyColumns": ["_id"]}
    partner = json.loads(store.read("_partnerEvents.json"))
    assert partner["partnerName"] == "mongo-fabric-mirror"
    assert partner["sourceInfo"]["sourceType"] == "MongoDB"
    assert publisher.progress(TABLE, "w") == {"batches": 3}
    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.row_count == 9


def test_every_column_nullable_and_marker_last(publisher: Publisher, store: LocalStore):
    import io

    import pyarrow.parquet as pq

    publisher.prepare_table(TABLE)
    strict = pa.schema(
        [
            pa.field("_id", pa.string(), nullable=False),
            pa.field("n", pa.int64(), nullable=False),
            pa.field("__rowMarker__", pa.int32(), nullable=False),
        ]
    )
    publisher.publish(
        TABLE, pa.table({"_id": ["a"], "n": [1], "__rowMarker__": [4]}, strict), "w", {}
    )
    schema = pq.read_schema(io.BytesIO(store.read(TABLE.data_file(1))))
    assert all(field.nullable for field in schema)
    assert schema.names[-1] == "__rowMarker__"


def test_refuses_a_batch_whose_marker_is_not_last(publisher: Publisher, store: LocalStore):
    publisher.prepare_table(TABLE)
    wrong = pa.table({"__rowMarker__": pa.array([4], pa.int32()), "_id": ["a"]})
    with pytest.raises(MirrorError, match="last column"):
        publisher.publish(TABLE, wrong, "w", {})
    assert store.size(TABLE.data_file(1)) is None


def test_metadata_with_other_keys_is_never_rewritten(publisher: Publisher, store: LocalStore):
    store.write_new(TABLE.metadata_file, b'{"keyColumns": ["sku"]}')
    with pytest.raises(MirrorError, match="keys can never change"):
        publisher.prepare_table(TABLE)
    assert json.loads(store.read(TABLE.metadata_file)) == {"keyColumns": ["sku"]}


def test_repair_fills_a_number_whose_staged_file_is_gone(publisher: Publisher, store: LocalStore):
    publisher.prepare_table(TABLE)
    publisher.publish(TABLE, batch("w", 0, 2), "w", {"batches": 1})

    def allocate_lost(value):  # a number allocated by a publisher whose staged file vanished
        return {
            **value,
            "next": 3,
            "pending": {"2": f"{TABLE.folder}/{STAGING_PREFIX}0-gone.parquet"},
        }

    update(publisher.state, SEQUENCE_KIND, TABLE.folder, allocate_lost)
    publisher.repair(TABLE)

    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.files == 2 and report.row_count == 2
    assert publisher.state.get(SEQUENCE_KIND, TABLE.folder).value["pending"] == {}
    assert publisher.publish(TABLE, batch("w", 1, 2), "w", {"batches": 2}) == 3


def test_repair_removes_only_old_orphaned_staging_files(publisher: Publisher, store: LocalStore):
    publisher.prepare_table(TABLE)
    old = f"{TABLE.folder}/{STAGING_PREFIX}1000-old.parquet"
    recent = f"{TABLE.folder}/{STAGING_PREFIX}99999999999-recent.parquet"
    store.write(old, b"x")
    store.write(recent, b"x")
    publisher.repair(TABLE)
    assert store.size(old) is None
    assert store.size(recent) == 1


def test_a_published_path_is_never_overwritten(publisher: Publisher, store: LocalStore):
    publisher.prepare_table(TABLE)
    squatter = parquet_files.encode(batch("squatter", 0, 1))
    store.write_new(TABLE.data_file(1), squatter)  # e.g. a file from an earlier, lost state store
    publisher.publish(TABLE, batch("w", 0, 5), "w", {"batches": 1})
    assert store.read(TABLE.data_file(1)) == squatter


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_sigkill_at_each_step_then_restart_leaves_every_row_once(
    backend: tuple[str, str], step: str
):
    assert run_child(backend, "w", 4, 50, crash=step) == -9
    assert run_child(backend, "w", 4, 50) == 0

    store = open_landing_zone(backend[0])
    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.row_count == 200
    assert report.rows is not None
    assert len(set(report.rows.column("_id").to_pylist())) == 200
    # No batch was published twice: each file holds a different batch.
    assert report.files == 4
    staged = [f for f in store.list_files(TABLE.folder) if STAGING_PREFIX in f.path]
    # Only a crash before allocation leaves a (recent, ignored) orphan; repair finishes the rest.
    assert len(staged) == (1 if step == "after-staging" else 0)


def test_two_racing_publisher_processes_never_share_or_skip_a_number(backend: tuple[str, str]):
    publisher = Publisher(open_landing_zone(backend[0]), open_state_store(backend[1]))
    publisher.prepare_table(TABLE)
    racers = [
        subprocess.Popen([*CHILD, *backend, writer, "15", "20"], cwd=REPO_ROOT)
        for writer in ("left", "right")
    ]
    assert [racer.wait(timeout=120) for racer in racers] == [0, 0]

    report = inspect_table(publisher.store, TABLE)
    assert report.conforms, report.problems
    assert report.files == 30
    assert report.row_count == 600
    assert publisher.allocated_count(TABLE) == 30


def test_table_names_that_cannot_be_folders_are_refused():
    for bad in ("", "_hidden", "a/b", "..", "tab\x01"):
        with pytest.raises(MirrorError):
            TableRef(None, bad)


def test_a_claimed_writer_fences_out_the_earlier_holder(publisher: Publisher, store: LocalStore):
    publisher.prepare_table(TABLE)
    first, _ = publisher.claim(TABLE, "p0")
    publisher.publish(TABLE, batch("p0", 0, 2), "p0", {"batches": 1}, first)
    second, progress = publisher.claim(TABLE, "p0")
    assert progress == {"batches": 1}

    with pytest.raises(Superseded):
        publisher.publish(TABLE, batch("p0", 1, 2), "p0", {"batches": 2}, first)
    assert publisher.allocated_count(TABLE) == 1
    assert not [f for f in store.list_files(TABLE.folder) if STAGING_PREFIX in f.path]

    assert publisher.publish(TABLE, batch("p0", 1, 2), "p0", {"batches": 2}, second) == 2
