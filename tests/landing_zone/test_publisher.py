"""The publisher's invariants, against the local folder store and SQLite state.

Crash and race tests run the publisher in real subprocesses (tests/landing_zone/publishing_child.py)
and kill them with SIGKILL; the replayer then judges the folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from shared.errors import MirrorError
from shared.landing_zone import parquet_files
from shared.landing_zone.parquet_files import ROW_MARKER, RowMarker
from shared.landing_zone.publisher import (
    BINDING_FILE,
    SEQUENCE_KIND,
    STAGING_PREFIX,
    BindingError,
    LeaseHeld,
    PendingPublish,
    PublishConflict,
    Publisher,
    Superseded,
    TableRebuilding,
)
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.stores import open_landing_zone
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.state import open_state_store
from shared.state.base import ConflictError, update
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


def claimed(publisher: Publisher, writer: str = "w") -> str:
    publisher.prepare_table(TABLE)
    return publisher.claim(TABLE, writer)[0]


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
    owner = claimed(publisher)
    numbers = [
        publisher.publish(TABLE, batch("w", n, 3), "w", {"batches": n + 1}, owner) for n in range(3)
    ]

    assert numbers == [1, 2, 3]
    names = [f.path.rsplit("/", 1)[1] for f in store.list_files(TABLE.folder)]
    assert names == [
        "00000000000000000001.parquet",
        "00000000000000000002.parquet",
        "00000000000000000003.parquet",
        "_metadata.json",
        BINDING_FILE,
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

    owner = claimed(publisher)
    strict = pa.schema(
        [
            pa.field("_id", pa.string(), nullable=False),
            pa.field("n", pa.int64(), nullable=False),
            pa.field(ROW_MARKER, pa.int32(), nullable=False),
        ]
    )
    batch = pa.table({"_id": ["a"], "n": [1], ROW_MARKER: [RowMarker.UPSERT]}, strict)
    publisher.publish(TABLE, batch, "w", {}, owner)
    schema = pq.read_schema(io.BytesIO(store.read(TABLE.data_file(1))))
    assert all(field.nullable for field in schema)
    assert schema.names[-1] == ROW_MARKER


def test_refuses_a_batch_whose_marker_is_not_last(publisher: Publisher, store: LocalStore):
    owner = claimed(publisher)
    wrong = pa.table({ROW_MARKER: pa.array([RowMarker.UPSERT], pa.int32()), "_id": ["a"]})
    with pytest.raises(MirrorError, match="last column"):
        publisher.publish(TABLE, wrong, "w", {}, owner)
    assert store.size(TABLE.data_file(1)) is None


def test_metadata_with_other_keys_is_never_rewritten(publisher: Publisher, store: LocalStore):
    store.write_new(TABLE.metadata_file, b'{"keyColumns": ["sku"]}')
    with pytest.raises(MirrorError, match="keys can never change"):
        publisher.prepare_table(TABLE)
    assert json.loads(store.read(TABLE.metadata_file)) == {"keyColumns": ["sku"]}


def pending_entry(staged: str, owner: str, expires: float) -> dict:
    return PendingPublish(staged, "0" * 64, "w", owner, expires).to_json()


def test_repair_fills_a_number_whose_staged_file_is_gone(publisher: Publisher, store: LocalStore):
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 0, 2), "w", {"batches": 1}, owner)

    def allocate_lost(value):  # a number allocated by a publisher whose staged file vanished
        gone = f"{TABLE.folder}/{STAGING_PREFIX}0-gone.parquet"
        return {**value, "next": 3, "pending": {"2": pending_entry(gone, "dead", 0.0)}}

    update(publisher.state, SEQUENCE_KIND, TABLE.folder, allocate_lost)
    publisher.repair(TABLE)

    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.files == 2 and report.row_count == 2
    assert publisher.state.get(SEQUENCE_KIND, TABLE.folder).value["pending"] == {}
    assert publisher.publish(TABLE, batch("w", 1, 2), "w", {"batches": 2}, owner) == 3


def test_a_lost_insert_only_file_is_filled_without_a_marker_column(
    publisher: Publisher, store: LocalStore
):
    """A snapshot number whose staged data is gone: its filler must not carry the marker column,
    whose presence in any file ends the table's initial load (landing-zone format page)."""
    import io

    import pyarrow.parquet as pq

    owner = claimed(publisher)
    inserts = batch("w", 0, 2).drop_columns([ROW_MARKER])
    publisher.publish(TABLE, inserts, "w", {"batches": 1}, owner)
    gone = f"{TABLE.folder}/{STAGING_PREFIX}0-gone.parquet"
    entry = PendingPublish(gone, "0" * 64, "w", "dead", 0.0, markers=False)
    assert PendingPublish.from_json(entry.to_json()) == entry

    def allocate_lost(value):
        return {**value, "next": 3, "pending": {"2": entry.to_json()}}

    update(publisher.state, SEQUENCE_KIND, TABLE.folder, allocate_lost)
    publisher.repair(TABLE)

    for number in (1, 2):
        schema = pq.read_schema(io.BytesIO(store.read(TABLE.data_file(number))))
        assert ROW_MARKER not in schema.names
    assert store.read(TABLE.data_file(2)) == parquet_files.empty_file(markers=False)
    report = inspect_table(store, TABLE)
    assert report.conforms, report.problems
    assert report.row_count == 2


