"""The state-store protocol: small JSON records with compare-and-swap on an ETag.

Everything durable the engine remembers (file sequence numbers, plans, partition progress,
checkpoints, schemas) is a JSON object under (kind, key). Implementations: Azure Table Storage and
local SQLite; one contract test suite (tests/state) holds both to the same behaviour.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import MirrorError

JsonObject = dict[str, Any]
# Every value ``update`` writes names the operation that wrote it, so a write whose answer was
# lost (the service applied it, the connection died, the retry met a changed ETag) is recognised
# by reading the record back, instead of being applied a second time.
OPERATION_KEY = "_op"


class ConflictError(MirrorError):
    """A compare-and-swap lost: the record changed (or appeared, or vanished) since it was read."""


@dataclass(frozen=True)
class Record:
    value: JsonObject
    etag: str


class StateStore(Protocol):
    @property
    def description(self) -> str:
        """Where state lives, fit for logs: never contains a secret."""
        ...

    def get(self, kind: str, key: str) -> Record | None:
        """The record, or None only when it definitely does not exist (errors raise)."""
        ...

    def create(self, kind: str, key: str, value: JsonObject) -> Record:
        """Insert a new record; ConflictError if one exists."""
        ...

    def replace(self, kind: str, key: str, value: JsonObject, etag: str) -> Record:
        """Overwrite a record read with ``etag``; ConflictError if it changed or vanished."""
        ...

    def list(self, kind: str) -> list[tuple[str, Record]]:
        """Every record of one kind, sorted by key."""
        ...

    def delete(self, kind: str, key: str, etag: str | None = None) -> None:
        """Remove a record (only if unchanged when ``etag`` is given); no error if absent."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def update(
    store: StateStore,
    kind: str,
    key: str,
    change: Callable[[JsonObject | None], JsonObject],
    attempts: int = 50,
) -> Record:
    """Apply ``change`` to the current value (None if absent) with compare-and-swap.

    ``change`` must be a pure function of its input: it is re-run when another writer wins.
    Idempotent across lost answers: when a write fails with a conflict (or an error after which
    it may still have been applied), the record read next is this call's own write if it names
    this call's operation id, and is returned as the result instead of changing it again.
    """
    operation = uuid.uuid4().hex
    for _ in range(attempts):
        current = store.get(kind, key)
        if current is not None and current.value.get(OPERATION_KEY) == operation:
            return current  # an earlier attempt landed; only its answer was lost
        new_value = {**change(None if current is None else current.value), OPERATION_KEY: operation}
        try:
            if current is None:
                return store.create(kind, key, new_value)
            return store.replace(kind, key, new_value, current.etag)
        except ConflictError:
            continue
    raise ConflictError(f"state record {kind}/{key} kept changing; gave up after {attempts} tries")
