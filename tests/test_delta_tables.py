"""``--tables``: where the Delta tables are, and what delta-rs gets to reach them; one parser for
``verify --against delta`` (reads every form) and ``replicate`` (writes those without a token)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.delta_tables import (
    DeltaTables,
    parse_tables_location,
    parse_tables_to_write,
    with_token,
)
from shared.errors import ConfigError
from shared.landing_zone.stores.blob import BlobStore
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.tables import TableRef
from shared.storage_location import AZURITE_KEY


def test_a_local_folder():
    location, needs_token = parse_tables_location("some/Tables")
    assert (location.root, needs_token, location.listing) == (
        str(Path("some/Tables").absolute()),
        False,
        None,
    )
    tables = DeltaTables(location)
    assert tables.uri(TableRef("shop", "orders")) == str(Path(location.root, "shop", "orders"))


def test_a_file_url_is_read_as_landing_zone_reads_it():
    location, _ = parse_tables_location("file:///data/my%20Tables")
    assert location.root == location.description == "/data/my Tables"
    with pytest.raises(ConfigError) as raised:
        parse_tables_location("file://elsewhere/data/Tables")
    assert raised.value.setting == "--tables"
    assert "names a remote host" in raised.value.problem


def test_onelake_tables_of_a_mirrored_database_take_a_token():
    location, needs_token = parse_tables_location(
        "https://onelake.dfs.fabric.microsoft.com/workspace/mirror.MountedRelationalDatabase/Tables"
    )
    assert needs_token
    assert location.root == "az://workspace/mirror.MountedRelationalDatabase/Tables"
    assert dict(location.storage_options) == {
        "account_name": "onelake",
        "use_fabric_endpoint": "true",
        "azure_storage_endpoint": "https://onelake.blob.fabric.microsoft.com",
    }
    assert location.listing is not None and location.listing.container == "workspace"
    assert location.listing.base_path == "mirror.MountedRelationalDatabase/Tables"

    class Credential:
        def get_token(self, *scopes: str):
            assert scopes == ("https://storage.azure.com/.default",)
            return type("Token", (), {"token": "t0ken"})()

    signed = with_token(location, Credential())  # type: ignore[arg-type]
    assert signed.storage_options["bearer_token"] == "t0ken"
    assert "t0ken" not in repr(signed) and "t0ken" not in signed.description
    assert DeltaTables(signed).uri(TableRef("shop", "orders")) == (
        "az://workspace/mirror.MountedRelationalDatabase/Tables/shop/orders"
    )


def test_a_onelake_url_outside_tables_names_the_option():
    with pytest.raises(ConfigError) as raised:
        parse_tables_location("https://onelake.dfs.fabric.microsoft.com/ws/item/Files/LandingZone")
    assert raised.value.setting == "--tables"
    assert "<workspace>/<mirroredDatabase>/Tables" in raised.value.problem


def test_an_account_url_reaches_the_blob_endpoint_with_a_token():
    location, needs_token = parse_tables_location("abfss://lake@acct.dfs.core.windows.net/Tables")
    assert needs_token
    assert location.root == "az://lake/Tables"
    assert dict(location.storage_options) == {
        "account_name": "acct",
        "azure_storage_endpoint": "https://acct.blob.core.windows.net",
    }


def test_a_connection_string_carries_its_key_and_endpoint():
    text = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:10999/devstoreaccount1;"
        "Container=tables;Path=/mirror/Tables/"
    )
    location, needs_token = parse_tables_location(text)
    assert not needs_token
    assert location.root == "az://tables/mirror/Tables"
    assert dict(location.storage_options) == {
        "account_name": "devstoreaccount1",
        "account_key": AZURITE_KEY,
        "azure_storage_endpoint": "http://127.0.0.1:10999/devstoreaccount1",
        "allow_http": "true",
    }
    assert AZURITE_KEY not in location.description and AZURITE_KEY not in repr(location)


def test_a_connection_string_without_container_names_the_option():
    with pytest.raises(ConfigError) as raised:
        parse_tables_location(f"AccountName=acct;AccountKey={AZURITE_KEY}")
    assert raised.value.setting == "--tables"
    assert "Container=" in raised.value.problem


# --- replicate: what it can write -------------------------------------------------------------


def test_replicate_writes_where_the_text_itself_holds_the_means(tmp_path: Path):
    local = parse_tables_to_write(str(tmp_path / "Tables"))  # absent: created by the first write
    assert isinstance(local.store(), LocalStore)
    assert local.table_uri("shop/orders") == str(tmp_path / "Tables" / "shop" / "orders")

    azurite = parse_tables_to_write("http://127.0.0.1:10999/devstoreaccount1/tables/Tables")
    assert azurite.table_uri("shop/orders") == "az://tables/Tables/shop/orders"
    assert azurite.storage_options["account_key"] == AZURITE_KEY
    assert isinstance(azurite.store(), BlobStore)  # its side files need no credential

    keyed = parse_tables_to_write(
        f"AccountName=acct;AccountKey={AZURITE_KEY};Container=lake;Path=Tables"
    )
    assert keyed.storage_options["account_key"] == AZURITE_KEY
    assert isinstance(keyed.store(), BlobStore)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        (
            "https://onelake.dfs.fabric.microsoft.com/ws/db.MountedRelationalDatabase/Tables",
            "OneLake and token-authenticated URLs are Fabric's own replicator's to write",
        ),
        (
            "https://acct.blob.core.windows.net/lake/Tables",
            "OneLake and token-authenticated URLs are Fabric's own replicator's to write",
        ),
        (
            "https://onelake.dfs.fabric.microsoft.com/ws/item/Files/LandingZone",
            "<workspace>/<mirroredDatabase>/Tables",
        ),
        ("http://127.0.0.1:1/devstoreaccount1", "name the container"),
    ],
)
def test_replicate_refuses_what_it_cannot_write_naming_the_option(text: str, problem: str):
    with pytest.raises(ConfigError) as raised:
        parse_tables_to_write(text)
    assert raised.value.setting == "--tables"
    assert problem in raised.value.problem


def test_replicate_refuses_a_file_for_the_tables_folder(tmp_path: Path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError) as raised:
        parse_tables_to_write(str(afile))
    assert (raised.value.setting, raised.value.problem) == (
        "--tables",
        f"{afile} is a file, not a folder",
    )