def test_repair_leaves_a_live_publish_of_another_process_alone(
    publisher: Publisher, store: LocalStore
):
    owner = claimed(publisher)
    staged = f"{TABLE.folder}/{STAGING_PREFIX}99999999999-live.parquet"
    store.write(staged, b"in flight")

    def allocate_live(value):  # another worker between allocating and renaming
        return {**value, "next": 2, "pending": {"1": pending_entry(staged, owner, 9e12)}}

    update(publisher.state, SEQUENCE_KIND, TABLE.folder, allocate_live)
    publisher.repair(TABLE)
    Publisher(store, publisher.state).prepare_table(TABLE)

    assert store.size(staged) == len(b"in flight")
    assert store.size(TABLE.data_file(1)) is None
    assert "1" in publisher.state.get(SEQUENCE_KIND, TABLE.folder).value["pending"]


def test_a_new_claim_finishes_what_the_fenced_holder_left_pending(
    publisher: Publisher, store: LocalStore
):
    first = claimed(publisher)
    data = parquet_files.encode(batch("w", 0, 3))
    staged = f"{TABLE.folder}/{STAGING_PREFIX}99999999999-killed.parquet"
    store.write(staged, data)

    def allocate_killed(value):
        import hashlib

        entry = PendingPublish(staged, hashlib.sha256(data).hexdigest(), "w", first, 9e12)
        return {**value, "next": 2, "pending": {"1": entry.to_json()}}

    update(publisher.state, SEQUENCE_KIND, TABLE.folder, allocate_killed)
    publisher.claim(TABLE, "w")

    assert store.read(TABLE.data_file(1)) == data
    assert publisher.state.get(SEQUENCE_KIND, TABLE.folder).value["pending"] == {}


def test_repair_removes_only_old_orphaned_staging_files(publisher: Publisher, store: LocalStore):
    publisher.prepare_table(TABLE)
    old = f"{TABLE.folder}/{STAGING_PREFIX}1000-old.parquet"
    recent = f"{TABLE.folder}/{STAGING_PREFIX}99999999999-recent.parquet"
    store.write(old, b"x")
    store.write(recent, b"x")
    publisher.repair(TABLE)
    assert store.size(old) is None
    assert store.size(recent) == 1


