"""Parse the LANDING_ZONE setting into where and how to write. Pure: no network, no disk.

Accepted forms (``...`` = optional deeper folders); what makes an Azure Storage URL or connection
string valid, and how each is authenticated, is :mod:`shared.storage_location`'s, shared with
STATE_STORE and QUEUE_STORAGE:

- ``https://onelake.dfs.fabric.microsoft.com/<workspace>/<item>/Files/LandingZone[/...]``
  (also regional ``<region>-onelake`` hosts and ``abfss://<workspace>@onelake.dfs...``) → DFS
- ``https://<account>.dfs.core.windows.net/<filesystem>[/...]`` (and ``abfss://``) → DFS
- ``https://onelake.blob.fabric.microsoft.com/<workspace>/<item>/Files/LandingZone[/...]`` → Blob
- ``https://<account>.blob.core.windows.net/<container>[/...]`` → Blob
- ``http://127.0.0.1:<port>/devstoreaccount1/<container>[/...]`` (Azurite; also ``localhost``
  and ``[::1]``) → Blob, with the emulator's published key
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
from shared.redaction import redact_url
from shared.storage_location import (
    config_error,
    is_connection_string,
    is_onelake_host,
    parse_connection_string,
    parse_storage_url,
)

SETTING = "LANDING_ZONE"
# A schema folder's suffix, shared.landing_zone.tables.SCHEMA_SUFFIX (that module imports the
# stores, so it cannot be imported here).
SCHEMA_SUFFIX = ".schema"
_CONTAINER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_OWN_NAMES = ("Container", "Path")
"""Connection-string names of this setting, taken out before the string reaches the SDK."""


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
    """For connection strings (without our Container/Path) and Azurite URLs. A secret."""

    @property
    def is_onelake(self) -> bool:
        """OneLake's workspace container exists already and must never be created by us."""
        return is_onelake_host(urlsplit(self.account_url or "").hostname or "")

    @property
    def needs_token(self) -> bool:
        """Reached with a token credential: an Azure URL, not a folder, key or emulator."""
        return self.kind != "local" and self.connection_string is None


def _fail(problem: str) -> ConfigError:
    return config_error(SETTING, problem)


def parse_landing_zone(location: str) -> LandingZoneLocation:
    location = location.strip()
    if not location:
        raise _fail("is empty; give a OneLake landing-zone URL, a blob URL or a folder")
    if is_connection_string(location, _OWN_NAMES):
        return _parse_connection_string(location)
    try:
        scheme = urlsplit(location).scheme.lower()
    except ValueError:
        raise _fail(f"{redact_url(location)} is not a valid URL") from None
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        parsed = _parse_local(location, scheme)
        assert parsed.local_path is not None
        _check_not_inside_a_schema(parsed.local_path.replace(os.sep, "/"))
        return parsed
    parsed = _parse_url(location)
    _check_not_inside_a_schema(parsed.base_path)
    return parsed


def _check_not_inside_a_schema(path: str) -> None:
    """A landing zone holds ``<schema>.schema/<table>`` folders; it is never one of them.

    LANDING_ZONE set one or two levels too deep would still "work": a ``<database>.schema``
    folder's tables look like tables without a schema, and mirroring into it nests a second
    ``.schema`` folder. Name the mistake and the folder that was meant instead.
    """
    parts = path.rstrip("/").split("/")
    for depth, part in enumerate(reversed(parts[-2:]), start=1):
        if part.endswith(SCHEMA_SUFFIX) and len(part) > len(SCHEMA_SUFFIX):
            what = "a <database>.schema folder" if depth == 1 else "a table folder"
            meant = "/".join(parts[:-depth]) or "/"
            raise _fail(
                f"{path} is {what} inside a landing zone; LANDING_ZONE is the folder holding "
                f"the <database>.schema folders ({meant})"
            )


def _parse_connection_string(location: str) -> LandingZoneLocation:
    parsed = parse_connection_string(SETTING, location, "blob", _OWN_NAMES)
    container = parsed.extras.get("container")
    if not container:
        raise _fail("a storage connection string needs ';Container=<name>' (and optional ';Path=')")
    return LandingZoneLocation(
        kind="blob",
        container=_container(container),
        base_path=_folder(parsed.extras.get("path", "")),
        connection_string=parsed.sdk_text,
    )


def _parse_local(location: str, scheme: str) -> LandingZoneLocation:
    if scheme == "file":
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise _fail(f"file URL {location!r} names a remote host; use a local path")
        location = unquote(parts.path)
    return LandingZoneLocation(kind="local", local_path=os.path.abspath(location))


def _parse_url(location: str) -> LandingZoneLocation:
    url = parse_storage_url(SETTING, location, ("dfs", "blob"))
    if url.onelake and (len(url.path) < 4 or url.path[2:4] != ("Files", "LandingZone")):
        raise _fail(
            f"{url.safe_text}: a OneLake landing zone is "
            f"{url.account_url}/<workspace>/<mirroredDatabase>/Files/LandingZone"
        )
    if not url.path:
        if url.is_emulator:
            raise _fail(f"{url.safe_text}: an emulator URL is {url.account_url}/<container>[/...]")
        raise _fail(f"{url.safe_text}: name the container (file system) after the host")
    top, base = url.path[0], _folder("/".join(url.path[1:]))
    if not url.onelake:
        top = _container(top)
    if url.service == "dfs":
        return LandingZoneLocation(
            kind="onelake", account_url=url.account_url, filesystem=top, base_path=base
        )
    return LandingZoneLocation(
        kind="blob",
        account_url=url.account_url,
        container=top,
        base_path=base,
        connection_string=url.connection_string,
    )


def _container(name: str) -> str:
    """Azure's rule for container and file-system names, checked before any request."""
    if not _CONTAINER_NAME.fullmatch(name) or "--" in name:
        raise _fail(
            f"container {name!r} must be 3-63 lower-case letters, digits and single hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def _folder(path: str) -> str:
    cleaned = path.strip("/")
    if cleaned and any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise _fail(f"folder {path!r} must not contain '.', '..' or empty segments")
    return cleaned
