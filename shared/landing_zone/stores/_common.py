"""Helpers shared by the landing-zone stores: path rules, staging names, SDK options, errors."""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.errors import ConfigError
from shared.landing_zone.stores.base import PathExistsError, PathNotFoundError
from shared.landing_zone.stores.location import SETTING

# Azure SDK pipeline settings, stated once so every store retries the same way. The SDK retries
# only requests that never reached the service. A request the service may have acted on (its
# answer lost, or a 5xx/408/429) is retried by RetryingStore within STORAGE_RETRY_SECONDS: the
# SDK's own retry of a lost write_new or rename would report the write that landed as "already
# exists" or "not found", where RetryingStore recognises it by its bytes.
SDK_OPTIONS: dict[str, Any] = {
    "retry_total": 5,
    "retry_connect": 5,
    "retry_read": 0,
    "retry_status": 0,
    "connection_timeout": 20,
    "read_timeout": 300,
}


class InvalidPathError(ValueError):
    """A landing-zone path that could escape the root or is not in the ``a/b/c`` form."""


def clean_path(path: str, *, folder: bool = False) -> str:
    """Check a root-relative path and return it without a trailing "/" (folders may be "")."""
    if folder:
        path = path.rstrip("/")
        if path == "":
            return ""
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise InvalidPathError(
            f"landing-zone path {path!r} must be relative, '/'-separated, without '.', '..' "
            "or empty segments"
        )
    return path


def join(base: str, path: str) -> str:
    """``base`` and ``path`` joined with "/", either may be empty."""
    return f"{base}/{path}" if base and path else base or path


def relative(base: str, full: str) -> str:
    """The part of ``full`` below ``base`` (inverse of :func:`join`)."""
    return full[len(base) + 1 :] if base else full


def parent(path: str) -> str:
    return posixpath.dirname(path)


def staging_path(path: str) -> str:
    """A unique ``_``-prefixed sibling of ``path``.

    Same folder, so a rename never crosses directories; ``_`` so Fabric's replicator ignores
    it; unique, so concurrent writers of one target never share a staging file.
    """
    folder, name = posixpath.split(path)
    return join(folder, f"_{name}.{uuid.uuid4().hex[:12]}.staging")


@contextmanager
def azure_errors(path: str, target: str | None = None) -> Iterator[None]:
    """Translate the SDK's 404/409/412 into the store protocol's errors.

    ``target`` names the path that may already exist when it differs from ``path`` (a rename).
    """
    try:
        yield
    except ResourceNotFoundError as error:
        raise PathNotFoundError(f"{path}: not found") from error
    except (ResourceExistsError, ResourceModifiedError) as error:
        # 409 BlobAlreadyExists/PathAlreadyExists, or 412 ConditionNotMet from If-None-Match: *.
        raise PathExistsError(f"{target or path}: already exists") from error


def require_credential(credential: TokenCredential | None) -> TokenCredential:
    if credential is None:
        raise ConfigError(SETTING, "an Azure URL needs an Entra credential; none was configured")
    return credential


def is_folder_marker(metadata: dict[str, str] | None) -> bool:
    """Hierarchical-namespace accounts (OneLake) expose each directory as a marked blob."""
    return (metadata or {}).get("hdi_isfolder") == "true"