def test_a_file_it_did_not_write_is_a_conflict_never_adopted_or_deleted(
    publisher: Publisher, store: LocalStore
):
    owner = claimed(publisher)
    squatter = parquet_files.encode(batch("squatter", 0, 1))
    store.write_new(TABLE.data_file(1), squatter)  # another writer, after the binding check
    with pytest.raises(PublishConflict, match="resync"):
        publisher.publish(TABLE, batch("w", 0, 5), "w", {"batches": 1}, owner)
    assert store.read(TABLE.data_file(1)) == squatter
    # The batch is still pending against its staged file, so nothing is reported as published.
    pending = publisher.state.get(SEQUENCE_KIND, TABLE.folder).value["pending"]
    assert store.size(pending["1"]["staged"]) is not None


def two_publishers(tmp_path: Path) -> tuple[Publisher, Publisher]:
    store = LocalStore(tmp_path / "lz")
    first = Publisher(store, SqliteStateStore(tmp_path / "a.db"))
    second = Publisher(store, SqliteStateStore(tmp_path / "b.db"))
    return first, second


def folder_bytes(store: LocalStore) -> dict[str, bytes]:
    return {f.path: store.read(f.path) for f in store.list_files(TABLE.folder)}


def test_a_fresh_state_store_cannot_publish_into_a_folder_it_does_not_own(tmp_path: Path):
    first, second = two_publishers(tmp_path)
    owner = claimed(first)
    first.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner)
    before = folder_bytes(first.store)
    with pytest.raises(BindingError, match=r"another state store.*resync --table crash.rows"):
        second.prepare_table(TABLE)
    assert folder_bytes(first.store) == before


def test_a_zero_byte_state_file_is_a_fresh_store_and_is_refused(tmp_path: Path):
    first, _ = two_publishers(tmp_path)
    owner = claimed(first)
    first.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner)
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(BindingError, match="another state store"):
        Publisher(first.store, SqliteStateStore(tmp_path / "empty.db")).prepare_table(TABLE)


def test_a_folder_of_files_nobody_bound_is_refused(publisher: Publisher, store: LocalStore):
    store.write_new(TABLE.data_file(1), parquet_files.encode(batch("old", 0, 1)))
    with pytest.raises(BindingError, match="did not number"):
        publisher.prepare_table(TABLE)
    assert store.size(TABLE.metadata_file) is None


def test_a_state_restored_from_an_older_copy_is_refused(tmp_path: Path):
    store = LocalStore(tmp_path / "lz")
    publisher = Publisher(store, SqliteStateStore(tmp_path / "state.db"))
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner)
    publisher.state.close()
    shutil.copy(tmp_path / "state.db", tmp_path / "backup.db")
    publisher = Publisher(store, SqliteStateStore(tmp_path / "state.db"))
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 1, 3), "w", {"batches": 2}, owner)

    restored = Publisher(store, SqliteStateStore(tmp_path / "backup.db"))
    with pytest.raises(BindingError, match="older than the landing zone"):
        restored.prepare_table(TABLE)


def test_a_used_state_pointed_at_a_new_landing_zone_is_refused(tmp_path: Path):
    state = SqliteStateStore(tmp_path / "state.db")
    publisher = Publisher(LocalStore(tmp_path / "lz"), state)
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner)
    elsewhere = LocalStore(tmp_path / "new-lz")
    with pytest.raises(BindingError, match="not the landing zone that state belongs to"):
        Publisher(elsewhere, state).prepare_table(TABLE)
    assert elsewhere.list_folders("") == []


def test_a_folder_that_lost_published_files_is_refused(publisher: Publisher, store: LocalStore):
    owner = claimed(publisher)
    for n in range(2):
        publisher.publish(TABLE, batch("w", n, 3), "w", {"batches": n + 1}, owner)
    store.delete(TABLE.data_file(2))
    with pytest.raises(BindingError, match=r"file 2 .* is missing"):
        Publisher(store, publisher.state).prepare_table(TABLE)


