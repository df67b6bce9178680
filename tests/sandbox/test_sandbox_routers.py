"""The sandbox as a sharded cluster's stand-in (`--routers N`): routers that answer `hello` as a
mongos does, share one shard's data and oplog, and each keep the cursors they opened.

Sandbox-only (skipped under MONGODB_TEST_URI): these start private sandbox servers.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure
from pymongo.server_type import SERVER_TYPE
from pymongo.topology_description import TOPOLOGY_TYPE

from mongodb_sandbox import SandboxServer
from mongodb_sandbox.errors import ErrorCode
from tests.fixtures.console import console_command, console_env, run_console
from tests.fixtures.mongodb import SandboxFactory, sandbox_only

pytestmark = sandbox_only

Client = MongoClient[dict[str, Any]]
# What only a replica-set member puts in its hello reply (a mongos has none of them).
REPLICA_SET_FIELDS = {"setName", "hosts", "primary", "me", "electionId", "setVersion", "lastWrite"}


@contextmanager
def router_clients(server: SandboxServer) -> Iterator[list[Client]]:
    """One client connected directly to each router."""
    clients: list[Client] = [
        MongoClient(f"mongodb://{server.host}:{port}/?directConnection=true")
        for port in server.ports
    ]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def test_the_uri_lists_every_router_and_nothing_else(sandbox_factory: SandboxFactory):
    server = sandbox_factory(routers=3)
    assert len(set(server.ports)) == 3
    hosts = ",".join(f"127.0.0.1:{port}" for port in server.ports)
    assert server.uri == f"mongodb://{hosts}/"  # no directConnection, no replicaSet


def test_hello_answers_as_a_mongos_and_the_driver_sees_a_sharded_cluster(
    sandbox_factory: SandboxFactory,
):
    server = sandbox_factory(routers=2)
    with router_clients(server) as clients:
        for client in clients:
            for name in ("hello", "isMaster"):
                reply = client.admin.command(name)
                assert reply["msg"] == "isdbgrid"
                assert reply["isWritablePrimary" if name == "hello" else "ismaster"] is True
                assert not REPLICA_SET_FIELDS & set(reply), reply
                assert "readOnly" not in reply  # a mongod's field
            status = client.admin.command("serverStatus")
            assert status["process"] == "mongos" and "repl" not in status
    with MongoClient(server.uri) as client:
        client.admin.command("ping")
        # The driver's monitors check each router on their own threads: wait until every
        # one has answered once (a router not yet checked is Unknown).
        deadline = time.monotonic() + 10
        while True:
            topology = client.topology_description
            servers = topology.server_descriptions()
            kinds = {description.server_type for description in servers.values()}
            if SERVER_TYPE.Unknown not in kinds or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert topology.topology_type == TOPOLOGY_TYPE.Sharded
        assert {f"{host}:{port}" for host, port in servers} == {
            f"127.0.0.1:{port}" for port in server.ports
        }
        assert kinds == {SERVER_TYPE.Mongos}


def test_routers_share_one_shard_and_its_change_stream(sandbox_factory: SandboxFactory):
    server = sandbox_factory(routers=2)
    with router_clients(server) as (first, second):
        with first.db.watch() as stream:
            second.db.items.insert_one({"_id": 1, "via": "second"})
            event = stream.next()
            token = stream.resume_token
        assert event["operationType"] == "insert" and event["fullDocument"]["via"] == "second"
        assert first.db.items.find_one({"_id": 1}) == {"_id": 1, "via": "second"}
        first.db.items.insert_one({"_id": 2})
        # A stream resumes through any router: the token names a point of the shared oplog.
        with second.db.watch(resume_after=token) as resumed:
            assert resumed.next()["documentKey"] == {"_id": 2}


def test_a_cursor_lives_on_the_router_that_opened_it(sandbox_factory: SandboxFactory):
    server = sandbox_factory(routers=2)
    with router_clients(server) as (owner, other):
        owner.db.items.insert_many([{"_id": i} for i in range(30)])
        opened = owner.db.command("find", "items", batchSize=10)
        cursor_id = opened["cursor"]["id"]
        assert cursor_id != 0
        with pytest.raises(OperationFailure) as failure:
            other.db.command("getMore", cursor_id, collection="items", batchSize=10)
        assert failure.value.code == ErrorCode.CURSOR_NOT_FOUND
        # killCursors through another router finds nothing to kill (the killCursors manual's
        # cursorsNotFound), and the cursor goes on where it was.
        killed = other.db.command("killCursors", "items", cursors=[cursor_id])
        assert killed["cursorsNotFound"] == [cursor_id] and killed["cursorsKilled"] == []
        more = owner.db.command("getMore", cursor_id, collection="items", batchSize=10)
        assert [doc["_id"] for doc in more["cursor"]["nextBatch"]] == list(range(10, 20))
        # A change stream's cursor too.
        stream = owner.db.command("aggregate", 1, pipeline=[{"$changeStream": {}}], cursor={})
        stream_id = stream["cursor"]["id"]
        with pytest.raises(OperationFailure) as failure:
            other.db.command("getMore", stream_id, collection="$cmd.aggregate", maxTimeMS=10)
        assert failure.value.code == ErrorCode.CURSOR_NOT_FOUND
        owner.db.command("getMore", stream_id, collection="$cmd.aggregate", maxTimeMS=10)


def test_the_driver_s_own_cursors_read_through_several_routers(sandbox_factory: SandboxFactory):
    """PyMongo sends a cursor's getMores to the address of its first reply, so its own cursors
    read whole results through a multi-router URI (the snapshot's reads rely on it)."""
    server = sandbox_factory(routers=2)
    with MongoClient(server.uri) as client:
        client.db.items.insert_many([{"_id": i} for i in range(1_000)])
        for _ in range(5):  # each getMore would have an even chance of the wrong router
            assert len(list(client.db.items.find(batch_size=50))) == 1_000
            batches = list(client.db.items.find_raw_batches(batch_size=100))
            assert len(batches) == 10


# -- the console command ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-2"])
def test_sandbox_refuses_a_router_count_that_is_not_positive(tmp_path: Any, value: str):
    result = run_console("sandbox", "--port", "0", "--routers", value, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: --routers: must be a positive")
    assert "Traceback" not in result.stderr


def test_sandbox_refuses_a_router_count_that_is_not_a_number(tmp_path: Any):
    result = run_console("sandbox", "--routers", "two", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "argument --routers: invalid int value: 'two'" in result.stderr
    assert "Traceback" not in result.stderr


def test_sandbox_refuses_routers_past_the_last_port(tmp_path: Any):
    result = run_console("sandbox", "--port", "65535", "--routers", "2", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: --routers: ")
    assert "Traceback" not in result.stderr


def test_sandbox_command_serves_a_sharded_cluster_at_one_uri():
    server = subprocess.Popen(
        console_command("sandbox", "--port", "0", "--routers", "2"),
        env=console_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once every router listens
        uri = line.rsplit(" ", 1)[-1].strip()
        assert uri.startswith("mongodb://127.0.0.1:") and uri.endswith("/"), line
        assert len(uri.removeprefix("mongodb://").rstrip("/").split(",")) == 2
        assert "directConnection" not in uri and "replicaSet" not in uri
        with MongoClient(uri, serverSelectionTimeoutMS=30_000) as client:
            client.db.items.insert_one({"_id": 1})
            assert client.db.items.find_one() == {"_id": 1}
            assert client.topology_description.topology_type == TOPOLOGY_TYPE.Sharded
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0
