"""The console script as a real process: exit codes, messages, nothing written on errors."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.fixtures.console import console_command, console_env, run_console

PR_CAPBSET_DROP = 24  # prctl(2)
CAP_DAC_OVERRIDE = 1  # capabilities(7): root writes regardless of permission bits


def without_root_override() -> None:
    """In the child before exec: as root, stop ignoring permission bits, as any user would."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    return run_console(*args, cwd=cwd, env=env, timeout=120, preexec_fn=preexec_fn)


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
    assert result.returncode == 2
    expected = f"configuration error: --table: no table 'nope' in local folder {tmp_path / 'lz'}"
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
        console_command("sandbox", "--port", str(port), "--oplog-size", "5"),
        env=console_env(),
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
    # One short line: the cause, not PyMongo's topology dump.
    assert result.stderr.splitlines() == [
        f"error: cannot reach MongoDB at mongodb://***@127.0.0.1:{port}/"
        f"?serverSelectionTimeoutMS=500: ServerSelectionTimeoutError: 127.0.0.1:{port}: "
        "[Errno 111] Connection refused"
    ]
    assert list(tmp_path.iterdir()) == []


# --- One line for every bad input; nothing written before the settings and the selection validate.


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its content: to prove a failed run changed nothing."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def shop(mongo_client: MongoClient, mongo_db_name: str) -> str:
    mongo_client[mongo_db_name].orders.insert_many([{"_id": i, "n": i} for i in range(20)])
    return mongo_db_name