def test_files_the_replicator_moved_away_still_count(publisher: Publisher, store: LocalStore):
    owner = claimed(publisher)
    for n in range(2):
        publisher.publish(TABLE, batch("w", n, 3), "w", {"batches": n + 1}, owner)
    for n in (1, 2):
        name = TABLE.data_file(n).rsplit("/", 1)[1]
        store.write(f"{TABLE.folder}/_ProcessedFiles/{name}", store.read(TABLE.data_file(n)))
        store.delete(TABLE.data_file(n))
    Publisher(store, publisher.state).prepare_table(TABLE)


def test_files_moved_to_either_folder_or_aged_out_never_stop_the_table(
    publisher: Publisher, store: LocalStore
):
    owner = claimed(publisher)
    for n in range(3):
        publisher.publish(TABLE, batch("w", n, 3), "w", {"batches": n + 1}, owner)
    # Fabric's replicator: 1 and 2 applied and deleted after their retention, the newest in
    # _FilesReadyToDelete/.
    name = TABLE.data_file(3).rsplit("/", 1)[1]
    store.write(f"{TABLE.folder}/_FilesReadyToDelete/{name}", store.read(TABLE.data_file(3)))
    for n in (1, 2, 3):
        store.delete(TABLE.data_file(n))
    Publisher(store, publisher.state).prepare_table(TABLE)
    # And once every file has aged out (an idle table), the next one still follows on.
    store.delete(f"{TABLE.folder}/_FilesReadyToDelete/{name}")
    again = Publisher(store, publisher.state)
    again.prepare_table(TABLE)
    owner, _ = again.claim(TABLE, "w")
    assert again.publish(TABLE, batch("w", 3, 3), "w", {"batches": 4}, owner) == 4


def test_a_dropped_table_binds_again_with_a_new_generation(publisher: Publisher, store: LocalStore):
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner)
    old = json.loads(store.read(f"{TABLE.folder}/{BINDING_FILE}"))
    retirement = publisher.retire(TABLE, "dropped", old["generation"])
    assert retirement is not None
    assert publisher.sweep(retirement)
    publisher.forget(retirement)
    assert store.list_folders(TABLE.folder.split("/")[0]) == []
    owner = claimed(publisher)
    assert publisher.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner) == 1
    new = json.loads(store.read(f"{TABLE.folder}/{BINDING_FILE}"))
    assert new["stateStoreId"] == old["stateStoreId"]
    assert new["generation"] != old["generation"]


def test_a_leased_writer_is_refused_to_a_second_reader_until_released(publisher: Publisher):
    publisher.prepare_table(TABLE)
    first, _ = publisher.claim(TABLE, "changes", lease_seconds=60)
    with pytest.raises(LeaseHeld, match="only one reader"):
        publisher.claim(TABLE, "changes", lease_seconds=60)
    publisher.record_progress(TABLE, "changes", {"token": "t1"}, first, lease_seconds=60)
    publisher.release(TABLE, "changes", first)
    _second, progress = publisher.claim(TABLE, "changes", lease_seconds=60)
    assert progress == {"token": "t1"}
    with pytest.raises(Superseded):
        publisher.record_progress(TABLE, "changes", {"token": "t2"}, first, lease_seconds=60)


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
    first = claimed(publisher, "p0")
    publisher.publish(TABLE, batch("p0", 0, 2), "p0", {"batches": 1}, first)
    second, progress = publisher.claim(TABLE, "p0")
    assert progress == {"batches": 1}

    with pytest.raises(Superseded):
        publisher.publish(TABLE, batch("p0", 1, 2), "p0", {"batches": 2}, first)
    assert publisher.allocated_count(TABLE) == 1
    assert not [f for f in store.list_files(TABLE.folder) if STAGING_PREFIX in f.path]

    assert publisher.publish(TABLE, batch("p0", 1, 2), "p0", {"batches": 2}, second) == 2


