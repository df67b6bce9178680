"""One schema per table, shared by every worker through the state store.

Workers convert concurrently; if two of them meet a new field at once with different types, the
first to save its schema wins and the other re-converts its batch against the saved schema (its
values then land in the twin column). So a column's type is the same in every file.

The schema also records whether the table's overflow column is open (its column budget reached,
shared/conversion/schema.py): every worker and process then sends the same fields to it.

The record names the table's generation, so a rebuild removes only the schema of the generation
it retires (shared/pipeline/rebuild.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from shared.conversion import BatchConverter, TableSchema
from shared.conversion.converter import RawDocs
from shared.errors import MirrorError
from shared.landing_zone.tables import TableRef
from shared.state.base import ConflictError, StateStore

SCHEMA_KIND = "schema"


class SchemaRegistry:
    def __init__(
        self,
        state: StateStore,
        table: TableRef,
        generation: str,
        column_budget: int | None = None,
    ) -> None:
        self._state = state
        self._table = table
        self._generation = generation
        self._column_budget = column_budget  # COLUMN_BUDGET; None: no cap
        self._etag: str | None = None
        self._converter = self._load()

    def convert(self, raw_documents: RawDocs, markers: Sequence[int]) -> pa.Table:
        """Convert a batch; any growth of the schema is saved before the batch is returned."""
        while True:
            batch = self._converter.convert_rows(raw_documents, markers)
            schema = self._converter.schema
            if not schema.changed:
                return batch
            value = {"schema": schema.to_json(), "generation": self._generation}
            try:
                if self._etag is None:
                    record = self._state.create(SCHEMA_KIND, self._table.folder, value)
                else:
                    record = self._state.replace(SCHEMA_KIND, self._table.folder, value, self._etag)
            except ConflictError:
                self._converter = self._load()  # another worker grew it first: adopt theirs
                continue
            self._etag = record.etag
            schema.mark_saved()
            return batch

    def _load(self) -> BatchConverter:
        record = self._state.get(SCHEMA_KIND, self._table.folder)
        if record is None:
            self._etag = None
            return BatchConverter(TableSchema(self._column_budget))
        self._etag = record.etag
        try:
            schema = TableSchema.from_json(str(record.value["schema"]), self._column_budget)
        except (KeyError, TypeError, ValueError) as error:
            raise MirrorError(
                f"the stored schema of {self._table} is malformed: {error!r}"
            ) from None
        return BatchConverter(schema)
