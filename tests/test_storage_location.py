"""The one Azure Storage location parser, and the settings built on it agreeing with each other.

Pure parsing: nothing here reaches a network (the queue client is only constructed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from shared.config import load_settings
from shared.errors import ConfigError
from shared.landing_zone.stores import parse_landing_zone
from shared.pipeline.fanout import open_queue
from shared.redaction import redact_url
from shared.state import parse_state_location
from shared.storage_location import (
    AZURITE_KEY,
    ConnectionService,
    Service,
    azurite_connection_string,
    is_connection_string,
    parse_connection_string,
    parse_storage_url,
)

KEY = "c2VjcmV0LWtleS10aGF0LW11c3QtbmV2ZXItbGVhaw=="
SAS = "sv=2024-11-04&ss=bqt&srt=co&sp=rwdl&se=2030-01-01T00:00:00Z&sig=U0lHTkFUVVJFc2VjcmV0"
SECRETS = (KEY, "U0lHTkFUVVJFc2VjcmV0", "hunter2")
ACCOUNT = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};"
DEV = "http://127.0.0.1:{port}/devstoreaccount1"


def assert_hidden(message: str) -> None:
    for secret in SECRETS:
        assert secret not in message


# --- connection strings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "service", "own", "endpoint", "extras"),
    [
        (ACCOUNT, "blob", (), "https://acct.blob.core.windows.net", {}),
        (ACCOUNT, "queue", (), "https://acct.queue.core.windows.net", {}),
        (ACCOUNT, "table", (), "https://acct.table.core.windows.net", {}),
        # Names are case-insensitive, as in the Azure SDK; the protocol defaults to https.
        (
            f"accountname=acct;ACCOUNTKEY={KEY}",
            "blob",
            (),
            "https://acct.blob.core.windows.net",
            {},
        ),
        (
            f"{ACCOUNT}EndpointSuffix=core.chinacloudapi.cn",
            "table",
            (),
            "https://acct.table.core.chinacloudapi.cn",
            {},
        ),
        # An explicit endpoint wins; its query (a SAS) and trailing slash stay out of `endpoint`.
        (
            f"TableEndpoint=https://t.example.net/?{SAS};SharedAccessSignature={SAS}",
            "table",
            (),
            "https://t.example.net",
            {},
        ),
        (
            f"BlobEndpoint=http://[::1]:10000/devstoreaccount1;AccountName=devstoreaccount1;"
            f"AccountKey={KEY}",
            "blob",
            (),
            "http://[::1]:10000/devstoreaccount1",
            {},
        ),
        # Our own names are taken out, whatever their case.
        (
            f"{ACCOUNT}container=lzone;PATH=a/b",
            "blob",
            ("Container", "Path"),
            "https://acct.blob.core.windows.net",
            {"container": "lzone", "path": "a/b"},
        ),
        ("UseDevelopmentStorage=true", "blob", (), DEV.format(port=10000), {}),
        ("UseDevelopmentStorage=true", "queue", (), DEV.format(port=10001), {}),
        (
            "usedevelopmentstorage=TRUE;TableName=t1",
            "table",
            ("TableName",),
            DEV.format(port=10002),
            {"tablename": "t1"},
        ),
    ],
)
def test_connection_strings_accepted(
    text: str,
    service: ConnectionService,
    own: tuple[str, ...],
    endpoint: str,
    extras: dict[str, str],
) -> None:
    assert is_connection_string(text, own)
    parsed = parse_connection_string("SETTING", text, service, own)
    assert (parsed.endpoint, dict(parsed.extras)) == (endpoint, extras)
    assert parsed.sdk_text.endswith(";")
    for name in own:
        assert f"{name.lower()}=" not in parsed.sdk_text.lower()
    assert KEY not in repr(parsed)


def test_development_storage_is_azurite_with_the_published_key() -> None:
    parsed = parse_connection_string("SETTING", "UseDevelopmentStorage=true", "table")
    assert parsed.sdk_text == azurite_connection_string(
        {
            "blob": DEV.format(port=10000),
            "queue": DEV.format(port=10001),
            "table": DEV.format(port=10002),
        }
    )
    assert f"AccountKey={AZURITE_KEY};" in parsed.sdk_text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{ACCOUNT}garbage", "part 4 is not Name=value"),
        (f"{ACCOUNT}Empty=", "is not Name=value"),
        (f"{ACCOUNT}{KEY}", "name in part 4 is neither"),  # a pasted key is never echoed
        (f"{ACCOUNT}{KEY.replace('=', '+')}", "part 4 is not Name=value"),
        (f"{ACCOUNT}accountkey={KEY}", "sets accountkey twice"),
        (f"{ACCOUNT}Contianer=lzone", "'Contianer' is neither an Azure Storage one nor Container"),
        (f"{ACCOUNT}TableName=t1", "'TableName' is neither"),  # another setting's name
        (f"AccountKey={KEY}", "neither BlobEndpoint nor AccountName"),
        ("AccountName=acct", "neither AccountKey nor SharedAccessSignature"),
        (f"BlobEndpoint=https://a.example.net;AccountKey={KEY}", "AccountKey but no AccountName"),
        (f"AccountName=a_b;AccountKey={KEY}", "AccountName must be"),
        ("UseDevelopmentStorage=false", "UseDevelopmentStorage=true stands alone"),
        ("UseDevelopmentStorage=true;AccountName=acct", "stands alone"),
        # Plain http is for a loopback emulator only, in connection strings as in URLs.
        (f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY}", "plain http"),
        (f"BlobEndpoint=http://acct.example.net;AccountKey={KEY};AccountName=a", "plain http"),
        (f"BlobEndpoint=ftp://acct.example.net;SharedAccessSignature={SAS}", "https:// URL"),
        (f"BlobEndpoint=https://a.example.net:99999;SharedAccessSignature={SAS}", "valid URL"),
        (
            f"BlobEndpoint=https://me:hunter2@a.example.net;SharedAccessSignature={SAS}",
            "user info",
        ),
    ],
)
def test_connection_strings_rejected_without_echoing_secrets(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_connection_string("SETTING", text, "blob", ("Container", "Path"))
    assert raised.value.setting == "SETTING"
    assert problem in str(raised.value)
    assert_hidden(str(raised.value))


@pytest.mark.parametrize(
    "text", ["/srv/lzone", "a=b/folder", "https://acct.blob.core.windows.net/lzone", "state.db"]
)
def test_other_forms_are_not_connection_strings(text: str) -> None:
    assert not is_connection_string(text, ("Container", "Path", "TableName"))


# --- URLs ------------------------------------------------------------------------------------

BLOB_DFS: tuple[Service, ...] = ("dfs", "blob")
WS = "6f1b7f7e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("text", "services", "service", "account_url", "path", "onelake", "emulator"),
    [
        (
            "https://acct.blob.core.windows.net/lzone/a%20b",
            BLOB_DFS,
            "blob",
            "https://acct.blob.core.windows.net",
            ("lzone", "a b"),
            False,
            False,
        ),
        (
            "https://ACCT.DFS.core.usgovcloudapi.net//fsys/",
            BLOB_DFS,
            "dfs",
            "https://acct.dfs.core.usgovcloudapi.net",
            ("fsys",),
            False,
            False,
        ),
        (
            "https://acct.z12.dfs.storage.azure.net/fsys",
            BLOB_DFS,
            "dfs",
            "https://acct.z12.dfs.storage.azure.net",
            ("fsys",),
            False,
            False,
        ),
        (
            "https://acct.queue.core.chinacloudapi.cn:443",
            ("queue",),
            "queue",
            "https://acct.queue.core.chinacloudapi.cn:443",
            (),
            False,
            False,
        ),
        (
            "https://acct.table.core.windows.net/t1",
            ("table",),
            "table",
            "https://acct.table.core.windows.net",
            ("t1",),
            False,
            False,
        ),
        (
            f"https://westus-onelake.dfs.fabric.microsoft.com/{WS}/item/Files/LandingZone",
            BLOB_DFS,
            "dfs",
            "https://westus-onelake.dfs.fabric.microsoft.com",
            (WS, "item", "Files", "LandingZone"),
            True,
            False,
        ),
        (
            f"https://onelake.blob.fabric.microsoft.com/{WS}/item",
            BLOB_DFS,
            "blob",
            "https://onelake.blob.fabric.microsoft.com",
            (WS, "item"),
            True,
            False,
        ),
        (
            f"abfss://{WS}@onelake.dfs.fabric.microsoft.com/item/Files",
            BLOB_DFS,
            "dfs",
            "https://onelake.dfs.fabric.microsoft.com",
            (WS, "item", "Files"),
            True,
            False,
        ),
        # Azurite: every loopback spelling alike, the service is the one the setting wants.
        (
            "http://127.0.0.1:10000/devstoreaccount1/lzone",
            BLOB_DFS,
            "blob",
            "http://127.0.0.1:10000/devstoreaccount1",
            ("lzone",),
            False,
            True,
        ),
        (
            "http://LOCALHOST:10002/devstoreaccount1",
            ("table",),
            "table",
            "http://localhost:10002/devstoreaccount1",
            (),
            False,
            True,
        ),
        (
            "http://[::1]:10001/devstoreaccount1/",
            ("queue",),
            "queue",
            "http://[::1]:10001/devstoreaccount1",
            (),
            False,
            True,
        ),
    ],
)
def test_urls_accepted(
    text: str,
    services: tuple[Service, ...],
    service: str,
    account_url: str,
    path: tuple[str, ...],
    onelake: bool,
    emulator: bool,
) -> None:
    url = parse_storage_url("SETTING", text, services)
    assert (url.service, url.account_url, url.path) == (service, account_url, path)
    assert (url.onelake, url.is_emulator) == (onelake, emulator)
    if emulator:  # reached with the published key, at the endpoint of the service wanted
        assert f"{service.capitalize()}Endpoint={account_url};" in (url.connection_string or "")
        assert f"AccountKey={AZURITE_KEY};" in (url.connection_string or "")


@pytest.mark.parametrize(
    ("text", "services", "problem"),
    [
        ("https://acct.blob.core.windows.net/lzone?" + SAS, BLOB_DFS, "query string (SAS token)"),
        ("https://acct.blob.core.windows.net/lzone#frag", BLOB_DFS, "fragment"),
        ("https://me:hunter2@acct.blob.core.windows.net/lzone", BLOB_DFS, "user info"),
        ("https://acct.blob.core.windows.net:99999/lzone", BLOB_DFS, "not a valid URL"),
        ("http://[::1/devstoreaccount1", BLOB_DFS, "not a valid URL"),
        ("ftp://acct.blob.core.windows.net/lzone", BLOB_DFS, "unsupported URL scheme 'ftp'"),
        ("abfss://acct.dfs.core.windows.net/fsys", BLOB_DFS, "abfss://<filesystem>@<host>"),
        ("abfss://fsys@acct.dfs.core.windows.net/x", ("table",), "unsupported URL scheme"),
        ("https://acct.blob.core.windows.net/lzone/../x", BLOB_DFS, "must not contain '.', '..'"),
        ("https://acct.blob.core.windows.net/lzone/a%2Fb", BLOB_DFS, "'%2F'"),
        ("https://acct.blob.core.windows.net/lzone", ("table",), "Azure Storage table account"),
        ("https://acct.table.core.windows.net", BLOB_DFS, "a OneLake, Azure Storage blob/dfs"),
        ("https://onelake.dfs.fabric.microsoft.com/ws", ("table",), "table account"),
        ("https://acct.blob.example.net/lzone", BLOB_DFS, "account or local emulator address"),
        ("https://a.blob.core.windows.net/lzone", BLOB_DFS, "account"),  # account name too short
        ("http://acct.blob.core.windows.net/lzone", BLOB_DFS, "only accepted for a local emulator"),
        ("http://127.0.0.1/devstoreaccount1/lzone", BLOB_DFS, "reached as http://127.0.0.1:<port>"),
        ("https://[::1]:10000/devstoreaccount1/lzone", BLOB_DFS, "reached as http://"),
        ("http://localhost:10000/otheraccount/lzone", BLOB_DFS, "connection string for other"),
        ("http://127.0.0.1:10000/devstoreaccount1/lzone", ("dfs",), "not a OneLake"),
    ],
)
def test_urls_rejected_without_echoing_secrets(
    text: str, services: tuple[Service, ...], problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_storage_url("SETTING", text, services)
    assert raised.value.setting == "SETTING"
    assert problem in str(raised.value)
    assert_hidden(str(raised.value))


def test_redact_url_drops_what_may_hold_a_secret() -> None:
    safe = redact_url(f"https://me:hunter2@acct.blob.core.windows.net/lzone?{SAS}#x")
    assert safe == "https://acct.blob.core.windows.net/lzone"


# --- the settings agree ----------------------------------------------------------------------


def landing_zone(base: str) -> Any:
    return parse_landing_zone(f"{base}/lzone")


def state_store(base: str) -> Any:
    return parse_state_location(f"{base}/mirror1")


def queue_storage(base: str) -> QueueClient:
    return open_queue(load_settings({"QUEUE_STORAGE": base}), {})


def queue_storage_by_identity(base: str) -> QueueClient:
    # An account URL goes under the connection, as the Functions host reads it (fanout.py).
    return open_queue(load_settings({}), {"QUEUE_STORAGE__queueServiceUri": base})


SETTINGS: dict[str, Callable[[str], Any]] = {
    "LANDING_ZONE": landing_zone,
    "STATE_STORE": state_store,
    "QUEUE_STORAGE__queueServiceUri": queue_storage_by_identity,
}
"""Each setting's parser, given an account URL and adding what the setting names below it."""

