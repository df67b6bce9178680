"""The sandbox server itself: framing, malformed input, the foreground entry point, throughput.

Sandbox-only (skipped under MONGODB_TEST_URI): these talk raw wire protocol to private servers.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from typing import Any

import bson
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from mongodb_sandbox import SandboxServer
from mongodb_sandbox.errors import ErrorCode
from tests.fixtures.mongodb import SandboxFactory, sandbox_only

pytestmark = sandbox_only


def exchange(server: SandboxServer, message: bytes) -> bytes:
    """Send one raw message and read one raw reply (empty when the server hangs up)."""
    with socket.create_connection((server.host, server.port), timeout=5) as conn:
        conn.sendall(message)
        header = conn.recv(16, socket.MSG_WAITALL)
        if len(header) < 16:
            return b""
        length = struct.unpack("<i", header[:4])[0]
        return header + conn.recv(length - 16, socket.MSG_WAITALL)


def op_msg(body: bytes, op_code: int = 2013) -> bytes:
    payload = b"\x00\x00\x00\x00\x00" + body
    return struct.pack("<iiii", 16 + len(payload), 7, 0, op_code) + payload


def reply_document(reply: bytes) -> dict[str, Any]:
    op_code = struct.unpack("<i", reply[12:16])[0]
    offset = 21 if op_code == 2013 else 36
    return bson.decode(reply[offset:])


def assert_still_serving(server: SandboxServer) -> None:
    with MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
        assert client.admin.command("ping")["ok"] == 1.0


def test_invalid_bson_gets_an_error_reply(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    reply = exchange(server, op_msg(b"\x0c\x00\x00\x00\x10bad"))
    document = reply_document(reply)
    assert document["ok"] == 0.0 and document["code"] == ErrorCode.INVALID_BSON
    assert struct.unpack("<i", reply[8:12])[0] == 7  # responseTo echoes the request id
    assert_still_serving(server)


def test_unknown_opcode_and_command_get_error_replies(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    assert reply_document(exchange(server, op_msg(bson.encode({"x": 1}), 2002)))["ok"] == 0.0
    unknown = reply_document(exchange(server, op_msg(bson.encode({"noSuch": 1, "$db": "a"}))))
    assert (unknown["ok"], unknown["code"]) == (0.0, ErrorCode.COMMAND_NOT_FOUND)
    with MongoClient(server.uri) as client, pytest.raises(OperationFailure) as raised:
        client.db.command("find", "c", filter={"$where": "1"})
    assert raised.value.code == ErrorCode.COMMAND_NOT_SUPPORTED


def test_nonsense_length_closes_only_that_connection(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    assert exchange(server, struct.pack("<iiii", 2**30, 1, 0, 2013)) == b""
    assert exchange(server, struct.pack("<iiii", 3, 1, 0, 2013)) == b""
    assert_still_serving(server)


def test_legacy_op_query_handshake(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    query = (struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1)) + bson.encode(
        {"isMaster": 1}
    )
    message = struct.pack("<iiii", 16 + len(query), 9, 0, 2004) + query
    reply = exchange(server, message)
    assert struct.unpack("<i", reply[12:16])[0] == 1  # OP_REPLY
    document = reply_document(reply)
    assert document["ismaster"] is True and document["setName"] == "sandbox"


def test_serve_forever_runs_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"from mongodb_sandbox import serve_forever; serve_forever({port}, 100)"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        with MongoClient(line.split()[-1], serverSelectionTimeoutMS=5000) as client:
            client.db.items.insert_one({"_id": 1})
            assert client.db.items.find_one() == {"_id": 1}
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
