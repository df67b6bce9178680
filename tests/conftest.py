"""Session-wide fixtures: real services (Azurite, the MongoDB sandbox) start once per session."""

import dataclasses
import os

import pytest
from hypothesis import settings

from shared import config

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.fault_proxy",
    "tests.fixtures.mongodb",
    "tests.pipeline.in_process",  # make_context, for the tests that drive the mirror in-process
]

# CI must judge the change, not the luck of the draw: there, property tests use a fixed seed.
# Locally they explore new examples on every run (and Hypothesis keeps the failures it finds).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# No Fabric runs here to drop a rebuilt table, and the suite rebuilds tables in many places: by
# default it does not wait for one (REBUILD_DROP_WAIT_SECONDS 0). The tests of that wait set it
# (tests/pipeline/test_rebuild_drop.py); shared/config.py keeps the production default.
DROP_WAIT = "REBUILD_DROP_WAIT_SECONDS"


@pytest.fixture(autouse=True)
def _no_wait_for_a_fabric_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(config.SPECS[DROP_WAIT], default="0")
    monkeypatch.setitem(config.SPECS, DROP_WAIT, spec)
    monkeypatch.setattr(
        config, "SETTINGS", tuple(spec if s.name == DROP_WAIT else s for s in config.SETTINGS)
    )
    if DROP_WAIT not in os.environ:  # processes a test starts (console_env copies it)
        monkeypatch.setenv(DROP_WAIT, "0")
