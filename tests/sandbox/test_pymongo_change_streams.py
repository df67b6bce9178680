"""PyMongo's own change-stream tests, run unpatched against the sandbox.

The tests are those of PyMongo's source distribution of exactly the runtime version
(`test/test_change_stream.py`, which also runs the unified change-stream spec files under
`test/change_streams/unified`), taken from the package index and cached under `.cache/` (ignored).
They run in a subprocess with their own harness (`test/__init__.py`), pointed at a private sandbox
through the harness's own variables DB_IP and DB_PORT. Nothing of the harness is changed; only the
options of its `pyproject.toml` that need the pytest-asyncio plugin (unused by these synchronous
tests) are left out: `--strict-config` and the warning about the unknown option.

Every test that fails is listed, with why it does not matter to the mirror, in
`mongodb_sandbox/KNOWN_DRIVER_TEST_FAILURES.txt`; the set of failures must equal that list, so a
new failure and a fixed one both show here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import pytest

from tests.fixtures.mongodb import SandboxFactory

REPO = Path(__file__).resolve().parents[2]
SDIST_CACHE = REPO / ".cache" / "pymongo-sdist"
KNOWN_FAILURES = REPO / "mongodb_sandbox" / "KNOWN_DRIVER_TEST_FAILURES.txt"
SUITE = "test/test_change_stream.py"
# 155 tests; 26 are skipped by the suite itself against any 7.0 replica set (16 need a 4.2
# server, 2 need 8.1, 5 need another topology or a pre-4.4 server, 3 skip themselves for
# cluster-wide streams), so 129 can pass, and all do. What fails is listed in KNOWN_FAILURES.
MIN_PASSED = 129
# A hanging test (an event the sandbox never emits) fails after this instead of stalling the run.
PER_TEST_TIMEOUT_S = 10
DOWNLOAD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 600


@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def pymongo_sdist() -> Path:
    """The unpacked source distribution of the runtime PyMongo, downloaded once into the cache."""
    version = pymongo.version
    unpacked = SDIST_CACHE / f"pymongo-{version}"
    if (unpacked / SUITE).is_file():
        return unpacked
    SDIST_CACHE.mkdir(parents=True, exist_ok=True)
    archive = SDIST_CACHE / f"pymongo-{version}.tar.gz"
    if not archive.is_file():
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"pymongo=={version}",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
            str(SDIST_CACHE),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
        )
        if done.returncode != 0 or not archive.is_file():
            # A missing suite is a failure, never a skip: the step proves nothing without it.
            pytest.fail(
                f"could not download PyMongo {version}'s source distribution from the package "
                f"index (pip exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
    with tarfile.open(archive) as tar:
        tar.extractall(SDIST_CACHE, filter="data")
    if not (unpacked / SUITE).is_file():
        pytest.fail(f"{archive.name} holds no {SUITE}")
    return unpacked


def known_failures() -> dict[str, str]:
    """Test id -> why its failure does not matter to the mirror (`id | reason` lines)."""
    listed: dict[str, str] = {}
    for line in KNOWN_FAILURES.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        test_id, _, reason = line.partition(" | ")
        assert reason.strip(), f"{KNOWN_FAILURES.name}: no reason given for {test_id}"
        listed[test_id.strip()] = reason.strip()
    return listed


def read_junit(path: Path) -> Outcome:
    outcome = Outcome()
    # The report is the one our own subprocess just wrote, not untrusted input.
    for case in ET.parse(path).iter("testcase"):  # noqa: S314
        test_id = f"{case.get('classname', '').rpartition('.')[2]}::{case.get('name')}"
        failure = next((c for c in case if c.tag in ("failure", "error")), None)
        if failure is not None:
            outcome.failed[test_id] = (failure.get("message") or "").splitlines()[0][:200]
        elif any(c.tag == "skipped" for c in case):
            outcome.skipped.append(test_id)
        else:
            outcome.passed.append(test_id)
    return outcome


def run_suite(sdist: Path, host: str, port: int, work: Path) -> Outcome:
    # Run from a folder holding only the suite and its pytest configuration, so `import pymongo`
    # is the runtime PyMongo (with its C extensions), not the sources beside the tests.
    (work / "test").symlink_to(sdist / "test", target_is_directory=True)
    (work / "pyproject.toml").symlink_to(sdist / "pyproject.toml")
    report = work / "junit.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=-ra --strict-markers",
        "-m",
        "default or default_async",
        "-W",
        "ignore::pytest.PytestConfigWarning",
        "--timeout",
        str(PER_TEST_TIMEOUT_S),
        "-o",
        "log_cli_level=WARNING",
        "-q",
        f"--junitxml={report}",
        SUITE,
    ]
    env = {**os.environ, "DB_IP": host, "DB_PORT": str(port)}
    done = subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert report.is_file(), (
        f"the suite wrote no report:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return read_junit(report)


def test_pymongo_change_stream_tests_pass_against_the_sandbox(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    sdist = pymongo_sdist()
    server = sandbox_factory()
    started = time.monotonic()
    outcome = run_suite(sdist, server.host, server.port, tmp_path)
    elapsed = time.monotonic() - started
    listed = known_failures()
    summary = (
        f"PyMongo {pymongo.version}: {len(outcome.passed)} passed, {len(outcome.failed)} failed, "
        f"{len(outcome.skipped)} skipped in {elapsed:.0f} s"
    )
    new = {k: v for k, v in outcome.failed.items() if k not in listed}
    fixed = sorted(set(listed) - set(outcome.failed))
    assert not new, f"{summary}; failures not in {KNOWN_FAILURES.name}: {new}"
    assert not fixed, f"{summary}; listed in {KNOWN_FAILURES.name} but passing now: {fixed}"
    assert len(outcome.passed) >= MIN_PASSED, summary
