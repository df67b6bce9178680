"""The `run` command as a real process against the sandbox, on a local folder and on Azurite: a
writer changes the collection at a steady rate while `run` snapshots and streams, then the mirror
is drained and `verify` and `inspect` judge it; faults include SIGKILL at random points, a second
`run`, lost history, and collections dropped or renamed under it."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, WriteError

from mongodb_sandbox import SandboxServer
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.replayer import inspect_table
from shared.landing_zone.stores import open_landing_zone
from shared.landing_zone.tables import METADATA_FILE, TableRef
from shared.pipeline.changes import CHANGES_WRITER
from shared.pipeline.plans import Phase, load_plan
from shared.pipeline.rebuild import REBUILD_KIND
from shared.pipeline.snapshot import PARTITION_KIND, PartitionTask, partition_key
from shared.pipeline.stream_checkpoint import STREAM_KIND
from shared.pipeline.verify import format_report, verify_mirror
from shared.state import open_state_store
from shared.state.base import JsonObject, update
from tests.fixtures.console import console_command, console_env, run_console
from tests.fixtures.mongodb import SMALL_OPLOG_SIZE

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_WINDOWS = [
    "--change-window-events",
    "200",
    "--change-await-ms",
    "50",
    "--workers",
    "1",
    "--file-rows",
    "40",
]
Backend = tuple[str, str]


@pytest.fixture(params=["local", "azurite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """LANDING_ZONE and STATE_STORE: a folder and SQLite, or Azurite Blob and Table Storage."""
    if request.param == "local":
        return str(tmp_path / "lz"), str(tmp_path / "state.db")
    azurite = request.getfixturevalue("azurite")
    unique = uuid.uuid4().hex[:10]
    return (
        f"{azurite.connection_string};Container=run{unique}",
        f"{azurite.connection_string};TableName=run{unique}",
    )


def local_backend(tmp_path: Path) -> Backend:
    return str(tmp_path / "lz"), str(tmp_path / "state.db")


def command(name: str, uri: str, database: str, backend: Backend, *extra: str) -> list[str]:
    landing_zone, state = backend
    args = console_command(name, "--mongodb-uri", uri, "--database", database)
    args += ["--landing-zone", landing_zone]
    if name == "run":
        args += ["--state", state, *SMALL_WINDOWS]
    return [*args, *extra]


class RunProcess:
    """`run` in a session of its own (so SIGKILL reaches its snapshot workers too), its output in
    files: a pipe nobody reads while it runs would fill up and block it."""

    def __init__(self, folder: Path, uri: str, database: str, backend: Backend, *extra: str):
        name = uuid.uuid4().hex[:8]
        self._stdout, self._stderr = folder / f"run-{name}.out", folder / f"run-{name}.err"
        with self._stdout.open("w") as out, self._stderr.open("w") as err:
            self.popen = subprocess.Popen(
                command("run", uri, database, backend, *extra),
                stdout=out,
                stderr=err,
                start_new_session=True,
                cwd=REPO_ROOT,
                env=console_env(),
            )

    @property
    def stdout(self) -> str:
        return self._stdout.read_text()

    @property
    def stderr(self) -> str:
        return self._stderr.read_text()

    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM: the run finishes the window in hand and exits."""
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=60)


