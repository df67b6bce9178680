"""Settings: every user mistake fails fast with the setting's name, and no secret is echoed."""

from __future__ import annotations

import logging
import os

import pytest

from shared.config import load_settings, parse_collections
from shared.errors import ConfigError

SECRET = "s3cr3t-value-never-printed"


def settings_error(**env: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert SECRET not in str(caught.value)
    return caught.value


def test_defaults_apply():
    settings = load_settings({"LANDING_ZONE": "/tmp/lz"})
    assert settings.get("STATE_STORE") == ".mirror-state/state.db"
    assert settings.collections() is None
    assert settings.auth.mode == "default"


def test_file_sizes_have_their_defaults_and_take_values():
    defaults = load_settings({})
    assert (defaults.file_rows, defaults.file_bytes) == (100_000, 128 * 1024**2)
    chosen = load_settings({"FILE_ROWS": "500", "FILE_BYTES": "4096"})
    assert (chosen.file_rows, chosen.file_bytes) == (500, 4096)


def test_the_column_budget_defaults_under_the_sql_endpoint_limit_and_takes_values():
    assert load_settings({}).column_budget == 1000  # T-SQL tables stop at 1,024 columns
    assert load_settings({"COLUMN_BUDGET": "64"}).column_budget == 64


@pytest.mark.parametrize(("cores", "workers"), [(3, 3), (None, 1)])
def test_auto_workers_are_one_per_core(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, workers: int
):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    settings = load_settings({})
    assert settings.workers == workers
    assert settings.partitions is None  # the planner sizes them per collection


def test_chosen_workers_and_partitions_are_kept(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    settings = load_settings({"SNAPSHOT_WORKERS": "2", "SNAPSHOT_PARTITIONS": "8"})
    assert (settings.workers, settings.partitions) == (2, 8)


def test_a_setting_that_may_be_auto_is_read_through_its_accessor():
    settings = load_settings({"SNAPSHOT_WORKERS": "2"})
    with pytest.raises(ValueError, match="SNAPSHOT_WORKERS"):
        settings.integer("SNAPSHOT_WORKERS")
    assert settings.integer("MONGODB_RETRY_SECONDS") == 60


def test_cli_values_override_environment():
    settings = load_settings({"LOG_LEVEL": "DEBUG"}, {"LOG_LEVEL": "ERROR", "LANDING_ZONE": None})
    assert settings.get("LOG_LEVEL") == "ERROR"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"LANDING_ZONE": "ftp://example.com/x"}, "LANDING_ZONE"),
        ({"LANDING_ZONE": "https://example.com/not/onelake"}, "LANDING_ZONE"),
        ({"LANDING_ZONE": f"AccountName=a;AccountKey={SECRET}"}, "LANDING_ZONE"),
        ({"STATE_STORE": "postgres://db/state"}, "STATE_STORE"),
        ({"AZURE_AUTH": "password"}, "AZURE_AUTH"),
        ({"AZURE_CLIENT_ID": "not-a-guid"}, "AZURE_CLIENT_ID"),
        ({"MONGODB_URI": f"http://user:{SECRET}@host"}, "MONGODB_URI"),
        ({"MONGODB_DATABASE": "bad/name"}, "MONGODB_DATABASE"),
        ({"MONGODB_COLLECTIONS": "[1, 2]"}, "MONGODB_COLLECTIONS"),
        ({"MONGODB_COLLECTIONS": "a,,b"}, "MONGODB_COLLECTIONS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"COLUMN_BUDGET": "3"}, "COLUMN_BUDGET"),  # no room for a single field
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], setting: str):
    assert settings_error(**env).setting == setting


def test_service_principal_needs_all_three_values():
    error = settings_error(
        AZURE_CLIENT_SECRET=SECRET, AZURE_TENANT_ID="0" * 8 + "-0000-0000-0000-" + "0" * 12
    )
    assert error.setting == "AZURE_CLIENT_ID"


def test_explicit_service_principal_without_secret_fails():
    assert settings_error(AZURE_AUTH="service-principal").setting == "AZURE_CLIENT_ID"


def test_required_setting_missing_is_named():
    settings = load_settings({})
    with pytest.raises(ConfigError, match=r"LANDING_ZONE.*required"):
        settings.require("LANDING_ZONE")


def test_repr_hides_secrets():
    settings = load_settings(
        {
            "MONGODB_URI": f"mongodb://u:{SECRET}@h",
            "AZURE_CLIENT_SECRET": SECRET,
            "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
            "AZURE_TENANT_ID": "11111111-2222-3333-4444-555555555555",
        }
    )
    assert SECRET not in repr(settings)
    assert SECRET not in repr(settings.auth)
    assert settings.auth.mode == "service-principal"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("all", None), ("orders", ["orders"]), ("a, b,a", ["a", "b"]), ('["x","y"]', ["x", "y"])],
)
def test_collection_lists(text: str, expected: list[str] | None):
    assert parse_collections(text) == expected


@pytest.mark.parametrize("level", ["debug", "Debug", " DEBUG "])
def test_log_level_in_any_case_is_normalised(level: str):
    settings = load_settings({"LOG_LEVEL": level})
    assert settings.get("LOG_LEVEL") == "DEBUG"
    assert settings.log_level == logging.DEBUG