CONNECTION_STRING_SETTINGS: dict[str, Callable[[str], Any]] = {
    "LANDING_ZONE": lambda text: parse_landing_zone(f"{text};Container=lzone"),
    "STATE_STORE": parse_state_location,
    "QUEUE_STORAGE": queue_storage,
}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", "[::1]"])
def test_every_setting_takes_azurite_on_any_loopback_spelling(setting: str, host: str) -> None:
    base = f"http://{host}:10000/devstoreaccount1"
    parsed = SETTINGS[setting](base)
    expected_url = base.replace(host, host.lower())
    if isinstance(parsed, QueueClient):
        assert parsed.url.startswith(expected_url)
        assert parsed.credential.account_name == "devstoreaccount1"  # the published key
        return
    assert parsed.needs_token is False  # the emulator's key, not a token
    assert expected_url in (parsed.connection_string or "")
    assert f"AccountKey={AZURITE_KEY};" in (parsed.connection_string or "")


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize(
    ("base", "problem"),
    [
        ("http://example.com:10000/devstoreaccount1", "only accepted for a local emulator"),
        ("http://[::1]/devstoreaccount1", "reached as http://127.0.0.1:<port>"),
        ("https://localhost:10000/devstoreaccount1", "reached as http://127.0.0.1:<port>"),
        ("http://127.0.0.1:10000/otheraccount", "connection string for other accounts"),
        ("http://me:hunter2@[::1]:10000/devstoreaccount1", "user info"),
    ],
)
def test_every_setting_refuses_the_same_emulator_mistakes(
    setting: str, base: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        SETTINGS[setting](base)
    assert raised.value.setting == setting
    assert problem in str(raised.value)
    assert_hidden(str(raised.value))


@pytest.mark.parametrize("setting", CONNECTION_STRING_SETTINGS)
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{ACCOUNT}AccountKey={KEY}", "twice"),
        (f"{ACCOUNT}Contianer=lzone", "'Contianer' is neither"),
        ("UseDevelopmentStorage=true;AccountName=acct", "stands alone"),
        (f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY}", "plain http"),
        (f"AccountKey={KEY}", "Endpoint nor AccountName"),
    ],
)
def test_every_setting_refuses_the_same_connection_string_mistakes(
    setting: str, text: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        CONNECTION_STRING_SETTINGS[setting](text)
    assert raised.value.setting == setting
    assert problem in str(raised.value)
    assert_hidden(str(raised.value))


def test_https_accounts_need_a_token_for_both_stores() -> None:
    assert parse_landing_zone("https://acct.blob.core.windows.net/lzone").needs_token
    assert parse_state_location("https://acct.table.core.windows.net/t12").needs_token
    assert not parse_landing_zone(f"{ACCOUNT}Container=lzone").needs_token
    assert not parse_state_location(ACCOUNT).needs_token


def test_queue_errors_name_the_setting_the_value_came_from() -> None:
    settings = load_settings({})
    with pytest.raises(ConfigError) as raised:
        open_queue(settings, {"AzureWebJobsStorage": "http://example.com:10001/devstoreaccount1"})
    assert raised.value.setting == "AzureWebJobsStorage"
    with pytest.raises(ConfigError) as raised:
        open_queue(settings, {"AzureWebJobsStorage__accountName": "Not_An_Account"})
    assert raised.value.setting == "AzureWebJobsStorage__accountName"
    with pytest.raises(ConfigError, match=r"QUEUE_STORAGE__queueServiceUri: .*account URL"):
        open_queue(
            load_settings({}),
            {"QUEUE_STORAGE__queueServiceUri": "https://acct.queue.core.windows.net/q"},
        )
