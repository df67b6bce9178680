"""A state store whose operations ride out transient storage faults (STORAGE_RETRY_SECONDS).

A write whose answer was lost may have landed. Retried, a create then meets the record it made
and a replace meets the ETag its own write changed: both raise ConflictError, which propagates
unchanged, as for any other writer's win; ``update()`` tells its own landed write from another
writer's by the operation id it stamps into the value. A delete retried after a lost answer finds
nothing to delete, which is no error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shared.state.base import JsonObject, Record, StateStore
from shared.state.codec import record_name
from shared.storage_retry import StorageRetrier

T = TypeVar("T")


class RetryingStateStore:
    def __init__(self, store: StateStore, budget_seconds: float) -> None:
        self._store = store
        self._budget_seconds = budget_seconds

    @property
    def description(self) -> str:
        return self._store.description

    def get(self, kind: str, key: str) -> Record | None:
        return self._call(f"reading {record_name(kind, key)}", lambda: self._store.get(kind, key))

    def create(self, kind: str, key: str, value: JsonObject) -> Record:
        return self._call(
            f"creating {record_name(kind, key)}", lambda: self._store.create(kind, key, value)
        )

    def replace(self, kind: str, key: str, value: JsonObject, etag: str) -> Record:
        return self._call(
            f"writing {record_name(kind, key)}",
            lambda: self._store.replace(kind, key, value, etag),
        )

    def list(self, kind: str) -> list[tuple[str, Record]]:
        return self._call(f"listing the {kind} records", lambda: self._store.list(kind))

    def delete(self, kind: str, key: str, etag: str | None = None) -> None:
        self._call(
            f"deleting {record_name(kind, key)}", lambda: self._store.delete(kind, key, etag)
        )

    def close(self) -> None:
        self._store.close()

    def _call(self, action: str, operation: Callable[[], T]) -> T:
        # The description never holds a secret: the message may reach a log or the console.
        return StorageRetrier(f"{self.description}: {action}", self._budget_seconds).call(operation)
