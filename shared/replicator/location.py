"""Where the replicator's Delta tables live: ``--tables``, parsed once.

The accepted forms are the landing zone's (a local folder, ``file://``, an Azurite URL, a Blob
URL or a storage connection string with ``;Container=``), parsed by the same parser
(:func:`shared.landing_zone.stores.parse_landing_zone`) so there is one rule per kind of input.
Delta tables are written by delta-rs (``deltalake``), whose object store takes a URI and
``storage_options``; the side files (the replicator's progress and status) and table drops go
through the landing-zone store of the same location.

Supported for Delta: a local folder, and Blob storage reached with an account key (a connection
string, or Azurite's URL with its published development key). A token-only URL (OneLake,
``https://<account>.blob...``) is refused with a clear error: the replicator stands in for
Fabric's, which writes OneLake's ``Tables/`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigError
from shared.landing_zone.stores import BlobStore, LocalStore, parse_landing_zone
from shared.landing_zone.stores.base import LandingZoneStore

OPTION = "--tables"


@dataclass(frozen=True)
class TablesLocation:
    """The Delta tables' root (as OneLake's ``Tables/``): one table at ``<schema>/<table>``."""

    uri: str
    """The root as delta-rs names it: an absolute path, or ``az://<container>/<folder>``."""
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)
    """delta-rs object-store options; may hold an account key."""
    description: str = ""
    """Where, fit for logs and errors: never holds a secret."""
    store: LandingZoneStore | None = field(default=None, repr=False, compare=False)

    def table_uri(self, path: str) -> str:
        return f"{self.uri.rstrip('/')}/{path}"

    def side_store(self) -> LandingZoneStore:
        assert self.store is not None
        return self.store


def parse_tables_location(text: str) -> TablesLocation:
    """The Delta tables' root for ``--tables``; ConfigError naming ``--tables`` if unusable."""
    try:
        parsed = parse_landing_zone(text)
    except ConfigError as error:
        raise ConfigError(OPTION, error.problem) from None
    if parsed.kind == "local":
        assert parsed.local_path is not None
        root = Path(parsed.local_path)
        if root.exists() and not root.is_dir():
            raise ConfigError(OPTION, f"{root} is a file, not a folder")
        return TablesLocation(str(root), {}, f"local folder {root}", LocalStore(root))
    if parsed.kind != "blob" or parsed.connection_string is None:
        raise ConfigError(
            OPTION,
            "Delta tables can be written to a local folder, Azurite, or Blob storage named by a "
            "connection string with an account key (…;Container=<name>[;Path=<folder>]); "
            "OneLake and token-authenticated URLs are Fabric's own replicator's to write",
        )
    parts = _connection_parts(parsed.connection_string)
    account, key = parts.get("accountname"), parts.get("accountkey")
    if not account or not key:
        raise ConfigError(OPTION, "the connection string needs AccountName and AccountKey")
    assert parsed.container is not None
    options = {"account_name": account, "account_key": key}
    endpoint = parts.get("blobendpoint")
    if endpoint:
        # Azurite and other custom endpoints are path-style (http://host:port/<account>).
        options["endpoint"] = endpoint.rstrip("/")
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    folder = "/".join(part for part in (parsed.container, parsed.base_path.strip("/")) if part)
    where = endpoint.rstrip("/") if endpoint else f"https://{account}.blob.core.windows.net"
    return TablesLocation(
        f"az://{folder}",
        options,
        f"blob container {where}/{folder}",
        BlobStore.from_location(parsed, None),
    )


def _connection_parts(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            values[name.strip().lower()] = value.strip()
    return values
