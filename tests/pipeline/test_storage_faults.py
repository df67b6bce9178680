"""`run --once` as a real process while storage faults hit Azurite through the fault proxy: the
engine rides them out and the mirror still equals the source; a fault that outlasts
STORAGE_RETRY_SECONDS ends the run with one line and exit 1."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import uuid
from typing import Any

import pytest
from pymongo import MongoClient

from tests.fixtures.azurite import ACCOUNT_KEY
from tests.fixtures.console import console_env
from tests.fixtures.fault_proxy import FaultyAzurite, Request
from tests.pipeline.test_run_cli import REPO_ROOT, Backend, Writer, assert_verified, command

DOCUMENTS = 60  # as many as the end-to-end run seeds


def nth_match(n: int) -> Any:
    """A fault predicate true for the n-th request it is asked about only."""
    seen = 0
    lock = threading.Lock()

    def is_nth(request: Request) -> bool:
        nonlocal seen
        with lock:
            seen += 1
            return seen == n

    return is_nth


def backends(faulty_azurite: FaultyAzurite) -> tuple[Backend, Backend, str]:
    """The run's stores through the proxies, the same stores direct, and the state table."""
    unique = uuid.uuid4().hex[:10]
    table = f"run{unique}"
    proxied = faulty_azurite.connection_string
    direct = faulty_azurite.azurite.connection_string
    return (
        (f"{proxied};Container=run{unique}", f"{proxied};TableName={table}"),
        (f"{direct};Container=run{unique}", f"{direct};TableName={table}"),
        table,
    )


def run_once(
    uri: str, database: str, backend: Backend, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("run", uri, database, backend, "--once", *extra),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO_ROOT,
        env=console_env(),
    )


# Today a run's first six inserts create the records stream, sequence, store identity, table,
# partition (in a snapshot worker process) and schema.
@pytest.mark.parametrize("insert", range(1, 7))
def test_run_once_survives_a_reset_after_a_table_insert(
    faulty_azurite: FaultyAzurite,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient[Any],
    insert: int,
):
    Writer(mongodb_uri, mongo_db_name, seed=insert).seed(
        mongo_client[mongo_db_name].items, DOCUMENTS
    )
    proxied, direct, table = backends(faulty_azurite)
    # The n-th entity insert into the state table lands, and the connection resets unanswered.
    lost = faulty_azurite.table.lose_answers(
        "POST", rf"^/devstoreaccount1/{table}(\?|$)", when=nth_match(insert)
    )
    result = run_once(mongodb_uri, mongo_db_name, proxied)
    assert lost.hits == 1
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ServiceResponseError" in result.stderr  # the retry's warning: the fault was met
    assert_verified(mongodb_uri, mongo_db_name, direct)


def test_run_once_survives_lost_answers_of_landing_zone_writes(
    faulty_azurite: FaultyAzurite,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient[Any],
):
    Writer(mongodb_uri, mongo_db_name, seed=11).seed(mongo_client[mongo_db_name].items, DOCUMENTS)
    proxied, direct, _ = backends(faulty_azurite)
    # Every third blob write lands unanswered, numbered files and control files alike.
    writes = iter(range(1_000_000))
    lost = faulty_azurite.blob.lose_answers(
        "PUT", r"\.(parquet|json)(\?|$)", times=4, when=lambda request: next(writes) % 3 == 0
    )
    result = run_once(mongodb_uri, mongo_db_name, proxied)
    assert lost.hits == 4
    assert result.returncode == 0, result.stderr[-3000:]
    assert_verified(mongodb_uri, mongo_db_name, direct)


def test_a_storage_fault_outlasting_the_budget_ends_the_run_with_one_line(
    faulty_azurite: FaultyAzurite,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient[Any],
):
    Writer(mongodb_uri, mongo_db_name, seed=3).seed(mongo_client[mongo_db_name].items, DOCUMENTS)
    proxied, _, _ = backends(faulty_azurite)
    faulty_azurite.blob.answer_status(503, "PUT", r"\.parquet(\?|$)", times=None)
    result = run_once(mongodb_uri, mongo_db_name, proxied, "--storage-retry-seconds", "1")
    assert result.returncode == 1
    # The failed partition is named in the run's error, on its own line.
    (line,) = [line for line in result.stderr.splitlines() if "STORAGE_RETRY_SECONDS=1" in line]
    assert re.search(
        r": blob container http://127\.0\.0\.1:\d+/devstoreaccount1/run\w+/?: writing \S+: "
        r"HttpResponseError \(HTTP 503\): Service Unavailable "
        r"\(still failing after \d+ attempts in \d+s; STORAGE_RETRY_SECONDS=1\)$",
        line,
    ), line
    assert "Traceback" not in result.stderr and ACCOUNT_KEY not in result.stderr


def state_writes(table: str, kind: str) -> str:
    """The path of replaces (PUT with If-Match) of one kind's records in the state table."""
    return rf"^/devstoreaccount1/{table}\(PartitionKey=(%27|'){kind}(%27|')"


def records_a_staged_file(request: Request) -> bool:
    """An allocation: a sequence write whose value (JSON in base64 chunks) names a staged file
    as pending."""
    entity = json.loads(request.body or b"{}")
    chunks = sorted((n for n in entity if re.fullmatch(r"json_\d+", n)), key=lambda n: int(n[5:]))
    value = b"".join(base64.b64decode(entity[name]) for name in chunks)
    return b"_staging-" in value


def test_lost_answers_to_sequence_writes_leave_no_gap(
    faulty_azurite: FaultyAzurite,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient[Any],
):
    """Issue 13 item 4: the allocation lands, its answer is lost, the SDK's retry meets 412.
    Before, update() allocated again: one publish held several numbers, and `inspect` found a
    gap that only a run after the 5-minute publish lease filled, while `--once` said success."""
    Writer(mongodb_uri, mongo_db_name, seed=4).seed(mongo_client[mongo_db_name].items, DOCUMENTS)
    proxied, direct, table = backends(faulty_azurite)
    lost = faulty_azurite.table.lose_answers(
        "PUT", state_writes(table, "sequence"), times=3, when=records_a_staged_file
    )
    result = run_once(mongodb_uri, mongo_db_name, proxied)
    assert lost.hits == 3
    assert result.returncode == 0, result.stderr[-3000:]
    # One number per staged file: no number was left for repair to fill with an empty file.
    assert "filled with zero rows" not in result.stderr, result.stderr[-3000:]
    assert_verified(mongodb_uri, mongo_db_name, direct)  # `inspect` included: no gap


def test_a_lost_answer_to_the_lease_write_does_not_lock_the_run_out(
    faulty_azurite: FaultyAzurite,
    mongodb_uri: str,
    mongo_db_name: str,
    mongo_client: MongoClient[Any],
):
    """Issue 13 item 9: the reader's lease write lands, its answer is lost. Before, the retry met
    412, the record read back named a live holder (the run itself) and the run refused itself:
    "being mirrored by another process"."""
    Writer(mongodb_uri, mongo_db_name, seed=9).seed(mongo_client[mongo_db_name].items, DOCUMENTS)
    proxied, direct, table = backends(faulty_azurite)
    lost = faulty_azurite.table.lose_answers("PUT", state_writes(table, "stream"), times=1)
    result = run_once(mongodb_uri, mongo_db_name, proxied)
    assert lost.hits == 1
    assert result.returncode == 0, result.stderr[-3000:]
    assert "another process" not in result.stderr
    assert_verified(mongodb_uri, mongo_db_name, direct)
