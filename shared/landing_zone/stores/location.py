"""Parse the LANDING_ZONE setting into where and how to write. Pure: no network, no disk.

Accepted forms (``...`` = optional deeper folders):

- ``https://onelake.dfs.fabric.microsoft.com/<workspace>/<item>/Files/LandingZone[/...]``
  (also regional ``<region>-onelake`` hosts and ``abfss://<workspace>@onelake.dfs...``) → DFS
- ``https://<account>.dfs.core.windows.net/<filesystem>[/...]`` (and ``abfss://``) → DFS
- ``https://onelake.blob.fabric.microsoft.com/<workspace>/<item>/Files/LandingZone[/...]`` → Blob
- ``https://<account>.blob.core.windows.net/<container>[/...]`` → Blob
- ``http://127.0.0.1:<port>/devstoreaccount1/<container>[/...]`` (Azurite) → Blob
- ``<storage connection string>;Container=<name>[;Path=<folder>]`` → Blob
- ``file:///absolute/path`` or a plain filesystem path → local folder
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from shared.errors import ConfigError
from shared.redaction import redact

SETTING = "LANDING_ZONE"
AZURITE_ACCOUNT = "devstoreaccount1"

_ONELAKE_HOST = re.compile(r"^(?:[a-z0-9-]+-)?onelake\.(dfs|blob)\.fabric\.microsoft\.com$")
_STORAGE_HOST = re.compile(
    r"^[a-z0-9]{3,24}\.(dfs|blob)\.core\.(?:windows\.net|chinacloudapi\.cn|usgovcloudapi\.net)$"
)
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
_CONNECTION_STRING_KEYS = {
    "defaultendpointsprotocol",
    "accountname",
    "accountkey",
    "blobendpoint",
    "sharedaccesssignature",
    "usedevelopmentstorage",
    "endpointsuffix",
}


@dataclass(frozen=True)
class LandingZoneLocation:
    kind: Literal["onelake", "blob", "local"]
    account_url: str | None = None
    """``https://<host>`` for DFS; the blob service URL (Azurite: with the account path)."""
    filesystem: str | None = None
    """DFS file system: the OneLake workspace, or an ADLS Gen2 container."""
    container: str | None = None
    """Blob container; on OneLake's blob endpoint, the workspace."""
    base_path: str = ""
    """Folder inside the file system/container, e.g. ``<item>/Files/LandingZone``."""
    local_path: str | None = None
    connection_string: str | None = field(default=None, repr=False)
    """Only for the connection-string form, without our Container/Path keys. A secret."""

    @property
    def is_onelake(self) -> bool:
        """OneLake's workspace container exists already and must never be created by us."""
        host = urlsplit(self.account_url or "").hostname or ""
        return bool(_ONELAKE_HOST.match(host))


def _fail(problem: str) -> ConfigError:
    return ConfigError(SETTING, redact(problem))


def parse_landing_zone(location: str) -> LandingZoneLocation:
    location = location.strip()
    if not location:
        raise _fail("is empty; give a OneLake landing-zone URL, a blob URL or a folder")
    if _looks_like_connection_string(location):
        return _parse_connection_string(location)
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        return _parse_local(location, scheme)
    if scheme == "abfss":
        return _parse_abfss(location)
    if scheme in ("https", "http"):
        return _parse_url(location)
    raise _fail(f"unsupported scheme {scheme!r} in {_safe_url(location)}")


def _looks_like_connection_string(location: str) -> bool:
    keys = {part.split("=", 1)[0].strip().lower() for part in location.split(";") if "=" in part}
    return bool(re.match(r"[A-Za-z]+=", location)) and bool(keys & _CONNECTION_STRING_KEYS)


