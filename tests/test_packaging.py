"""The deployment files agree with the project: requirements, settings, host configuration."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from shared.config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_match_pyproject_dependencies():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == pyproject["project"]["dependencies"]


def test_local_settings_example_lists_every_setting():
    example = json.loads((ROOT / "local.settings.json.example").read_text())
    values = example["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert {spec.name for spec in SETTINGS} <= set(values)


def test_host_queue_encoding_matches_what_the_engine_sends():
    from shared.pipeline.fanout import MESSAGE_ENCODING

    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["queues"]["messageEncoding"] == MESSAGE_ENCODING
