"""Landing-zone stores (OneLake DFS, Blob, local folder) and the factory that picks one.

``open_landing_zone(os.environ["LANDING_ZONE"], credential)`` is all a caller needs; the accepted
forms of the setting are listed in :mod:`shared.landing_zone.stores.location`.
"""

from __future__ import annotations

from azure.core.credentials import TokenCredential

from shared.landing_zone.stores.base import (
    LandingZoneStore,
    PathExistsError,
    PathNotFoundError,
    StoredFile,
)
from shared.landing_zone.stores.blob import BlobStore
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.stores.location import LandingZoneLocation, parse_landing_zone
from shared.landing_zone.stores.onelake import OneLakeStore

__all__ = [
    "BlobStore",
    "LandingZoneLocation",
    "LandingZoneStore",
    "LocalStore",
    "OneLakeStore",
    "PathExistsError",
    "PathNotFoundError",
    "StoredFile",
    "open_landing_zone",
    "parse_landing_zone",
]


def open_landing_zone(location: str, credential: TokenCredential | None = None) -> LandingZoneStore:
    """The store for a LANDING_ZONE setting; ConfigError if the setting is malformed.

    ``credential`` (an azure-identity credential) is needed for Azure URLs only; connection
    strings carry their own key, and the local emulator URL uses its public development key.
    Opening touches no network: containers/file systems are created on first write if needed.
    """
    parsed = parse_landing_zone(location)
    if parsed.kind == "local":
        assert parsed.local_path is not None
        return LocalStore(parsed.local_path)
    if parsed.kind == "blob":
        return BlobStore.from_location(parsed, credential)
    return OneLakeStore.from_location(parsed, credential)
