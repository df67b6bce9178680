"""State in an Azure Table Storage table (or Azurite): one entity per record.

PartitionKey is the kind, so ``list(kind)`` is a single-partition query; RowKey is the key escaped
by ``encode_row_key``. A property holds at most 64 KiB, so the JSON text is stored as UTF-8 in
binary properties ``json_0`` .. ``json_<n-1>`` with ``json_chunks = n``. ETags are the service's.

Transient failures are retried by the SDK's retry policy and raise once it gives up (the engine
then retries within STORAGE_RETRY_SECONDS: shared/state/retrying.py). Retrying a write whose
response was lost can report a ConflictError for a write that took effect; ``update()`` reads the
record back and finds its own operation id there, so the change is never applied twice.
"""

from __future__ import annotations

from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from shared.state.base import ConflictError, JsonObject, Record
from shared.state.codec import (
    MAX_VALUE_BYTES,
    check_key,
    check_kind,
    corrupt_record,
    decode_row_key,
    dump_value,
    encode_row_key,
    load_value,
    record_name,
)

_CHUNK_BYTES = 64 * 1024
_MAX_CHUNKS = -(-MAX_VALUE_BYTES // _CHUNK_BYTES)
_CHUNK_COUNT = "json_chunks"

_SDK_OPTIONS: dict[str, Any] = {
    "retry_total": 6,
    "retry_backoff_factor": 0.8,
    "retry_backoff_max": 30,
    "connection_timeout": 10,
    "read_timeout": 60,
}


def _is_missing_entity(error: ResourceNotFoundError) -> bool:
    # A missing *table* is also a 404; only a missing entity means "absent".
    return getattr(error, "error_code", None) == "ResourceNotFound"


class TableStateStore:
    def __init__(self, table: TableClient, description: str) -> None:
        self._table = table
        self._description = description
        try:
            table.create_table()
        except ResourceExistsError:
            pass  # created by another instance or an earlier run
        except BaseException:
            table.close()
            raise

    @classmethod
    def from_connection_string(
        cls, connection_string: str, table_name: str, description: str
    ) -> TableStateStore:
        table = TableClient.from_connection_string(connection_string, table_name, **_SDK_OPTIONS)
        return cls(table, description)

    @classmethod
    def from_endpoint(
        cls, endpoint: str, table_name: str, credential: TokenCredential, description: str
    ) -> TableStateStore:
        table = TableClient(endpoint, table_name, credential=credential, **_SDK_OPTIONS)
        return cls(table, description)

    @property
    def description(self) -> str:
        return self._description

    def close(self) -> None:
        self._table.close()

    def get(self, kind: str, key: str) -> Record | None:
        check_kind(kind)
        check_key(key)
        try:
            entity = self._table.get_entity(kind, encode_row_key(key))
        except ResourceNotFoundError as error:
            if _is_missing_entity(error):
                return None
            raise
        return self._record(kind, key, entity)

    def create(self, kind: str, key: str, value: JsonObject) -> Record:
        entity, text = self._entity(kind, key, value)
        try:
            metadata = self._table.create_entity(entity, response_preference="return-no-content")
        except ResourceExistsError:
            raise ConflictError(f"{record_name(kind, key)} already exists") from None
        return Record(load_value(kind, key, text, self.description), metadata["etag"])

    def replace(self, kind: str, key: str, value: JsonObject, etag: str) -> Record:
        entity, text = self._entity(kind, key, value)
        try:
            metadata = self._table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            raise ConflictError(f"{record_name(kind, key)} changed since it was read") from None
        except ResourceNotFoundError as error:
            if _is_missing_entity(error):
                raise ConflictError(
                    f"{record_name(kind, key)} vanished since it was read"
                ) from None
            raise
        return Record(load_value(kind, key, text, self.description), metadata["etag"])

    def list(self, kind: str) -> list[tuple[str, Record]]:
        check_kind(kind)
        entities = self._table.query_entities("PartitionKey eq @kind", parameters={"kind": kind})
        records = [
            (key, self._record(kind, key, entity))
            for entity in entities
            for key in [decode_row_key(entity["RowKey"])]
        ]
        # The service orders by escaped RowKey, which is not the order of the keys themselves.
        return sorted(records, key=lambda item: item[0])

    def delete(self, kind: str, key: str, etag: str | None = None) -> None:
        check_kind(kind)
        check_key(key)
        condition = (
            MatchConditions.Unconditionally if etag is None else MatchConditions.IfNotModified
        )
        try:
            # The SDK treats 404 as success: deleting an absent record is not an error.
            self._table.delete_entity(
                kind, encode_row_key(key), etag=etag, match_condition=condition
            )
        except ResourceModifiedError:
            raise ConflictError(f"{record_name(kind, key)} changed since it was read") from None

    def _entity(self, kind: str, key: str, value: JsonObject) -> tuple[dict[str, Any], str]:
        check_kind(kind)
        check_key(key)
        text = dump_value(kind, key, value)
        data = text.encode("utf-8")
        chunks = [data[start : start + _CHUNK_BYTES] for start in range(0, len(data), _CHUNK_BYTES)]
        entity: dict[str, Any] = {"PartitionKey": kind, "RowKey": encode_row_key(key)}
        entity[_CHUNK_COUNT] = len(chunks)
        entity.update((f"json_{index}", chunk) for index, chunk in enumerate(chunks))
        return entity, text

    def _record(self, kind: str, key: str, entity: TableEntity) -> Record:
        count = entity.get(_CHUNK_COUNT)
        if not isinstance(count, int) or not 1 <= count <= _MAX_CHUNKS:
            raise corrupt_record(kind, key, self.description, f"{_CHUNK_COUNT} is {count!r}")
        chunks: list[bytes] = []
        for index in range(count):
            chunk = entity.get(f"json_{index}")
            if not isinstance(chunk, bytes):
                raise corrupt_record(kind, key, self.description, f"json_{index} is {chunk!r}")
            chunks.append(chunk)
        etag = entity.metadata["etag"]
        assert etag is not None  # the service sends an ETag with every entity
        return Record(load_value(kind, key, b"".join(chunks), self.description), etag)