def test_a_publish_by_another_worker_while_the_folder_is_listed_is_not_taken_for_foreign(
    publisher: Publisher, store: LocalStore
):
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 0, 2), "w", {"batches": 1}, owner)

    class PublishingWhileListed:
        """The folder listing of a second worker's check runs just after the first worker's
        next publish: the interleaving that made a fresh worker refuse its own table."""

        def __init__(self) -> None:
            self.done = False

        def __getattr__(self, name: str):
            return getattr(store, name)

        def list_files(self, folder: str):
            if not self.done and folder == TABLE.folder:
                self.done = True
                publisher.publish(TABLE, batch("w", 1, 2), "w", {"batches": 2}, owner)
            return store.list_files(folder)

    second = Publisher(PublishingWhileListed(), publisher.state)  # type: ignore[arg-type]
    second.prepare_table(TABLE)
    assert publisher.allocated_count(TABLE) == 2


def test_a_retired_generation_refuses_its_writers(publisher: Publisher) -> None:
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner)
    retirement = publisher.retire(TABLE, "dropped", publisher.generation(TABLE))
    assert retirement is not None
    with pytest.raises(TableRebuilding, match="being rebuilt"):
        publisher.publish(TABLE, batch("w", 1, 3), "w", {"batches": 2}, owner)
    with pytest.raises(TableRebuilding):
        publisher.claim(TABLE, "w")
    with pytest.raises(TableRebuilding):
        publisher.prepare_table(TABLE)
    publisher.sweep(retirement)
    publisher.forget(retirement)
    with pytest.raises(TableRebuilding, match="was rebuilt"):  # the record is gone now
        publisher.publish(TABLE, batch("w", 1, 3), "w", {"batches": 2}, owner)


def test_a_paused_rebuilder_leaves_the_next_generation_alone(
    publisher: Publisher, store: LocalStore
) -> None:
    """A retires, lists, then sleeps; B takes the rebuild over and finishes it; the table is
    bound afresh and published; A wakes and carries on: nothing of the new generation moves."""
    owner = claimed(publisher)
    publisher.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner)
    old = publisher.generation(TABLE)
    paused = publisher.retire(TABLE, "dropped", old)
    assert paused is not None
    successor = Publisher(store, publisher.state)
    taken = successor.retired(TABLE)
    assert taken is not None and successor.sweep(taken)
    successor.forget(taken)
    owner = claimed(successor)
    successor.publish(TABLE, batch("new", 0, 2), "w", {"batches": 1}, owner)
    before = {f.path: store.read(f.path) for f in store.list_files(TABLE.folder)}

    assert publisher.retire(TABLE, "dropped", old) is None  # the generation it meant is gone
    assert publisher.sweep(paused) is False
    publisher.forget(paused)
    assert {f.path: store.read(f.path) for f in store.list_files(TABLE.folder)} == before
    assert successor.generation(TABLE) != old
    assert inspect_table(store, TABLE).problems == []


def test_a_lost_answer_to_an_allocation_takes_one_number(
    publisher: Publisher, store: LocalStore
) -> None:
    """The service applied the allocation, the answer was lost, the retry met a changed ETag:
    the staged file keeps the one number it got, and the folder has no gap."""
    owner = claimed(publisher)
    real_replace = publisher.state.replace
    lost: list[bool] = []

    def replace_losing_one_answer(*args: object, **kwargs: object) -> object:
        record = real_replace(*args, **kwargs)  # type: ignore[arg-type]
        if not lost:
            lost.append(True)
            raise ConflictError("the retry of an applied write met the changed record")
        return record

    publisher.state.replace = replace_losing_one_answer  # type: ignore[method-assign]
    assert publisher.publish(TABLE, batch("w", 0, 3), "w", {"batches": 1}, owner) == 1
    publisher.state.replace = real_replace  # type: ignore[method-assign]
    assert publisher.publish(TABLE, batch("w", 1, 3), "w", {"batches": 2}, owner) == 2
    assert publisher.allocated_count(TABLE) == 2
    assert inspect_table(store, TABLE).problems == []
