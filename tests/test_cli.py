"""The console script as a real process: exit codes, messages, nothing written on errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("mongo-fabric-mirror")


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"LANDING_ZONE", "STATE_STORE"}}
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_inspect_exits_non_zero_and_names_the_defect(tmp_path: Path):
    folder = tmp_path / "lz" / "orders"
    folder.mkdir(parents=True)
    (folder / "00000000000000000001.parquet").write_bytes(b"")
    result = run("inspect", "--landing-zone", str(tmp_path / "lz"), cwd=tmp_path)
    assert result.returncode == 1
    assert "orders: DOES NOT CONFORM" in result.stdout
    assert "_metadata.json is missing" in result.stdout
    assert "zero-byte file 1" in result.stdout


def test_inspect_unknown_table_is_a_clear_error(tmp_path: Path):
    (tmp_path / "lz").mkdir()
    result = run("inspect", "--landing-zone", str(tmp_path / "lz"), "--table", "nope", cwd=tmp_path)
    assert result.returncode == 1
    expected = f"error: no table 'nope' in local folder {tmp_path / 'lz'}"
    assert result.stderr.splitlines()[-1] == expected


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["demo", "--landing-zone", "gopher://host/lz"], "LANDING_ZONE"),
        (["demo", "--landing-zone", "https://onelake.dfs.fabric.microsoft.com/ws"], "LANDING_ZONE"),
        (["demo", "--state-store", "mysql://x"], "STATE_STORE"),
        (["--log-level", "CHATTY", "demo"], "LOG_LEVEL"),
        (["inspect"], "LANDING_ZONE"),
    ],
)
def test_bad_configuration_fails_fast_without_traceback_or_writes(
    tmp_path: Path, args: list[str], setting: str
):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"configuration error: {setting}")
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_service_principal_secret_fails_fast(tmp_path: Path):
    env = {
        "AZURE_AUTH": "service-principal",
        "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    }
    result = run("inspect", "--landing-zone", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "AZURE_TENANT_ID" in result.stderr


def test_sandbox_command_serves_until_interrupted(tmp_path: Path):
    import signal
    import socket

    from pymongo import MongoClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(SCRIPT), "sandbox", "--port", str(port), "--oplog-size", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        with MongoClient(uri, serverSelectionTimeoutMS=30_000) as client:
            assert client.admin.command("ping")["ok"] == 1.0
            client.db.items.insert_one({"_id": 1})
            assert client.db.items.find_one() == {"_id": 1}
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0
    assert f"127.0.0.1:{port}" in out


def test_sandbox_command_refuses_a_bad_oplog_size(tmp_path: Path):
    result = run("sandbox", "--port", "0", "--oplog-size", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: --oplog-size")


def test_unreachable_mongodb_is_one_line_without_traceback(tmp_path: Path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"mongodb://user:hunter2@127.0.0.1:{port}/?serverSelectionTimeoutMS=500"
    result = run(
        "snapshot",
        "--mongodb-uri",
        uri,
        "--database",
        "shop",
        "--landing-zone",
        str(tmp_path / "lz"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr
    assert f"cannot reach MongoDB at mongodb://***@127.0.0.1:{port}" in result.stderr
