"""Where the mirrored Delta tables are: a ``Tables`` location, and how delta-rs reaches it.

A mirrored database keeps each table at ``Tables/<schema>/<table>`` in OneLake (Microsoft's
open-mirroring docs: the replicator turns each landing-zone folder ``<schema>.schema/<table>``
into that Delta table). The location is given the way LANDING_ZONE is, pointing at the folder
that holds the schema folders:

- ``https://onelake.dfs.fabric.microsoft.com/<workspace>/<mirroredDatabase>/Tables``
  (also ``abfss://``, the blob host and regional hosts), reached with the usual Azure credential;
- ``https://<account>.blob|dfs.core.windows.net/<container>[/...]`` (credential), an Azurite URL
  ``http://127.0.0.1:<port>/devstoreaccount1/<container>[/...]`` (its published key), or a storage
  connection string with ``;Container=<name>[;Path=<folder>]``;
- a local folder.

What makes a URL or connection string valid is :mod:`shared.storage_location`'s, as for every
other storage setting. delta-rs (object_store) gets an ``az://<container>/<path>`` URI and its
``storage_options``: the account, its endpoint, and a key, SAS or bearer token. Folders are listed
through the landing-zone stores (delta-rs cannot list), with the same credential.

This module is the one parser of ``--tables``, for both commands that take it: ``verify --against
delta`` reads every form above (:func:`parse_tables_location`); ``replicate`` writes the forms
reached without a token (:func:`parse_tables_to_write`) and keeps its own files (progress and
status) under the same root, through the same store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.stores.blob import BlobStore
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.stores.location import LandingZoneLocation, parse_landing_zone
from shared.landing_zone.tables import TableRef
from shared.storage_location import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    config_error,
    is_connection_string,
    parse_connection_string,
    parse_storage_url,
)

if TYPE_CHECKING:
    import pyarrow.dataset as pa_dataset
    from azure.core.credentials import TokenCredential

SETTING = "--tables"
STORAGE_SCOPE = "https://storage.azure.com/.default"
_OWN_NAMES = ("Container", "Path")
DELTA_LOG = "_delta_log"


@dataclass(frozen=True)
class DeltaTablesLocation:
    """The root folder of the tables: a delta-rs URI, its options, and a store that lists it."""

    root: str
    """A local folder, or ``az://<container>[/<path>]``; no trailing slash."""
    description: str
    """Fit for a message: no key, SAS or token."""
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    """delta-rs ``storage_options``: may hold a key or token, a secret."""
    listing: LandingZoneLocation | None = field(default=None, repr=False)
    """The same folder for the Blob store that lists it (None: a local folder)."""

    def table_uri(self, path: str) -> str:
        """The delta-rs URI of the table at ``path`` (``<schema>/<table>``) under the root."""
        if self.listing is None:
            return str(Path(self.root, *path.split("/")))
        return f"{self.root}/{path}"

    def store(self, credential: TokenCredential | None = None) -> LandingZoneStore:
        """The root as a landing-zone store: it lists folders (delta-rs cannot) and holds the
        replicator's own files. ``credential`` only for a location that needs a token."""
        if self.listing is None:
            return LocalStore(self.root)
        return BlobStore.from_location(self.listing, credential)


def parse_tables_location(text: str) -> tuple[DeltaTablesLocation, bool]:
    """The location, and whether it is reached with a token credential (then add its token
    with :func:`with_token`). ConfigError names ``--tables``; nothing is contacted."""
    text = text.strip()
    if not text:
        raise config_error(SETTING, "is empty; give the Tables folder of the mirrored database")
    if is_connection_string(text, _OWN_NAMES):
        return _connection_string(text), False
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        return _folder(text), False
    return _url(text)


def parse_tables_to_write(text: str) -> DeltaTablesLocation:
    """``--tables`` for ``replicate``: a location it can write with what the text itself holds
    (a folder, a connection string's key or SAS, Azurite's published key). ConfigError names
    ``--tables``; nothing is contacted.

    A token-only URL (OneLake, ``https://<account>.blob...``) is refused: the replicator stands
    in for Fabric's, which writes OneLake's ``Tables/`` itself."""
    location, needs_token = parse_tables_location(text)
    if needs_token:
        raise ConfigError(
            SETTING,
            "Delta tables can be written to a local folder, Azurite, or Blob storage named by a "
            "connection string with a key or SAS (…;Container=<name>[;Path=<folder>]); "
            "OneLake and token-authenticated URLs are Fabric's own replicator's to write",
        )
    root = Path(location.root)
    if location.listing is None and root.exists() and not root.is_dir():
        raise ConfigError(SETTING, f"{root} is a file, not a folder")
    return location


def _folder(text: str) -> DeltaTablesLocation:
    # A folder or file:// URL as LANDING_ZONE reads it: one rule for local paths.
    try:
        parsed = parse_landing_zone(text)
    except ConfigError as error:
        raise ConfigError(SETTING, error.problem) from None
    assert parsed.local_path is not None
    return DeltaTablesLocation(parsed.local_path, parsed.local_path)


