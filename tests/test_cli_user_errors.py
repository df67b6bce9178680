"""A new user's mistakes through the real console script (issue #16): one line naming the setting,
exit 2 for a configuration error, and nothing written."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from pymongo import MongoClient

from tests.fixtures.azurite import ACCOUNT_KEY, Azurite
from tests.test_cli import assert_one_line, run, tree


@pytest.fixture
def shop(mongo_client: MongoClient, mongo_db_name: str) -> str:
    mongo_client[mongo_db_name].orders.insert_many([{"_id": i, "n": i} for i in range(5)])
    return mongo_db_name


def mirror_once(cwd: Path, uri: str, database: str, landing_zone: str, state: str = "s.db"):
    return run(
        "run",
        "--once",
        "--mongodb-uri",
        uri,
        "--database",
        database,
        "--landing-zone",
        landing_zone,
        "--state",
        state,
        "--workers",
        "1",
        cwd=cwd,
    )


def with_option(uri: str, option: str) -> str:
    return f"{uri}{'&' if '?' in uri else '/?'}{option}"


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        ("tls=maybe", "option 'tls': The value of tls must be 'true' or 'false'"),
        ("bogusOption=1", "option 'bogusOption': not a MongoDB connection-string option"),
    ],
)
def test_a_uri_option_the_driver_would_ignore_is_a_configuration_error(
    tmp_path: Path, mongodb_uri: str, shop: str, option: str, problem: str
):
    # PyMongo only warns about these and connects without them; an unattended mirror must not.
    result = mirror_once(tmp_path, with_option(mongodb_uri, option), shop, "lz")
    assert_one_line(result, 2, f"configuration error: MONGODB_URI: {problem}")
    assert "UserWarning" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_uri_option_never_echoes_what_may_be_a_password(tmp_path: Path):
    # An unescaped "?" in a password puts the rest of the password among the options.
    uri = "mongodb://user:pa?ss=word@127.0.0.1:1/"
    result = run("verify", "--mongodb-uri", uri, "--database", "shop", cwd=tmp_path)
    assert_one_line(result, 2, "configuration error: MONGODB_URI: an option after '?'")
    assert result.stderr == (
        "configuration error: MONGODB_URI: an option after '?' is not valid (not named: the "
        "options hold '@', so they may hold password text; percent-encode '?', '@', ':' and '/' "
        "in a user name or password)\n"
    )


def test_a_landing_zone_that_cannot_be_created_writes_nothing(
    tmp_path: Path, mongodb_uri: str, shop: str
):
    # /proc refuses new folders whatever its mode (even to root): the first write would fail.
    result = mirror_once(tmp_path, mongodb_uri, shop, "/proc/nope/lz")
    assert_one_line(result, 2, "configuration error: LANDING_ZONE: /proc/nope/lz cannot be created")
    assert list(tmp_path.iterdir()) == []  # no s.db: systemd's RestartPreventExitStatus=2


def test_verify_refuses_a_landing_zone_that_does_not_exist(
    tmp_path: Path, mongodb_uri: str, shop: str
):
    result = run(
        "verify",
        "--mongodb-uri",
        mongodb_uri,
        "--database",
        shop,
        "--landing-zone",
        "nosuchdir",
        cwd=tmp_path,
    )
    assert result.stdout == ""  # no "tables differ": nothing was compared
    assert_one_line(
        result, 2, f"configuration error: LANDING_ZONE: {tmp_path / 'nosuchdir'} does not exist"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("deeper", "what"),
    [("{db}.schema", "a <database>.schema folder"), ("{db}.schema/orders", "a table folder")],
    ids=["schema", "table"],
)
def test_a_landing_zone_set_one_level_too_low_is_named(
    tmp_path: Path, mongodb_uri: str, shop: str, deeper: str, what: str
):
    mirrored = mirror_once(tmp_path, mongodb_uri, shop, "lz")
    assert mirrored.returncode == 0, mirrored.stderr
    before = tree(tmp_path)
    folder = f"lz/{deeper.format(db=shop)}"
    assert (tmp_path / folder).is_dir()
    expected = (
        f"configuration error: LANDING_ZONE: {tmp_path / folder} is {what} inside a landing "
        f"zone; LANDING_ZONE is the folder holding the <database>.schema folders "
        f"({tmp_path / 'lz'})"
    )
    inspected = run("inspect", "--landing-zone", folder, cwd=tmp_path)
    assert inspected.stdout == ""  # not "conforms"
    assert_one_line(inspected, 2, expected)
    rerun = mirror_once(tmp_path, mongodb_uri, shop, folder)  # would nest a second .schema
    assert_one_line(rerun, 2, expected)
    assert tree(tmp_path) == before


def without_azure_sign_in(tmp_path: Path) -> dict[str, str]:
    """An environment where DefaultAzureCredential finds nothing, even on a developer's machine
    signed in with ``az login``: no az on PATH, an empty Azure CLI folder, no identity variables."""
    from tests.fixtures.console import SCRIPT

    hidden = {name: "" for name in os.environ if name.startswith(("AZURE_", "IDENTITY_", "MSI_"))}
    (tmp_path / "azure-cli").mkdir()
    return {
        **hidden,
        "PATH": str(SCRIPT.parent),
        "AZURE_CONFIG_DIR": str(tmp_path / "azure-cli"),
        "AZURE_AUTH": "default",
    }


AZURE_AUTH_LINE = (
    "configuration error: AZURE_AUTH: no usable Azure credential (mode default: "
    "DefaultAzureCredential found none); sign in with `az login` (or set AZURE_CLIENT_ID, "
    "AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a service principal, or "
    "AZURE_AUTH=managed-identity on Azure); LOG_LEVEL=DEBUG shows what was tried\n"
)
ONELAKE = "https://onelake.dfs.fabric.microsoft.com/workspace/item/Files/LandingZone"


def test_fabric_create_without_az_login_is_one_line_naming_azure_auth(tmp_path: Path):
    env = without_azure_sign_in(tmp_path)
    workspace = "11111111-2222-3333-4444-555555555555"
    result = run(
        "fabric", "create", "--name", "shop", "--workspace", workspace, cwd=tmp_path, env=env
    )
    assert result.returncode == 2
    assert result.stderr == AZURE_AUTH_LINE  # not azure.identity's list of nine credentials


def test_run_into_onelake_without_az_login_is_one_line_naming_azure_auth(
    tmp_path: Path, mongodb_uri: str, shop: str
):
    env = without_azure_sign_in(tmp_path)
    result = run(
        "run",
        "--once",
        "--mongodb-uri",
        mongodb_uri,
        "--database",
        shop,
        "--landing-zone",
        ONELAKE,
        "--state",
        "s.db",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr == AZURE_AUTH_LINE
    assert [path.name for path in tmp_path.iterdir()] == ["azure-cli"]


def test_status_shows_an_azure_error_as_one_line_not_its_xml_reply(
    tmp_path: Path, mongodb_uri: str, shop: str, mongo_client: MongoClient, azurite: Azurite
):
    import json

    container = f"lz-{uuid.uuid4().hex[:12]}"
    landing_zone = f"{azurite.connection_string}Container={container}"
    first = mirror_once(tmp_path, mongodb_uri, shop, landing_zone)
    assert first.returncode == 0, first.stderr
    mongo_client[shop].orders.insert_one({"_id": "after the key changed"})
    # The account key rotated under the mirror: every request is refused with 403.
    rotated = landing_zone.replace(ACCOUNT_KEY, "AAAA" + ACCOUNT_KEY[4:])
    refused = run(
        "run",
        "--once",
        "--mongodb-uri",
        mongodb_uri,
        "--database",
        shop,
        "--landing-zone",
        rotated,
        "--state",
        "s.db",
        "--storage-retry-seconds",
        "0",
        "--log-level",
        "error",
        cwd=tmp_path,
    )
    one_line = re.compile(
        r"HttpResponseError \(AuthorizationFailure, HTTP 403\): Server failed to authenticate "
        r"the request\. [^\n<]*; request id [0-9a-f-]{36}"
    )
    assert refused.returncode == 1
    assert "<?xml" not in refused.stderr and "RequestId:" not in refused.stderr
    assert re.fullmatch(rf"error: {one_line.pattern}\n", refused.stderr.splitlines()[-1] + "\n")
    status = run("status", "--state", "s.db", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    (database,) = json.loads(status.stdout)["databases"]
    assert re.fullmatch(rf"run: {one_line.pattern}", database["last_error"]["error"])