def run_once(uri: str, database: str, backend: Backend, *extra: str) -> str:
    result = subprocess.run(
        command("run", uri, database, backend, "--once", *extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=console_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored" in result.stdout and "change event" in result.stdout
    return result.stdout + result.stderr


def assert_verified(uri: str, database: str, backend: Backend) -> None:
    """`verify` exits 0 (every table equal to its collection) and `inspect` finds no problem."""
    verify = subprocess.run(
        command("verify", uri, database, backend),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=console_env(),
    )
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    assert "DIFFERENT" not in verify.stdout
    inspect = subprocess.run(
        console_command("inspect", "--landing-zone", backend[0]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=console_env(),
    )
    assert inspect.returncode == 0, inspect.stdout[-3000:]
    assert "DOES NOT CONFORM" not in inspect.stdout and "conforms" in inspect.stdout


def assert_verified_in_process(uri: str, database: str, backend: Backend) -> None:
    """What `verify` and `inspect` check, without starting two more processes."""
    store = open_landing_zone(backend[0])
    with MongoClient(uri) as client:
        report = verify_mirror(store, client[database], None)
    assert report.equal, format_report(report)
    for table in report.tables:
        inspected = inspect_table(store, table.table)
        assert inspected.conforms, inspected.problems


def open_publisher(backend: Backend) -> Publisher:
    return Publisher(open_landing_zone(backend[0]), open_state_store(backend[1]))


def wait_for(condition: Callable[[], bool], process: RunProcess, what: str) -> None:
    deadline = time.monotonic() + 90
    while not condition():
        if not process.running() or time.monotonic() > deadline:
            if process.running():
                process.kill()
            raise AssertionError(
                f"run (exit {process.popen.returncode}) never got to {what}:\n"
                + process.stderr[-5000:]
            )
        time.sleep(0.05)


def is_streaming(publisher: Publisher, table: TableRef) -> bool:
    plan = load_plan(publisher.state, table)
    return plan is not None and plan.phase == Phase.STREAMING


def streamed_changes(publisher: Publisher, table: TableRef) -> int:
    """Change events the run recorded for ``table`` (0 until it streams)."""
    if not is_streaming(publisher, table):
        return 0
    progress = publisher.progress(table, CHANGES_WRITER) or {}
    return int(progress.get("events", 0))


class Writer(threading.Thread):
    """A random mix of insert/update/replace/delete at a steady rate: `_id`s of several types,
    fields whose type changes from one write to the next, nested values."""

    def __init__(self, uri: str, database: str, seed: int, rate: float = 150.0) -> None:
        super().__init__(daemon=True)
        self._uri = uri
        self._database = database
        self._rng = random.Random(seed)
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self.operations = 0
        self.error: BaseException | None = None
        object_ids = [ObjectId(self._rng.randbytes(12)) for _ in range(15)]
        self.ids: list[Any] = [
            *range(40),
            *[f"key-{i}" for i in range(20)],
            *object_ids,
            *[{"tenant": i % 3, "n": i} for i in range(10)],
            *[i + 0.5 for i in range(5)],
        ]

    def value(self, depth: int = 0) -> Any:
        choice = self._rng.randrange(9 if depth < 2 else 6)
        if choice == 0:
            return self._rng.randrange(-1000, 1000)
        if choice == 1:
            return self._rng.random() * 100
        if choice == 2:
            return "".join(self._rng.choice("abcdé€ ") for _ in range(self._rng.randrange(12)))
        if choice == 3:
            return self._rng.random() < 0.5
        if choice == 4:
            return None
        if choice == 5:
            return dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
                milliseconds=self._rng.randrange(10**10)
            )
        if choice in (6, 7):
            return {f"f{i}": self.value(depth + 1) for i in range(self._rng.randrange(1, 4))}
        return [self.value(depth + 1) for _ in range(self._rng.randrange(4))]

    def document(self) -> dict[str, Any]:
        fields = self._rng.sample(["a", "b", "c", "nested", "tags"], self._rng.randrange(1, 5))
        return {name: self.value() for name in fields}

    def seed(self, collection: Any, count: int) -> None:
        for _id in self._rng.sample(self.ids, count):
            collection.insert_one({"_id": _id, **self.document()})

    def step(self, collection: Any) -> None:
        _id = self._rng.choice(self.ids)
        operation = self._rng.choice(["insert", "insert", "update", "update", "replace", "delete"])
        if operation == "insert":
            try:
                collection.insert_one({"_id": _id, **self.document()})
            except DuplicateKeyError:
                pass
        elif operation == "update":
            field = self._rng.choice(["a", "b", "c", "nested.f0", "tags"])
            change = {"$unset": {field: ""}} if self._rng.random() < 0.2 else None
            try:
                collection.update_one({"_id": _id}, change or {"$set": {field: self.value()}})
            except WriteError:
                pass  # nested.f0 under a value that is not a document: refused, like MongoDB
        elif operation == "replace":
            collection.replace_one({"_id": _id}, self.document(), upsert=self._rng.random() < 0.5)
        else:
            collection.delete_one({"_id": _id})
        self.operations += 1

    def target(self, database: Any) -> Any:
        """The collection the next write goes to (a subclass may spread them)."""
        return database.items

    def run(self) -> None:
        client: MongoClient[dict[str, Any]] = MongoClient(self._uri)
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self.step(self.target(client[self._database]))
                next_at += self._interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as error:  # reported by finish()
            self.error = error
        finally:
            client.close()

    def finish(self) -> int:
        self._stop.set()
        self.join(timeout=30)
        assert self.error is None, repr(self.error)
        return self.operations


# -- end to end ---------------------------------------------------------------------------------


def test_run_mirrors_a_live_collection_end_to_end(
    backend: Backend,
    tmp_path: Path,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient,
):
    writer = Writer(mongodb_uri, mongo_db_name, seed=1)
    writer.seed(mongo_client[mongo_db_name].items, 60)
    writer.start()  # writing while the snapshot runs, and after
    process = RunProcess(tmp_path, mongodb_uri, mongo_db_name, backend, "--partitions", "2")
    publisher = open_publisher(backend)
    table = TableRef(mongo_db_name, "items")
    try:
        wait_for(lambda: streamed_changes(publisher, table) >= 200, process, "200 streamed events")
    finally:
        publisher.state.close()
        operations = writer.finish()
        returncode = process.stop()
    assert returncode == 0, process.stderr[-3000:]
    assert "stopping after the window in hand" in process.stderr
    assert "mirrored" in process.stdout
    assert operations >= 200
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified(mongodb_uri, mongo_db_name, backend)


# -- faults -------------------------------------------------------------------------------------


KILL_CHAINS = 4
KILLS_PER_CHAIN = 5  # 20 seeded kill points in all


def lease_owner(backend: Backend, database: str) -> str | None:
    """The reader holding the database's stream lease, if any."""
    state = open_state_store(backend[1])
    try:
        record = state.get(STREAM_KIND, database)
    finally:
        state.close()
    if record is None or not record.value.get("lease_expires"):
        return None  # never taken, given back, or expired by the test
    owner = record.value.get("owner")
    return owner if isinstance(owner, str) else None


def lease_taken(backend: Backend, database: str, previous: str | None) -> Callable[[], bool]:
    """True once a reader other than ``previous`` holds the database's lease."""
    return lambda: lease_owner(backend, database) not in (None, previous)


@pytest.mark.parametrize("chain", range(KILL_CHAINS))
def test_sigkill_at_random_points_then_run_once_converges(
    chain: int, tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    """Each seed kills a `run` (and its snapshot workers) at a random point after it took the
    lease: mid-snapshot, mid-window or mid-publish; the next `run` resumes from what the killed
    one left. A chain of kills shares one database, so later kills hit streaming, not snapshots."""
    backend = local_backend(tmp_path)
    writer = Writer(mongodb_uri, mongo_db_name, seed=chain, rate=200)
    writer.seed(mongo_client[mongo_db_name].items, 80)
    writer.start()
    try:
        for seed in range(chain * KILLS_PER_CHAIN, (chain + 1) * KILLS_PER_CHAIN):
            previous = lease_owner(backend, mongo_db_name)
            process = RunProcess(tmp_path, mongodb_uri, mongo_db_name, backend, "--file-rows", "10")
            try:
                wait_for(lease_taken(backend, mongo_db_name, previous), process, "the lease")
                # The fault's random point, not a synchronisation.
                time.sleep(random.Random(seed).uniform(0.0, 1.2))
            finally:
                process.kill()
            # No lease expiry is waited for: the killed holder ran here and is provably gone.
    finally:
        writer.finish()
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified_in_process(mongodb_uri, mongo_db_name, backend)


def test_a_second_run_cannot_publish_while_the_first_holds_the_lease(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    backend = local_backend(tmp_path)
    mongo_client[mongo_db_name].items.insert_many([{"_id": i} for i in range(20)])
    first = RunProcess(tmp_path, mongodb_uri, mongo_db_name, backend)
    publisher = open_publisher(backend)
    table = TableRef(mongo_db_name, "items")
    try:
        wait_for(lambda: is_streaming(publisher, table), first, "the first run streams")
        mongo_client[mongo_db_name].items.insert_one({"_id": "first"})
        wait_for(lambda: streamed_changes(publisher, table) >= 1, first, "a change published")
        files = publisher.allocated_count(table)
        second = subprocess.run(
            command("run", mongodb_uri, mongo_db_name, backend, "--once"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=console_env(),
        )
        assert second.returncode == 1, second.stderr
        assert "another process" in second.stderr and "Traceback" not in second.stderr
        assert publisher.allocated_count(table) == files  # the second published nothing
    finally:
        publisher.state.close()
        returncode = first.stop()
    assert returncode == 0, first.stderr[-3000:]
    run_once(mongodb_uri, mongo_db_name, backend)  # the lease was given back on SIGTERM
    assert_verified(mongodb_uri, mongo_db_name, backend)


def test_history_lost_while_paused_rebuilds_automatically(
    small_oplog_sandbox: SandboxServer, tmp_path: Path, mongo_db_name: str
):
    uri = small_oplog_sandbox.uri
    backend = local_backend(tmp_path)
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    items = client[mongo_db_name].items
    items.insert_many([{"_id": i, "v": i} for i in range(30)])
    run_once(uri, mongo_db_name, backend)
    for i in range(SMALL_OPLOG_SIZE * 3):  # the mirror is paused; the oplog forgets
        items.update_one({"_id": i % 30}, {"$set": {"v": f"changed {i}"}})
    items.delete_one({"_id": 29})

    output = run_once(uri, mongo_db_name, backend)
    assert f"rebuilt {mongo_db_name}.items" in output
    state = open_state_store(backend[1])
    try:
        record = state.get(REBUILD_KIND, TableRef(mongo_db_name, "items").folder)
    finally:
        state.close()
    assert record is not None and record.value["count"] == 1
    cause = record.value["causes"][0]["cause"]
    # One line a person reads (status shows it): the server's code and message, no raw BSON.
    assert cause.startswith(f"change history lost: {mongo_db_name}: ChangeStreamHistoryLost (286)")
    assert "\n" not in cause and "RawBSON" not in cause and "full error" not in cause
    assert_verified(uri, mongo_db_name, backend)
    client.close()


def test_dropped_recreated_and_renamed_collections(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    backend = local_backend(tmp_path)
    db = mongo_client[mongo_db_name]
    db.orders.insert_many([{"_id": i, "v": i} for i in range(20)])
    db.old_name.insert_many([{"_id": str(i)} for i in range(10)])
    db.steady.insert_one({"_id": 1})
    run_once(mongodb_uri, mongo_db_name, backend)

    db.orders.drop()
    db.orders.insert_many([{"_id": i, "w": [i]} for i in range(10, 15)])
    db.old_name.rename("new_name")
    db.new_name.insert_one({"_id": "after the rename"})
    db.steady.insert_one({"_id": 2})
    output = run_once(mongodb_uri, mongo_db_name, backend)
    assert f"{mongo_db_name}.orders" in output and f"{mongo_db_name}.old_name" in output

    assert not (Path(backend[0]) / f"{mongo_db_name}.schema" / "old_name").exists()
    assert (Path(backend[0]) / f"{mongo_db_name}.schema" / "new_name").is_dir()
    assert_verified(mongodb_uri, mongo_db_name, backend)


def test_a_collection_name_too_long_for_a_folder_stops_no_table(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    """90 control characters escape to 270 bytes, more than a folder name may hold (255); its
    table gets a hashed folder name, and every step that maps folders back finds it."""
    backend = local_backend(tmp_path)
    db = mongo_client[mongo_db_name]
    long_name = "\x01" * 90
    table = TableRef.for_collection(mongo_db_name, long_name)
    named = ("--collections", json.dumps([long_name, "orders"]))
    db[long_name].insert_many([{"_id": i} for i in range(5)])
    db.orders.insert_many([{"_id": i, "v": i} for i in range(20)])
    run_once(mongodb_uri, mongo_db_name, backend, *named)
    db[long_name].insert_one({"_id": "a change"})
    run_once(mongodb_uri, mongo_db_name, backend, *named)
    assert (Path(backend[0]) / table.folder / METADATA_FILE).is_file()
    assert_verified(mongodb_uri, mongo_db_name, backend)
    inspected = run_console("inspect", "--landing-zone", backend[0], "--table", long_name)
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    assert inspected.stdout.splitlines() == [f"{table}: conforms; 2 files, 6 rows replayed"]

    # resync by the collection's own name: commands never take folder names (one mapping)
    resync = run_console(
        "resync",
        "--table",
        f"{mongo_db_name}.{long_name}",
        "--landing-zone",
        backend[0],
        "--state",
        backend[1],
    )
    assert resync.returncode == 0, resync.stderr[-2000:]
    run_once(mongodb_uri, mongo_db_name, backend, *named)

    # Dropped while named: the table is rebuilt away, and the run goes on (its next plan knows
    # the named collection that no longer exists as mirrored, not as a typo that stops all).
    process = RunProcess(tmp_path, mongodb_uri, mongo_db_name, backend, *named)
    publisher = open_publisher(backend)
    orders = TableRef(mongo_db_name, "orders")

    def rebuilds() -> int:
        record = publisher.state.get(REBUILD_KIND, table.folder)
        return 0 if record is None else int(record.value["count"])

    try:
        # Past its start-up check of the selection: a drop before it is a typo to that check.
        wait_for(lease_taken(backend, mongo_db_name, None), process, "the lease")
        db[long_name].drop()
        wait_for(lambda: rebuilds() == 2, process, "the dropped table rebuilt")
        before = streamed_changes(publisher, orders)
        db.orders.insert_one({"_id": "after the drop"})
        wait_for(lambda: streamed_changes(publisher, orders) > before, process, "a later change")
    finally:
        publisher.state.close()
        returncode = process.stop()
    assert returncode == 0, process.stderr[-3000:]
    assert not (Path(backend[0]) / table.folder).exists()
    assert_verified(mongodb_uri, mongo_db_name, backend)


def test_a_table_that_cannot_be_prepared_stops_no_other_table(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    """A folder whose `_metadata.json` names other keys (they can never change) fails its
    table's preparation, both when it is planned and when its changes arrive; every other table
    is mirrored regardless, and the run ends non-zero naming the table."""
    backend = local_backend(tmp_path)
    db = mongo_client[mongo_db_name]
    db.bad.insert_one({"_id": 1})
    db.orders.insert_many([{"_id": i, "v": i} for i in range(20)])
    bad = TableRef(mongo_db_name, "bad")
    folder = Path(backend[0]) / bad.folder
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_text('{"keyColumns": ["sku"]}')
    for _ in range(2):  # the second run also reads changes of both tables
        result = subprocess.run(
            command("run", mongodb_uri, mongo_db_name, backend, "--once"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=console_env(),
        )
        assert result.returncode == 1, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert f"  {bad}: {bad.metadata_file} has keyColumns ['sku']" in result.stderr
        db.bad.insert_one({"_id": f"change {_}"})
        db.orders.insert_one({"_id": f"change {_}"})
    db.orders.delete_one({"_id": "change 1"})  # the last writes, made after the last run
    db.bad.delete_one({"_id": "change 1"})
    store = open_landing_zone(backend[0])
    with MongoClient(mongodb_uri) as client:
        report = verify_mirror(store, client[mongo_db_name], None)
    assert [(str(table.table), table.equal) for table in report.tables] == [
        (str(bad), False),
        (f"{mongo_db_name}.orders", True),
    ], format_report(report)


def live_processes(group: int) -> list[str]:
    """The processes of a process group that have not exited (zombies left to reap are gone)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while listed
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        state, _, pgrp = fields.split()[:3]
        if int(pgrp) == group and state != "Z":
            found.append(f"{stat.parent.name} {name}")
    return found


def test_a_failed_run_stops_its_workers_at_once(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    """The reader loses its lease mid-snapshot (another reader took over the stream): the run
    ends with its one-line error at once, its worker killed mid-partition rather than left to
    finish it; the next run resumes after the worker's last published `_id`."""
    documents = 4_000  # one row per file: the partition takes far longer than the exit may
    backend = local_backend(tmp_path)
    mongo_client[mongo_db_name].items.insert_many([{"_id": i} for i in range(documents)])
    table = TableRef(mongo_db_name, "items")
    process = RunProcess(
        tmp_path, mongodb_uri, mongo_db_name, backend, "--partitions", "1", "--file-rows", "1"
    )
    publisher = open_publisher(backend)

    def published() -> int:
        record = publisher.state.get(PARTITION_KIND, partition_key(PartitionTask(table, 0)))
        return 0 if record is None else int(record.value.get("documents", 0))

    def taken_over(value: JsonObject | None) -> JsonObject:
        return {**(value or {}), "owner": "another reader", "lease_expires": 0}

    try:
        wait_for(lambda: published() >= 20, process, "a partition under way")
        update(publisher.state, STREAM_KIND, mongo_db_name, taken_over)
        returncode = process.popen.wait(timeout=20)
        assert returncode == 1, process.stderr[-3000:]
        assert process.stderr.splitlines()[-1] == (
            f"error: database {mongo_db_name}: another reader took over the stream; "
            "this one stops without publishing"
        )
        assert published() < documents // 2
        assert not is_streaming(publisher, table)
        deadline = time.monotonic() + 30
        while live_processes(process.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # the multiprocessing resource tracker ends when the run's pipe closes
        assert live_processes(process.popen.pid) == []
    finally:
        publisher.state.close()
        if process.running() or live_processes(process.popen.pid):
            os.killpg(process.popen.pid, signal.SIGKILL)
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified_in_process(mongodb_uri, mongo_db_name, backend)


def test_sigterm_to_the_process_group_mid_snapshot_is_a_clean_stop(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    """`systemctl stop` signals every process of the unit, snapshot workers included: the run
    stops its partitions after the file in hand and exits 0; the next run resumes after the
    last published `_id` and the mirror verifies."""
    documents = 4_000
    backend = local_backend(tmp_path)
    mongo_client[mongo_db_name].items.insert_many([{"_id": i} for i in range(documents)])
    table = TableRef(mongo_db_name, "items")
    process = RunProcess(
        tmp_path, mongodb_uri, mongo_db_name, backend, "--partitions", "1", "--file-rows", "1"
    )
    publisher = open_publisher(backend)

    def published() -> int:
        record = publisher.state.get(PARTITION_KIND, partition_key(PartitionTask(table, 0)))
        return 0 if record is None else int(record.value.get("documents", 0))

    try:
        wait_for(lambda: published() >= 20, process, "a partition under way")
        os.killpg(process.popen.pid, signal.SIGTERM)
        returncode = process.popen.wait(timeout=60)
        assert returncode == 0, process.stderr[-3000:]
        assert "worker process died" not in process.stderr
        assert "snapshot stopped by request" in process.stderr
        assert not is_streaming(publisher, table)
    finally:
        publisher.state.close()
        if process.running() or live_processes(process.popen.pid):
            os.killpg(process.popen.pid, signal.SIGKILL)
    run_once(mongodb_uri, mongo_db_name, backend)
    assert_verified_in_process(mongodb_uri, mongo_db_name, backend)


def test_progress_lines_show_every_table_and_a_heartbeat_when_idle(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient
):
    """Every PROGRESS_SECONDS: a line for every mirrored table with its running total of change
    events and its lag (a table without changes too), or one heartbeat line when nothing
    changed, so a quiet mirror still shows it is alive; counts in the singular read so."""
    database = mongo_client[mongo_db_name]
    database.busy.insert_one({"_id": 0})
    database.quiet.insert_one({"_id": 0})
    process = RunProcess(
        tmp_path, mongodb_uri, mongo_db_name, local_backend(tmp_path), "--progress-seconds", "1"
    )
    try:
        wait_for(lambda: "idle for" in process.stderr, process, "a heartbeat while idle")
        database.busy.insert_one({"_id": 1})
        busy, quiet = f"{mongo_db_name}.busy", f"{mongo_db_name}.quiet"
        wait_for(
            lambda: f"{busy}: 1 change event mirrored, lag " in process.stderr,
            process,
            "a progress line for the changed table",
        )
        lines = process.stderr.splitlines()
        changed = max(i for i, line in enumerate(lines) if line.startswith(f"{busy}: 1 change"))
        # The unchanged table's line comes with it: every table, every interval.
        assert any(
            line.startswith(f"{quiet}: 0 change events mirrored, lag ")
            for line in lines[changed - 1 : changed + 2]
        ), "\n".join(lines[-20:])
        database.busy.insert_one({"_id": 2})
        wait_for(
            lambda: f"{busy}: 2 change events mirrored" in process.stderr,
            process,
            "the running total",
        )
        heartbeats = process.stderr.count("idle for")
        wait_for(
            lambda: process.stderr.count("idle for") > heartbeats, process, "a heartbeat again"
        )
        assert process.stop() == 0, process.stderr[-3000:]
    finally:
        if process.running():
            process.kill()
    assert "mirrored 2 change events in " in process.stdout
