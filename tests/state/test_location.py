"""STATE_STORE parsing: accepted forms, rejected forms, and no secret in any message or repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.state import StateLocation, parse_state_location

SECRET = "c2VjcmV0LWFjY291bnQta2V5LXZhbHVl/Zm9vYmFy+cXV4=="
SAS = "sv=2024-01-01&ss=t&srt=sco&sp=rwdlacu&sig=SIGNATURE%2Fvalue%3D"
ACCOUNT_STRING = (
    f"DefaultEndpointsProtocol=https;AccountName=myacct;AccountKey={SECRET};"
    "EndpointSuffix=core.windows.net"
)


@pytest.mark.parametrize(
    ("location", "path"),
    [
        ("./state.db", Path("state.db")),
        ("/abs/path.sqlite", Path("/abs/path.sqlite")),
        ("relative/dir/mirror.SQLITE3", Path("relative/dir/mirror.SQLITE3")),
        ("sqlite:///abs/path", Path("/abs/path")),
        ("  sqlite:///var/lib/mirror/state  ", Path("/var/lib/mirror/state")),
    ],
)
def test_sqlite_forms(location: str, path: Path) -> None:
    parsed = parse_state_location(location)
    assert parsed == StateLocation("sqlite", path=path)
    assert str(path) in parsed.description


@pytest.mark.parametrize(
    ("location", "endpoint", "table"),
    [
        (ACCOUNT_STRING, "https://myacct.table.core.windows.net", "mirrorstate"),
        (f"{ACCOUNT_STRING};TableName=Custom1", "https://myacct.table.core.windows.net", "Custom1"),
        (
            f"AccountName=a;AccountKey={SECRET};TableEndpoint=https://a.table.example.net/;",
            "https://a.table.example.net",
            "mirrorstate",
        ),
        (
            f"TableEndpoint=https://b.table.core.windows.net?{SAS};SharedAccessSignature={SAS}",
            "https://b.table.core.windows.net",
            "mirrorstate",
        ),
        ("UseDevelopmentStorage=true", "http://127.0.0.1:10002/devstoreaccount1", "mirrorstate"),
        (
            "UseDevelopmentStorage=true;TableName=dev",
            "http://127.0.0.1:10002/devstoreaccount1",
            "dev",
        ),
    ],
)
def test_connection_string_forms(location: str, endpoint: str, table: str) -> None:
    parsed = parse_state_location(location)
    assert (parsed.kind, parsed.endpoint, parsed.table_name) == ("table", endpoint, table)
    assert parsed.connection_string is not None
    assert "TableName" not in parsed.connection_string
    for text in (repr(parsed), parsed.description):
        assert SECRET not in text and "SIGNATURE" not in text
        assert "AccountKey" not in text


AZURE = "https://myacct.table.core.windows.net"
GOV = "https://gov1.table.core.usgovcloudapi.net"
AZURITE = "http://127.0.0.1:10002/devstoreaccount1"


@pytest.mark.parametrize(
    ("location", "endpoint", "table", "has_key"),
    [
        (AZURE, AZURE, "mirrorstate", False),
        (f"{AZURE}/Mirror2/", AZURE, "Mirror2", False),
        (f"{GOV}/t123", GOV, "t123", False),
        (AZURITE, AZURITE, "mirrorstate", True),
        (
            "http://localhost:4321/devstoreaccount1/state1",
            "http://localhost:4321/devstoreaccount1",
            "state1",
            True,
        ),
        (
            "http://[::1]:4321/devstoreaccount1",
            "http://[::1]:4321/devstoreaccount1",
            "mirrorstate",
            True,
        ),
    ],
)
def test_url_forms(location: str, endpoint: str, table: str, has_key: bool) -> None:
    parsed = parse_state_location(location)
    assert (parsed.kind, parsed.endpoint, parsed.table_name) == ("table", endpoint, table)
    # Only Azurite gets a (public, emulator) key; real accounts use the caller's credential.
    assert (parsed.connection_string is not None) == has_key
    assert "AccountKey" not in repr(parsed)


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("state", "not a SQLite file"),
        ("state.json", "not a SQLite file"),
        ("sqlite://relative/path", "sqlite:///"),
        ("sqlite:///", "sqlite:///"),
        ("ftp://example.com/state.db", "unsupported URL scheme"),
        ("http://myacct.table.core.windows.net", "loopback"),
        ("http://127.0.0.1/devstoreaccount1", "loopback"),
        ("http://127.0.0.1:10002/otheraccount", "devstoreaccount1"),
        ("http://127.0.0.1:10002/devstoreaccount1/t1/extra", "devstoreaccount1"),
        ("https://myacct.blob.core.windows.net", "account"),
        ("https://myacct.table.core.windows.net/a/b", "account"),
        ("https://myacct.table.core.windows.net/x", "table name"),
        ("https://myacct.table.core.windows.net/bad_name", "table name"),
        (f"https://myacct.table.core.windows.net/t123?{SAS}", "SAS"),
        ("https://user:pw@myacct.table.core.windows.net", "user info"),
        ("https://myacct.table.core.windows.net:99999", "not a valid URL"),
        ("AccountName=myacct", "neither AccountKey"),
        (f"AccountKey={SECRET}", "neither TableEndpoint nor AccountName"),
        (f"{ACCOUNT_STRING};TableName=no-dashes", "table name"),
        (f"{ACCOUNT_STRING};AccountKey={SECRET}", "twice"),
        (f"{ACCOUNT_STRING};garbage", "Name=value"),
        (f"{ACCOUNT_STRING};Empty=", "Name=value"),
    ],
)
def test_rejected_forms_name_the_setting_and_hide_secrets(location: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_state_location(location)
    assert raised.value.setting == "STATE_STORE"
    message = str(raised.value)
    assert message.startswith("STATE_STORE: ")
    assert problem in message
    assert SECRET not in message and "SIGNATURE" not in message
