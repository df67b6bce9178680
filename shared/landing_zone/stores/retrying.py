"""A landing-zone store whose operations ride out transient storage faults (STORAGE_RETRY_SECONDS).

Every operation is retried. Two writes refuse to repeat themselves, so a retry after a lost answer
can meet its own earlier attempt's effect, and recognises it by the bytes:
- ``write_new`` meets PathExistsError: done if the file holds exactly the bytes written;
- ``rename_new`` meets PathNotFoundError for the source (the rename landed), or PathExistsError
  (on Blob a rename is a copy then a delete, and only the delete is missing): done if the target
  holds the source's bytes. Those are read once an attempt has failed, so an unfaulted rename
  reads nothing; if the source is already gone by then, nothing proves the target is this call's
  own and the error propagates (the publisher then checks the target against the SHA-256 it
  recorded).
Only a retry recognises: a first attempt that meets an existing file reports it, as ever.
"""

from __future__ import annotations

from shared.landing_zone.stores.base import (
    LandingZoneStore,
    PathExistsError,
    PathNotFoundError,
    StoredFile,
)
from shared.storage_retry import StorageRetrier


class RetryingStore:
    def __init__(self, store: LandingZoneStore, budget_seconds: float) -> None:
        self._store = store
        self._budget_seconds = budget_seconds

    @property
    def description(self) -> str:
        return self._store.description

    def write(self, path: str, data: bytes) -> None:
        self._retrier("writing", path).call(lambda: self._store.write(path, data))

    def write_new(self, path: str, data: bytes) -> None:
        retrier = self._retrier("writing", path)

        def attempt() -> None:
            try:
                self._store.write_new(path, data)
            except PathExistsError:
                if not (retrier.retrying and self._holds(path, data)):
                    raise

        retrier.call(attempt)

    def read(self, path: str) -> bytes:
        return self._retrier("reading", path).call(lambda: self._store.read(path))

    def size(self, path: str) -> int | None:
        return self._retrier("reading the size of", path).call(lambda: self._store.size(path))

    def list_files(self, folder: str) -> list[StoredFile]:
        return self._retrier("listing", folder).call(lambda: self._store.list_files(folder))

    def list_folders(self, folder: str) -> list[str]:
        return self._retrier("listing", folder).call(lambda: self._store.list_folders(folder))

    def rename_new(self, source: str, target: str) -> None:
        retrier = self._retrier("renaming", f"{source} to {target}")
        moved: bytes | None = None  # the source's bytes, read on a retry while it exists

        def attempt() -> None:
            nonlocal moved
            if retrier.retrying and moved is None:
                try:
                    moved = self._store.read(source)
                except PathNotFoundError:
                    pass  # moved already, perhaps by the attempt that failed: nothing to compare
            try:
                self._store.rename_new(source, target)
            except PathExistsError:
                if moved is None or not self._holds(target, moved):
                    raise
                self._store.delete(source)  # the copy landed; the source's removal did not
            except PathNotFoundError:
                if moved is None or not self._holds(target, moved):
                    raise

        retrier.call(attempt)

    def delete(self, path: str) -> None:
        self._retrier("deleting", path).call(lambda: self._store.delete(path))

    def delete_folder(self, folder: str) -> None:
        self._retrier("deleting folder", folder).call(lambda: self._store.delete_folder(folder))

    def delete_unchanged(self, file: StoredFile) -> bool:
        # A retry after a lost answer finds the file gone and says False: callers only sweep.
        return self._retrier("deleting", file.path).call(lambda: self._store.delete_unchanged(file))

    def delete_empty_folder(self, folder: str) -> None:
        self._retrier("deleting folder", folder).call(
            lambda: self._store.delete_empty_folder(folder)
        )

    def _retrier(self, action: str, path: str) -> StorageRetrier:
        # The description never holds a secret: the message may reach a log or the console.
        return StorageRetrier(f"{self.description}: {action} {path}", self._budget_seconds)

    def _holds(self, path: str, data: bytes) -> bool:
        try:
            return self._store.read(path) == data
        except PathNotFoundError:
            return False