def snapshot(
    tmp_path: Path, uri: str, database: str | None, *extra: str, **options: Any
) -> subprocess.CompletedProcess[str]:
    database_flag = ["--database", database] if database else []
    return run(
        "snapshot",
        "--mongodb-uri",
        uri,
        *database_flag,
        "--workers",
        "1",
        *extra,
        cwd=tmp_path,
        **options,
    )


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, start: str) -> None:
    """Exit ``code`` and, besides log lines, exactly one line on stderr, starting with ``start``."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start), result.stderr


@pytest.fixture
def mirrored(tmp_path: Path, mongodb_uri: str, shop: str) -> Path:
    """``tmp_path`` holding a landing zone ``lz`` and ``state.db`` from one good snapshot."""
    good = snapshot(tmp_path, mongodb_uri, shop, "--landing-zone", "lz", "--state", "state.db")
    assert good.returncode == 0, good.stderr
    return tmp_path


@pytest.mark.parametrize(
    ("landing_zone", "message"),
    [("afile", "afile is a file, not a folder"), ("afile/lz", "afile/lz is inside")],
)
def test_a_landing_zone_that_is_a_file_or_under_one_writes_nothing(
    tmp_path: Path, mongodb_uri: str, shop: str, landing_zone: str, message: str
):
    (tmp_path / "afile").write_text("not a folder")
    result = snapshot(
        tmp_path, mongodb_uri, shop, "--landing-zone", landing_zone, "--state", "state.db"
    )
    assert_one_line(result, 2, "configuration error: LANDING_ZONE: ")
    assert message in result.stderr
    assert tree(tmp_path) == {"afile": b"not a folder"}  # no state file either


def test_a_read_only_landing_zone_fails_before_anything_is_written(
    mirrored: Path, mongodb_uri: str, shop: str, mongo_client: MongoClient
):
    mongo_client[shop].orders.insert_one({"_id": 100})  # something new to publish
    before = tree(mirrored)
    os.chmod(mirrored / "lz", 0o500)
    try:
        result = snapshot(
            mirrored,
            mongodb_uri,
            shop,
            "--landing-zone",
            "lz",
            "--state",
            "fresh.db",
            preexec_fn=without_root_override,
        )
    finally:
        os.chmod(mirrored / "lz", 0o700)
    assert_one_line(result, 2, f"configuration error: LANDING_ZONE: {mirrored / 'lz'} is not")
    assert tree(mirrored) == before


def test_a_read_only_state_folder_fails_before_anything_is_written(
    tmp_path: Path, mongodb_uri: str, shop: str
):
    (tmp_path / "state").mkdir(mode=0o500)
    result = snapshot(
        tmp_path,
        mongodb_uri,
        shop,
        "--landing-zone",
        "lz",
        "--state",
        "state/state.db",
        preexec_fn=without_root_override,
    )
    assert_one_line(result, 2, "configuration error: STATE_STORE: state/state.db cannot be ")
    assert [path.name for path in tmp_path.rglob("*")] == ["state"]


def test_a_garbage_state_file_is_named_and_left_alone(mirrored: Path, mongodb_uri: str, shop: str):
    (mirrored / "garbage.db").write_bytes(b"this is no database, just some bytes\n" * 200)
    before = tree(mirrored)
    result = snapshot(mirrored, mongodb_uri, shop, "--landing-zone", "lz", "--state", "garbage.db")
    assert_one_line(result, 1, "error: state store SQLite file garbage.db is damaged")
    assert "restore the file from a backup" in result.stderr
    assert tree(mirrored) == before


def test_a_database_that_does_not_exist_is_an_error_not_an_empty_snapshot(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str
):
    result = snapshot(tmp_path, mongodb_uri, mongo_db_name, "--landing-zone", "lz")
    assert_one_line(
        result, 2, f"configuration error: MONGODB_DATABASE: no database '{mongo_db_name}'"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("named", "extra", "setting"),
    [
        (False, [], "MONGODB_DATABASE"),
        (True, ["--collections", "orders,nope"], "MONGODB_COLLECTIONS"),
    ],
)
def test_nothing_is_written_before_the_selection_validates(
    tmp_path: Path, mongodb_uri: str, shop: str, named: bool, extra: list[str], setting: str
):
    # The state would go to the default .mirror-state/state.db below tmp_path.
    result = snapshot(
        tmp_path, mongodb_uri, shop if named else None, "--landing-zone", "lz", *extra
    )
    assert_one_line(result, 2, f"configuration error: {setting}: ")
    assert list(tmp_path.iterdir()) == []


def test_collections_named_like_paths_get_escaped_folders_and_do_not_stop_the_others(
    tmp_path: Path, mongodb_uri: str, shop: str, mongo_client: MongoClient
):
    mongo_client[shop]["a/b"].insert_one({"_id": "slash"})
    mongo_client[shop]["c\\d"].insert_one({"_id": "backslash"})
    mongo_client[shop]["a%2Fb"].insert_one({"_id": "looks escaped"})  # must not collide
    result = snapshot(tmp_path, mongodb_uri, shop, "--landing-zone", "lz", "--state", "s.db")
    assert result.returncode == 0, result.stderr
    folders = sorted(path.name for path in (tmp_path / "lz" / f"{shop}.schema").iterdir())
    assert folders == ["a%252Fb", "a%2Fb", "c%5Cd", "orders"]
    inspected = run("inspect", "--landing-zone", "lz", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stdout
    assert f"{shop}.orders: conforms; 1 files, 20 rows replayed" in inspected.stdout
    by_collection = run("inspect", "--landing-zone", "lz", "--table", "a/b", cwd=tmp_path)
    assert by_collection.returncode == 0
    assert by_collection.stdout.splitlines() == [
        f"{shop}.a/b (folder a%2Fb): conforms; 1 files, 1 rows replayed"
    ]


@pytest.mark.parametrize(
    ("make", "code", "start"),
    [
        (lambda root: None, 2, "configuration error: LANDING_ZONE: {lz} does not exist"),
        (lambda root: root.write_text("x"), 2, "configuration error: LANDING_ZONE: {lz} is a file"),
        (lambda root: root.mkdir(), 1, "error: no tables in local folder {lz}: nothing to inspect"),
    ],
    ids=["missing", "file", "empty"],
)
def test_inspect_never_passes_a_landing_zone_without_tables(
    tmp_path: Path, make: Callable[[Path], None], code: int, start: str
):
    make(tmp_path / "lz")
    result = run("inspect", "--landing-zone", "lz", "--log-level", "warning", cwd=tmp_path)
    assert result.stdout == ""
    assert_one_line(result, code, start.format(lz=tmp_path / "lz"))


def test_sandbox_on_a_port_in_use_is_one_line(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("sandbox", "--port", str(port), cwd=tmp_path)
    assert_one_line(result, 2, f"configuration error: --port: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize("command", ["demo", "inspect", "snapshot", "sandbox"])
def test_log_level_is_accepted_after_every_command(tmp_path: Path, command: str):
    result = run(command, "--log-level", "LOUD", cwd=tmp_path)
    assert_one_line(result, 2, "configuration error: LOG_LEVEL: ")


@pytest.mark.parametrize(
    ("before", "after", "env", "shown"),
    [
        ([], [], {"LOG_LEVEL": "debug"}, True),
        ([], ["--log-level", "info"], {}, True),
        (["--log-level", "Info"], [], {}, True),
        (["--log-level", "info"], ["--log-level", "error"], {}, False),  # the later flag wins
    ],
)
def test_log_level_in_any_case_from_the_environment_or_either_side_of_the_command(
    tmp_path: Path, before: list[str], after: list[str], env: dict[str, str], shown: bool
):
    (tmp_path / "lz").mkdir()
    result = run(*before, "inspect", "--landing-zone", "lz", *after, cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert (" INFO shared.pipeline.wiring: landing zone" in result.stderr) == shown
    assert result.stderr.splitlines()[-1].startswith("error: no tables in local folder")


def test_log_lines_never_run_on_after_the_progress_line_on_a_terminal(
    tmp_path: Path, mongodb_uri: str, mongo_client: MongoClient, mongo_db_name: str
):
    """Progress redraws one terminal line in place; a log line (DEBUG: many, from the workers
    too) must replace it, never continue it. Results go to stdout, apart from both."""
    import pty
    import termios
    import threading

    mongo_client[mongo_db_name].orders.insert_many([{"_id": i} for i in range(4000)])
    master, terminal = pty.openpty()
    modes = termios.tcgetattr(terminal)
    modes[1] &= ~termios.ONLCR  # keep "\n" as written, so "\r" means only what the program meant
    termios.tcsetattr(terminal, termios.TCSANOW, modes)
    arguments = [mongo_db_name, "--landing-zone", "lz", "--partitions", "4", "--workers", "2"]
    process = subprocess.Popen(
        console_command("snapshot", "--mongodb-uri", mongodb_uri, "--database", *arguments),
        cwd=tmp_path,
        env=console_env({"LOG_LEVEL": "DEBUG"}),
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    shown = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    out, _ = process.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(master)
    assert process.returncode == 0
    assert "snapshot published 4,000 documents" in out
    assert " docs (" not in out and " DEBUG " not in out
    # What a terminal shows on each line: the text after the line's last carriage return.
    visible = [line.rsplit("\r", 1)[-1] for line in shown.decode().split("\n")]
    assert any(" DEBUG " in line for line in visible)
    assert any(" docs (" in line for line in visible)  # running, or done at the end
    glued = [line for line in visible if " docs (" in line and LOG_LINE.search(line)]
    assert glued == []


def test_resync_of_a_table_nobody_mirrors_is_a_clear_error_not_a_success(tmp_path: Path):
    result = run(
        "resync",
        "--table",
        "shop.ordrs",
        "--landing-zone",
        str(tmp_path / "lz"),
        "--state",
        str(tmp_path / "state.db"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"configuration error: --table: no table shop.ordrs in local folder {tmp_path / 'lz'} "
        f"or SQLite file {tmp_path / 'state.db'}"
    )


def test_status_of_a_state_file_that_does_not_exist_creates_nothing(tmp_path: Path):
    result = run("status", "--state", str(tmp_path / "nowhere" / "state.db"), cwd=tmp_path)
    assert result.returncode == 2
    assert "STATE_STORE" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "nowhere").exists()


PROGRESS = re.compile(r"orders: ([\d,]+)/([\d,]+) docs \(\d+%\)")


def test_snapshot_progress_moves_while_a_partition_reads_and_never_says_0_docs_per_second(
    tmp_path: Path, mongodb_uri: str, mongo_client: MongoClient, mongo_db_name: str
):
    """#16 item 10: with the default FILE_ROWS a partition publishes one file at its end, so
    progress from published files alone sat at 0 until it jumped to 100%; documents read show
    in between (cursor batches of 10,000). A finished table shows no "0 docs/s"."""
    import pty
    import threading

    total = 90_001  # under FILE_ROWS (100,000): one file, at the end
    mongo_client[mongo_db_name].orders.insert_many(
        [{"_id": i, "n": "x" * 1000} for i in range(total)]
    )
    master, terminal = pty.openpty()  # a terminal: progress redrawn every second
    arguments = [mongo_db_name, "--landing-zone", "lz", "--partitions", "1", "--workers", "1"]
    process = subprocess.Popen(
        console_command("snapshot", "--mongodb-uri", mongodb_uri, "--database", *arguments),
        cwd=tmp_path,
        env=console_env(),
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    shown = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    out, _ = process.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(master)
    assert process.returncode == 0, shown.decode()
    assert f"snapshot published {total:,} documents" in out
    lines = [line for line in re.split(r"[\r\n]", shown.decode()) if PROGRESS.search(line)]
    counts = [int(PROGRESS.search(line)[1].replace(",", "")) for line in lines]  # type: ignore[index]
    assert any(0 < count < total for count in counts), lines
    assert counts[-1] == total and "done" in lines[-1], lines
    assert not [line for line in lines if " 0 docs/s" in line or " 0.0 docs/s" in line], lines