def _connection_string(text: str) -> DeltaTablesLocation:
    parsed = parse_connection_string(SETTING, text, "blob", _OWN_NAMES)
    container = parsed.extras.get("container")
    if not container:
        raise config_error(
            SETTING, "a storage connection string needs ';Container=<name>' (and optional ';Path=')"
        )
    path = parsed.extras.get("path", "").strip("/")
    values = {
        name.strip().lower(): value.strip()
        for name, _, value in (part.partition("=") for part in parsed.sdk_text.split(";") if part)
    }
    options = {"account_name": values.get("accountname", AZURITE_ACCOUNT)}
    if "accountkey" in values:
        options["account_key"] = values["accountkey"]
    elif "sharedaccesssignature" in values:
        options["sas_token"] = values["sharedaccesssignature"]
    elif "usedevelopmentstorage" in values:
        options["account_key"] = AZURITE_KEY
    options.update(_endpoint_options(parsed.endpoint))
    return DeltaTablesLocation(
        _az(container, path),
        f"{parsed.endpoint}/{container}/{path}".rstrip("/"),
        options,
        LandingZoneLocation(
            kind="blob",
            container=container,
            base_path=path,
            connection_string=parsed.sdk_text,
        ),
    )


def _url(text: str) -> tuple[DeltaTablesLocation, bool]:
    url = parse_storage_url(SETTING, text, ("dfs", "blob"))
    if not url.path:
        raise config_error(SETTING, f"{url.safe_text}: name the container (file system)")
    if url.onelake and (len(url.path) < 3 or url.path[2] != "Tables"):
        raise config_error(
            SETTING,
            f"{url.safe_text}: the tables of a mirrored database are at "
            f"{url.account_url}/<workspace>/<mirroredDatabase>/Tables",
        )
    container, path = url.path[0], "/".join(url.path[1:])
    # object_store speaks the Blob API: a DFS host's account has the same blob endpoint.
    blob_url = url.account_url.replace(".dfs.", ".blob.", 1)
    options: dict[str, str] = {}
    if url.connection_string is not None:  # Azurite, with its published key
        options = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    else:
        host = urlsplit(blob_url).hostname or ""
        options["account_name"] = "onelake" if url.onelake else host.split(".", 1)[0]
        if url.onelake:
            options["use_fabric_endpoint"] = "true"
    options.update(_endpoint_options(blob_url))
    listing = LandingZoneLocation(
        kind="blob",
        account_url=blob_url,
        container=container,
        base_path=path,
        connection_string=url.connection_string,
    )
    location = DeltaTablesLocation(
        _az(container, path), f"{url.safe_text.rstrip('/')}", options, listing
    )
    return location, url.connection_string is None


def _endpoint_options(endpoint: str) -> dict[str, str]:
    options = {"azure_storage_endpoint": endpoint.rstrip("/")}
    if urlsplit(endpoint).scheme == "http":  # only ever a loopback emulator (storage_location)
        options["allow_http"] = "true"
    return options


def _az(container: str, path: str) -> str:
    return f"az://{container}/{path}".rstrip("/")


def with_token(location: DeltaTablesLocation, credential: TokenCredential) -> DeltaTablesLocation:
    """The location with a bearer token for delta-rs (an hour's worth: verify reads once)."""
    token = credential.get_token(STORAGE_SCOPE).token
    return DeltaTablesLocation(
        location.root,
        location.description,
        {**location.storage_options, "bearer_token": token},
        location.listing,
    )


class DeltaTables:
    """The Delta tables under one location: listed, and opened as pyarrow datasets."""

    def __init__(
        self,
        location: DeltaTablesLocation,
        credential: TokenCredential | None = None,
        *,
        store_factory: Callable[[LandingZoneLocation], LandingZoneStore] | None = None,
    ) -> None:
        self.location = location
        self._credential = credential
        self._store_factory = store_factory

    @property
    def description(self) -> str:
        return self.location.description

    def check_exists(self) -> None:
        """A local root that is not a folder is a user's mistake, named before any work."""
        if self.location.listing is None and not Path(self.location.root).is_dir():
            raise ConfigError(SETTING, f"{self.location.root} is not a folder")

    def path_of(self, table: TableRef) -> str:
        return f"{self._relative(table)} in {self.description}"

    def uri(self, table: TableRef) -> str:
        return self.location.table_uri(self._relative(table))

    @staticmethod
    def _relative(table: TableRef) -> str:
        # OneLake's Tables/<schema>/<table>: the landing zone's <schema>.schema/<table> folder.
        return table.name if table.schema is None else f"{table.schema}/{table.name}"

    def list_tables(self, schema: str) -> list[str]:
        """Names of the folders under ``<schema>/`` that hold a Delta table."""
        store = self._store()
        names = []
        for folder in store.list_folders(schema):
            folder = folder.rstrip("/")
            if store.list_files(f"{folder}/{DELTA_LOG}"):  # a table's commits: a Delta table
                names.append(folder.rsplit("/", 1)[-1])
        return sorted(names)

    def open(self, table: TableRef) -> pa_dataset.Dataset | None:
        """The table's current version as a pyarrow dataset (read lazily), or None if absent."""
        from deltalake import DeltaTable

        uri = self.uri(table)
        options = dict(self.location.storage_options)
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        return DeltaTable(uri, storage_options=options).to_pyarrow_dataset()

    def _store(self) -> LandingZoneStore:
        listing = self.location.listing
        if listing is not None and self._store_factory is not None:
            return self._store_factory(listing)
        return self.location.store(self._credential)
