"""`mongo-fabric-mirror demo` as a real process: the sandbox, the live mirror under a generator,
the drain, verify and inspect, with small numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL = ("--orders", "300", "--seconds", "2", "--rate", "60")


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """This checkout's CLI (the installed console script may point at another checkout)."""
    clean = {k: v for k, v in os.environ.items() if k not in {"LANDING_ZONE", "STATE_STORE"}}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def delta_orders(stdout: str) -> int:
    """The orders the DuckDB query over the Delta table counted, over every status."""
    rows = re.findall(r"^  (\w+) \| (\d+) \| ", stdout, re.MULTILINE)
    assert {"new", "paid", "shipped"} <= {status for status, _ in rows}, stdout
    return sum(int(count) for _, count in rows)


def replayed_orders(stdout: str) -> int:
    line = re.search(r"^demo\.orders: conforms; \d+ files, (\d+) rows replayed", stdout, re.M)
    assert line is not None, stdout
    return int(line[1])


def applied(stderr: str) -> dict[str, int]:
    line = re.search(r"generator: done, [\d,]+ changes applied \((?P<counts>[^)]*)\)", stderr)
    assert line is not None, stderr
    counts = re.findall(r"([\d,]+) (\w+)s", line["counts"])
    return {operation: int(count.replace(",", "")) for count, operation in counts}


def test_demo_mirrors_live_changes_then_verify_passes_and_inspect_conforms(tmp_path: Path):
    result = demo(*SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every kind of change was applied while the mirror ran, and the mirror read them.
    changes = applied(result.stderr)
    assert set(changes) == {"insert", "update", "replace", "delete"}
    assert all(count > 0 for count in changes.values()), changes
    events = re.search(r"the mirror read ([\d,]+) change events", result.stdout)
    assert events is not None, result.stdout
    assert int(events[1].replace(",", "")) > 0
    # verify replayed both tables and found them equal to the collections; inspect agrees.
    assert "demo.orders: equal; " in result.stdout
    assert "demo.returns: equal; " in result.stdout
    assert "verify: all 2 tables equal" in result.stdout
    assert "demo.orders: conforms; " in result.stdout
    assert "demo.returns: conforms; " in result.stdout
    assert "mirror: running" in result.stderr
    assert "draining what is left" in result.stderr
    folder = tmp_path / "demo-landing-zone" / "demo.schema" / "orders"
    # The snapshot's file and change files, applied by the replicator and moved.
    assert len(list(folder.glob("_ProcessedFiles/*.parquet"))) >= 2
    assert not list(folder.glob("*.parquet"))
    assert "DuckDB over the Delta table" in result.stdout
    assert delta_orders(result.stdout) == replayed_orders(result.stdout)
    assert (tmp_path / "demo-tables" / "demo" / "orders" / "_delta_log").is_dir()

    again = demo(*SMALL, cwd=tmp_path)  # a fresh sandbox: the previous demo's tables go first
    assert again.returncode == 0, again.stdout + again.stderr
    assert "removed the previous demo's demo.orders, demo.returns" in again.stderr
    assert "verify: all 2 tables equal" in again.stdout
    # The rebuilt folders replace the previous Delta tables: a new table of the new sandbox.
    assert delta_orders(again.stdout) == replayed_orders(again.stdout)

    # The hints run as printed, from the folder the demo ran in, in a shell whose PATH does not
    # hold the venv (issue 16: "mongo-fabric-mirror" alone is not found there).
    for hint in ("Look again: ", "Replicate again: "):
        (line,) = [text for text in again.stdout.splitlines() if hint in text]
        command = line.split(hint, 1)[1]
        shell = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        hinted = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=shell, capture_output=True, text=True
        )
        assert hinted.returncode == 0, f"{command}\n{hinted.stdout}{hinted.stderr}"


def test_demo_rejects_a_nonsense_size_before_starting(tmp_path: Path):
    result = demo("--rate", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: --rate")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "demo-landing-zone").exists()
