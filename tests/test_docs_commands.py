"""The guides' commands, run as written (issue 16: docs that work verbatim).

A command block a guide marks with ``<!-- docs-test: NAME -->`` on the line before its fence is
read from the guide and run by bash here, with only these substitutions, which the guides name:

- the default ports (Azurite 10000-10002, MongoDB 27017) become free ports, so the test can run
  beside anything else on the machine;
- ``.venv/bin/`` becomes the bin folder of the Python running the tests (the same install
  ``scripts/bootstrap.sh`` makes; a worktree has no .venv of its own);
- ``$HOME`` is a temporary folder.

Long-running blocks (Azurite, the sandbox) start in their own process group and are stopped with
it when the test ends.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.console import CHECKOUT, console_env

GUIDES = [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^<!-- docs-test: ([\w-]+) -->\n```bash\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DEFAULT_PORTS = (10000, 10001, 10002, 27017)
VENV_BIN = Path(sys.executable).parent
BASE_PYTHON_BIN = Path(os.path.realpath(sys.executable)).parent  # where python3.13 is
STARTUP_SECONDS = 60


def guide_blocks() -> dict[str, tuple[Path, str]]:
    blocks: dict[str, tuple[Path, str]] = {}
    for guide in GUIDES:
        for name, text in BLOCK.findall(guide.read_text()):
            assert name not in blocks, f"docs-test block {name} twice"
            blocks[name] = (guide, text)
    return blocks


BLOCKS = guide_blocks()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def command(name: str, ports: dict[int, int]) -> str:
    """The block as the guide writes it, with the substitutions the module docstring lists."""
    text = BLOCKS[name][1]
    for default, port in ports.items():
        text = re.sub(rf"\b{default}\b", str(port), text)
    return text.replace(".venv/bin/", f"{VENV_BIN}/")


def wait_for_port(port: int, process: subprocess.Popen[str], name: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"{name} exited {process.returncode} before listening:\n{output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # polling a condition (the port) with a deadline
    pytest.fail(f"{name} did not listen on {port} within {STARTUP_SECONDS} s")


def stop(process: subprocess.Popen[str]) -> str:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output or ""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def shell_env(home: Path, **extra: str) -> dict[str, str]:
    env = console_env({"HOME": str(home), **extra})
    # Settings the user exports in a block are the block's to set, not the developer's shell's.
    for name in ("MONGODB_COLLECTIONS", "AZURE_AUTH", "QUEUE_STORAGE"):
        env.pop(name, None)
    return env


def start(name: str, ports: dict[int, int], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", command(name, ports)],
        cwd=CHECKOUT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: npm, node and the sandbox stop together
    )


def run(name: str, ports: dict[int, int], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command(name, ports)],
        cwd=CHECKOUT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_guides_mark_the_commands_this_module_runs() -> None:
    assert {"azurite", "sandbox", "sample-data", "local-run", "vm-install"} <= set(BLOCKS)


@pytest.fixture
def local_services(home: Path) -> Iterator[dict[int, int]]:
    """docs/deploy.md's terminals 1 and 2: Azurite by `npm run azurite`, and the sandbox."""
    ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
    env = shell_env(home)
    azurite = start("azurite", ports, env)
    sandbox = start("sandbox", ports, env)
    try:
        for port in ports.values():
            wait_for_port(port, sandbox if port == ports[27017] else azurite, f"port {port}")
        yield ports
    finally:
        stop(sandbox)
        stop(azurite)


def test_the_local_command_line_run_against_azurite_works_as_written(
    local_services: dict[int, int], home: Path
) -> None:
    env = shell_env(home)
    data = run("sample-data", local_services, env)
    assert data.returncode == 0, data.stderr
    result = run("local-run", local_services, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shop.orders" in result.stdout
    assert "conforms" in result.stdout
    assert (home / ".azurite").is_dir()  # Azurite kept its data where the guide said


def test_the_vm_install_gives_the_command_line_without_the_test_tools(tmp_path: Path) -> None:
    """docs/deploy.md's VM install, in a copy of the checkout (it makes .venv beside the code)."""
    copy = tmp_path / "mongo-fabric-mirror"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        source = CHECKOUT / name
        if source.is_file() and not source.is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    env = shell_env(tmp_path, PATH=f"{BASE_PYTHON_BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH")  # the installed command must run from the copy's own .venv
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", BLOCKS["vm-install"][1]],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cli = subprocess.run(
        [str(copy / ".venv/bin/mongo-fabric-mirror"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    for tool in ("pytest", "mypy", "ruff"):  # runtime only: no test tools on a production VM
        assert not (copy / ".venv/bin" / tool).exists(), tool