def _parse_connection_string(location: str) -> LandingZoneLocation:
    kept: list[str] = []
    container = path = None
    for part in filter(None, (p.strip() for p in location.split(";"))):
        key, _, value = part.partition("=")
        if key.lower() == "container":
            container = value
        elif key.lower() == "path":
            path = value
        else:
            kept.append(part)
    if not container:
        raise _fail("a storage connection string needs ';Container=<name>' (and optional ';Path=')")
    return LandingZoneLocation(
        kind="blob",
        container=container,
        base_path=_folder(path or ""),
        connection_string=";".join(kept) + ";",
    )


def _parse_local(location: str, scheme: str) -> LandingZoneLocation:
    if scheme == "file":
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise _fail(f"file URL {location!r} names a remote host; use a local path")
        location = unquote(parts.path)
    return LandingZoneLocation(kind="local", local_path=os.path.abspath(location))


def _parse_abfss(location: str) -> LandingZoneLocation:
    parts = urlsplit(location)
    filesystem, at, host = parts.netloc.rpartition("@")
    if not at or not filesystem:
        raise _fail(f"{_safe_url(location)} must look like abfss://<filesystem>@<host>/<path>")
    return _parse_url(f"https://{host}/{filesystem}{parts.path}")


def _parse_url(location: str) -> LandingZoneLocation:
    parts = urlsplit(location)
    safe = _safe_url(location)
    if parts.query or parts.fragment:
        raise _fail(
            f"{safe}: query strings (SAS tokens) are not accepted; use an Entra credential "
            "or a connection string"
        )
    host = (parts.hostname or "").lower()
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if parts.scheme.lower() == "http" or host in _LOOPBACK_HOSTS:
        return _parse_emulator(parts.scheme.lower(), parts.netloc, host, segments, safe)
    if onelake := _ONELAKE_HOST.match(host):
        if len(segments) < 4 or segments[2:4] != ["Files", "LandingZone"]:
            raise _fail(
                f"{safe}: a OneLake landing zone is "
                f"https://{host}/<workspace>/<mirroredDatabase>/Files/LandingZone"
            )
        return _remote(onelake.group(1), host, segments)
    if storage := _STORAGE_HOST.match(host):
        if not segments:
            raise _fail(f"{safe}: name the container (file system) after the host")
        return _remote(storage.group(1), host, segments)
    raise _fail(f"{safe}: not a OneLake, Azure Storage or local emulator address")


def _remote(endpoint: str, host: str, segments: list[str]) -> LandingZoneLocation:
    top, base = segments[0], _folder("/".join(segments[1:]))
    if endpoint == "dfs":
        return LandingZoneLocation(
            kind="onelake", account_url=f"https://{host}", filesystem=top, base_path=base
        )
    return LandingZoneLocation(
        kind="blob", account_url=f"https://{host}", container=top, base_path=base
    )


def _parse_emulator(
    scheme: str, netloc: str, host: str, segments: list[str], safe: str
) -> LandingZoneLocation:
    if host not in _LOOPBACK_HOSTS:
        raise _fail(f"{safe}: plain http is only accepted for a local emulator (127.0.0.1)")
    if len(segments) < 2 or segments[0] != AZURITE_ACCOUNT:
        raise _fail(
            f"{safe}: an emulator URL is http://127.0.0.1:<port>/{AZURITE_ACCOUNT}/<container>"
            "[/<folder>]; use a connection string for other accounts"
        )
    return LandingZoneLocation(
        kind="blob",
        account_url=f"{scheme}://{netloc}/{AZURITE_ACCOUNT}",
        container=segments[1],
        base_path=_folder("/".join(segments[2:])),
    )


def _folder(path: str) -> str:
    cleaned = path.strip("/")
    if cleaned and any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise _fail(f"folder {path!r} must not contain '.', '..' or empty segments")
    return cleaned


def _safe_url(location: str) -> str:
    """The URL without query, fragment or user info: those are where secrets hide."""
    parts = urlsplit(location)
    host = parts.netloc.rpartition("@")[2]
    return redact(f"{parts.scheme}://{host}{parts.path}")
