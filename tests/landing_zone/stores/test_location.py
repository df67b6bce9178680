"""LANDING_ZONE parsing (pure) and the factory: accepted forms, rejections, and no secret leaks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.landing_zone.stores import (
    BlobStore,
    LandingZoneLocation,
    LocalStore,
    OneLakeStore,
    open_landing_zone,
    parse_landing_zone,
)
from shared.storage_location import azurite_connection_string
from tests.fixtures.azurite import Azurite

KEY = "c2VjcmV0LWtleS10aGF0LW11c3QtbmV2ZXItbGVhaw=="
SAS = "sv=2024-11-04&ss=b&srt=co&sp=rwdl&se=2030-01-01T00:00:00Z&sig=c2VjcmV0c2ln"
CONN = (
    f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};"
    "EndpointSuffix=core.windows.net"
)
WS, ITEM = "6f1b7f7e-0000-4000-8000-000000000001", "9a2c8d1e-0000-4000-8000-000000000002"
ONELAKE = "onelake.dfs.fabric.microsoft.com"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            f"https://{ONELAKE}/{WS}/{ITEM}/Files/LandingZone",
            LandingZoneLocation(
                "onelake",
                f"https://{ONELAKE}",
                filesystem=WS,
                base_path=f"{ITEM}/Files/LandingZone",
            ),
        ),
        (
            f"https://westus-{ONELAKE}/{WS}/{ITEM}/Files/LandingZone/_test/",
            LandingZoneLocation(
                "onelake",
                f"https://westus-{ONELAKE}",
                filesystem=WS,
                base_path=f"{ITEM}/Files/LandingZone/_test",
            ),
        ),
        (
            f"abfss://{WS}@{ONELAKE}/{ITEM}/Files/LandingZone",
            LandingZoneLocation(
                "onelake",
                f"https://{ONELAKE}",
                filesystem=WS,
                base_path=f"{ITEM}/Files/LandingZone",
            ),
        ),
        (
            "https://acct.dfs.core.windows.net/fsys/mirror/zone",
            LandingZoneLocation(
                "onelake",
                "https://acct.dfs.core.windows.net",
                filesystem="fsys",
                base_path="mirror/zone",
            ),
        ),
        (
            "https://acct.dfs.core.windows.net/fsys",
            LandingZoneLocation("onelake", "https://acct.dfs.core.windows.net", filesystem="fsys"),
        ),
        (
            f"https://onelake.blob.fabric.microsoft.com/{WS}/{ITEM}/Files/LandingZone",
            LandingZoneLocation(
                "blob",
                "https://onelake.blob.fabric.microsoft.com",
                container=WS,
                base_path=f"{ITEM}/Files/LandingZone",
            ),
        ),
        (
            "https://acct.blob.core.windows.net/landing/zone%20one",
            LandingZoneLocation(
                "blob",
                "https://acct.blob.core.windows.net",
                container="landing",
                base_path="zone one",
            ),
        ),
        (
            "http://127.0.0.1:10000/devstoreaccount1/lzone/base",
            LandingZoneLocation(
                "blob",
                "http://127.0.0.1:10000/devstoreaccount1",
                container="lzone",
                base_path="base",
                # Azurite's URL form carries the emulator's published key, as for STATE_STORE.
                connection_string=azurite_connection_string(
                    {"blob": "http://127.0.0.1:10000/devstoreaccount1"}
                ),
            ),
        ),
        (
            f"{CONN};Container=lzone;Path=a/b",
            LandingZoneLocation(
                "blob", container="lzone", base_path="a/b", connection_string=f"{CONN};"
            ),
        ),
        (
            f"BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature={SAS};"
            "container=lzone",
            LandingZoneLocation(
                "blob",
                container="lzone",
                connection_string=(
                    f"BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature={SAS};"
                ),
            ),
        ),
        ("/srv/landing zone", LandingZoneLocation("local", local_path="/srv/landing zone")),
        (
            "file:///srv/landing%20zone",
            LandingZoneLocation("local", local_path="/srv/landing zone"),
        ),
        (
            "relative/lzone",
            LandingZoneLocation("local", local_path=os.path.abspath("relative/lzone")),
        ),
    ],
)
def test_accepted_forms(location: str, expected: LandingZoneLocation) -> None:
    assert parse_landing_zone(location) == expected


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://host/lzone", "unsupported URL scheme"),
        ("s3://bucket/lzone", "unsupported URL scheme"),
        ("http://example.com/devstoreaccount1/lzone", "only accepted for a local emulator"),
        ("http://127.0.0.1:10000/otheraccount/lzone", "connection string for other accounts"),
        ("http://127.0.0.1:10000/devstoreaccount1", "emulator URL is"),
        ("https://example.com/lzone", "not a OneLake, Azure Storage"),
        (f"https://{ONELAKE}/{WS}/{ITEM}/Files", "Files/LandingZone"),
        (f"https://{ONELAKE}/{WS}/{ITEM}/Tables/LandingZone", "Files/LandingZone"),
        (f"https://{ONELAKE}/{WS}", "Files/LandingZone"),
        (f"https://{ONELAKE}/", "Files/LandingZone"),
        ("https://acct.dfs.core.windows.net/", "name the container"),
        ("https://acct.blob.core.windows.net", "name the container"),
        (
            f"https://acct.blob.core.windows.net/lzone/base?{SAS}",
            "must not carry a query string (SAS token)",
        ),
        (f"{CONN}", "needs ';Container=<name>'"),
        (f"{CONN};Container=lzone;Path=a/../b", "must not contain"),
        ("abfss://onelake.dfs.fabric.microsoft.com/x", "abfss://<filesystem>@<host>"),
        ("file://remotehost/share/lzone", "remote host"),
    ],
)
def test_rejected_forms_name_the_setting_and_hide_secrets(location: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_landing_zone(location)
    message = str(raised.value)
    assert raised.value.setting == "LANDING_ZONE"
    assert message.startswith("LANDING_ZONE: ")
    assert problem in message
    for secret in (KEY, "sig=c2VjcmV0c2ln", "c2VjcmV0c2ln"):
        assert secret not in message


def test_connection_string_stays_out_of_repr() -> None:
    location = parse_landing_zone(f"{CONN};Container=lzone")
    assert location.connection_string is not None
    assert KEY not in repr(location)
    assert KEY not in str(location)


def test_factory_picks_the_store(tmp_path: Path) -> None:
    from azure.core.credentials import AccessToken

    class Unused:
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            raise AssertionError("opening a store must not fetch a token")

    assert isinstance(open_landing_zone(str(tmp_path)), LocalStore)
    onelake = open_landing_zone(f"https://{ONELAKE}/{WS}/{ITEM}/Files/LandingZone", Unused())
    assert isinstance(onelake, OneLakeStore)
    assert onelake.description.endswith(f"/{WS}/{ITEM}/Files/LandingZone")
    blob = open_landing_zone("https://acct.blob.core.windows.net/lzone/base", Unused())
    assert isinstance(blob, BlobStore)
    assert isinstance(open_landing_zone(f"{CONN};Container=lzone"), BlobStore)


def test_azure_urls_need_a_credential() -> None:
    with pytest.raises(ConfigError, match=r"LANDING_ZONE: .*credential"):
        open_landing_zone(f"https://{ONELAKE}/{WS}/{ITEM}/Files/LandingZone")


def test_connection_string_store_description_has_no_key() -> None:
    description = open_landing_zone(f"{CONN};Container=lzone;Path=a").description
    assert KEY not in description
    assert "AccountKey" not in description
    assert description.endswith("acct.blob.core.windows.net/lzone/a")


def test_azurite_url_form_uses_the_emulator_key(azurite: Azurite) -> None:
    store = open_landing_zone(f"{azurite.blob_endpoint}/url-form/base")
    store.write_new("t/file", b"via the emulator URL")
    assert store.read("t/file") == b"via the emulator URL"
    assert "Eby8vdM02" not in store.description


@pytest.mark.parametrize("container", ["lz", "Upper", "a--b", "-lead", "x" * 64])
def test_container_names_azure_refuses_are_refused_before_any_request(container: str):
    for location in (
        f"{CONN};Container={container}",
        f"https://acct.blob.core.windows.net/{container}/base",
    ):
        with pytest.raises(ConfigError, match="must be 3-63 lower-case letters"):
            parse_landing_zone(location)
