"""A landing zone in a local folder: for the CLI demo, tests, and a laptop without Azure."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from shared.errors import ConfigError
from shared.landing_zone.stores._common import clean_path, join, staging_path
from shared.landing_zone.stores.base import PathExistsError, PathNotFoundError, StoredFile


class LocalStore:
    """Files below ``root``; publishing uses hard links because ``link`` never replaces a target."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).absolute()

    @property
    def description(self) -> str:
        return f"local folder {self._root}"

    def check_usable(self, *, writing: bool) -> None:
        """ConfigError naming LANDING_ZONE unless this process can use the folder; writes nothing.

        Reading needs an existing, readable folder. Writing needs a writable folder, or one
        that does not exist yet below a writable folder (it is created on the first write).
        """
        root = self._root
        existing = root
        try:
            while not existing.exists():
                existing = existing.parent
        except PermissionError:
            raise _unusable(f"{existing} cannot be searched (permission denied)") from None
        if not existing.is_dir():
            if existing == root:
                raise _unusable(f"{root} is a file, not a folder")
            raise _unusable(f"{root} is inside {existing}, which is a file")
        if not writing:
            if existing != root:
                raise _unusable(f"{root} does not exist")
            if not os.access(root, os.R_OK | os.X_OK):
                raise _unusable(f"{root} cannot be read (permission denied)")
        elif not os.access(existing, os.W_OK | os.X_OK):
            where = "is" if existing == root else f"cannot be created: {existing} is"
            raise _unusable(f"{root} {where} not writable")
        elif existing != root:
            _try_creating(existing / root.relative_to(existing).parts[0], root)

    def _file(self, path: str) -> Path:
        return self._root / clean_path(path)

    def _folder(self, folder: str) -> Path:
        return self._root / clean_path(folder, folder=True)

    def _stage(self, path: str, data: bytes) -> Path:
        """Write ``data`` durably to a fresh staging sibling of ``path`` and return it."""
        staged = self._file(staging_path(path))
        staged.parent.mkdir(parents=True, exist_ok=True)
        with open(staged, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return staged

    def write(self, path: str, data: bytes) -> None:
        target = self._file(path)
        staged = self._stage(path, data)
        os.replace(staged, target)
        _fsync_dir(target.parent)

    def write_new(self, path: str, data: bytes) -> None:
        target = self._file(path)
        staged = self._stage(path, data)
        try:
            _link_new(staged, target, path)
        finally:
            staged.unlink()

    def read(self, path: str) -> bytes:
        try:
            return self._file(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise PathNotFoundError(f"{path}: not found") from error

    def size(self, path: str) -> int | None:
        file = self._file(path)
        return file.stat().st_size if file.is_file() else None

    def list_files(self, folder: str) -> list[StoredFile]:
        prefix = clean_path(folder, folder=True)
        files = []
        for entry in self._entries(folder):
            try:
                if entry.is_file():
                    stat = entry.stat()
                    files.append(StoredFile(join(prefix, entry.name), stat.st_size, _version(stat)))
            except FileNotFoundError:
                continue  # renamed or removed while listing: another process finished a write
        return files

    def list_folders(self, folder: str) -> list[str]:
        prefix = clean_path(folder, folder=True)
        return [join(prefix, entry.name) for entry in self._entries(folder) if entry.is_dir()]

    def _entries(self, folder: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self._folder(folder)) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def rename_new(self, source: str, target: str) -> None:
        source_file, target_file = self._file(source), self._file(target)
        if not source_file.is_file():
            raise PathNotFoundError(f"{source}: not found")
        target_file.parent.mkdir(parents=True, exist_ok=True)
        _link_new(source_file, target_file, target)
        source_file.unlink()
        _fsync_dir(source_file.parent)

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(path).unlink()

    def delete_unchanged(self, file: StoredFile) -> bool:
        # A local folder has no conditional delete: the check and the unlink are two calls, so a
        # writer re-creating the name in between is not excluded. The cloud stores make it one.
        path = self._file(file.path)
        try:
            if _version(path.stat()) != file.version:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def delete_empty_folder(self, folder: str) -> None:
        path = self._folder(folder)
        if path != self._root:
            with contextlib.suppress(OSError):  # missing, or not empty: someone else's files
                path.rmdir()

    def delete_folder(self, folder: str) -> None:
        path = self._folder(folder)
        if path == self._root:
            # Keep the root itself so the store stays usable, as the cloud stores do.
            for entry in self._entries(folder):
                _remove(Path(entry.path))
        else:
            _remove(path)


def _version(stat: os.stat_result) -> str:
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"


def _try_creating(folder: Path, root: Path) -> None:
    """Create ``folder`` (the first missing folder of ``root``) and remove it again.

    ``os.access`` cannot tell whether a folder can be made: root passes every permission check,
    and a pseudo file system refuses new folders whatever its mode (``/proc`` answers ENOENT).
    Making the one folder the first write would make, and removing it, leaves nothing behind.
    """
    try:
        folder.mkdir()
    except FileExistsError:
        return  # made meanwhile by another process: the folder can be used
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise _unusable(f"{root} cannot be created: making {folder} failed: {reason}") from None
    with contextlib.suppress(OSError):
        folder.rmdir()


def _unusable(problem: str) -> ConfigError:
    return ConfigError("LANDING_ZONE", problem)


def _link_new(source: Path, target: Path, name: str) -> None:
    """Make ``source``'s complete content appear as ``target``; never replaces ``target``."""
    try:
        os.link(source, target)
    except FileExistsError as error:
        raise PathExistsError(f"{name}: already exists") from error
    except FileNotFoundError as error:
        raise PathNotFoundError(f"{name}: source vanished") from error
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable (a crash must not lose a published name)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
