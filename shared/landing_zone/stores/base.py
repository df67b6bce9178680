"""The landing-zone store protocol: the few file operations the publisher and replayer need.

Paths are relative to the landing-zone root and use "/"
(e.g. ``sales.schema/orders/_metadata.json``).
Implementations: OneLake/ADLS Gen2 (DFS), Azure Blob, local folder. One contract test suite
(tests/landing_zone/stores) holds them all to the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import MirrorError


class PathExistsError(MirrorError):
    """The target path already exists; published paths are never overwritten."""


class PathNotFoundError(MirrorError):
    """The path does not exist."""


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    # Changes whenever the file is replaced or re-created (an ETag; inode and mtime locally), so a
    # delete of a file listed earlier can refuse to touch a newer file of the same name.
    version: str = field(default="", compare=False)


class LandingZoneStore(Protocol):
    @property
    def description(self) -> str:
        """Where this store writes, fit for logs: never contains a secret."""
        ...

    def write(self, path: str, data: bytes) -> None:
        """Create or replace a file. Only for ``_``-prefixed staging and control files."""
        ...

    def write_new(self, path: str, data: bytes) -> None:
        """Create a file that is never visible partially written; PathExistsError if present."""
        ...

    def read(self, path: str) -> bytes:
        """The whole file; PathNotFoundError if absent."""
        ...

    def size(self, path: str) -> int | None:
        """The file's size in bytes, or None if it does not exist."""
        ...

    def list_files(self, folder: str) -> list[StoredFile]:
        """Files directly inside ``folder`` ("" is the root), sorted by path, not recursive."""
        ...

    def list_folders(self, folder: str) -> list[str]:
        """Sub-folders directly inside ``folder``, as paths from the root, sorted."""
        ...

    def rename_new(self, source: str, target: str) -> None:
        """Atomically make ``source`` appear complete as ``target`` and remove ``source``.

        PathExistsError if ``target`` exists (it is left untouched), PathNotFoundError if
        ``source`` does not exist.
        """
        ...

    def delete(self, path: str) -> None:
        """Remove a file; no error if it does not exist."""
        ...

    def delete_folder(self, folder: str) -> None:
        """Remove a folder and everything below it; no error if it does not exist."""
        ...

    def delete_unchanged(self, file: StoredFile) -> bool:
        """Remove a file as it was listed; False (nothing done) if it is gone or was replaced
        since. What a fenced rebuild uses: it can never delete a newer writer's file."""
        ...

    def delete_empty_folder(self, folder: str) -> None:
        """Remove ``folder`` if it holds nothing; nothing happens if it is missing or not empty."""
        ...
