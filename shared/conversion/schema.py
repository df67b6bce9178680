"""Per-table schema registry: grows only, never changes a column's type, persists as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .names import KEY_COLUMN, ROW_MARKER, column_name, twin_name
from .values import ARROW_TYPES, BINARY, JSON

_FORMAT = 1


@dataclass(frozen=True)
class FieldSpec:
    """How one top-level document field is stored."""

    field: str
    column: str
    kind: str
    binary_subtype: int | None = None
    has_twin: bool = False

    @property
    def twin(self) -> str:
        return twin_name(self.column)


class TableSchema:
    """Columns of one table, in order of first appearance; only ever grows.

    ``version`` increments on every change; ``changed`` stays true until the caller persists
    :meth:`to_json` and calls :meth:`mark_saved`.
    """

    def __init__(self) -> None:
        self._fields: dict[str, FieldSpec] = {}
        self._order: list[str] = []  # output column names (values and twins), creation order
        self._taken: set[str] = {KEY_COLUMN.casefold(), ROW_MARKER.casefold()}
        self.version = 0
        self._saved_version = 0

    @property
    def changed(self) -> bool:
        return self.version != self._saved_version

    def mark_saved(self) -> None:
        self._saved_version = self.version

    @property
    def fields(self) -> dict[str, FieldSpec]:
        return dict(self._fields)

    @property
    def order(self) -> list[str]:
        return list(self._order)

    def get(self, field: str) -> FieldSpec | None:
        return self._fields.get(field)

    def add_field(self, field: str, kind: str, binary_subtype: int | None = None) -> FieldSpec:
        if field in self._fields:
            raise ValueError(f"field {field!r} already has a column")
        if kind not in ARROW_TYPES or (kind == BINARY) != (binary_subtype is not None):
            raise ValueError(f"bad column kind {kind!r}/{binary_subtype!r}")
        spec = FieldSpec(field, column_name(field, self._taken), kind, binary_subtype)
        self._taken.add(spec.column.casefold())
        self._fields[field] = spec
        self._order.append(spec.column)
        self.version += 1
        return spec

    def add_twin(self, field: str) -> FieldSpec:
        spec = self._fields[field]
        if spec.has_twin:
            return spec
        spec = FieldSpec(spec.field, spec.column, spec.kind, spec.binary_subtype, True)
        self._taken.add(spec.twin.casefold())
        self._fields[field] = spec
        self._order.append(spec.twin)
        self.version += 1
        return spec

    def column_types(self) -> dict[str, pa.DataType]:
        """Arrow type of every non-key, non-marker column, in output order."""
        types: dict[str, pa.DataType] = {}
        for spec in self._fields.values():
            types[spec.column] = ARROW_TYPES[spec.kind]
            if spec.has_twin:
                types[spec.twin] = ARROW_TYPES[JSON]
        return {name: types[name] for name in self._order}

    def arrow_schema(self) -> pa.Schema:
        """``_id`` first, every column in stable order, ``__rowMarker__`` last; all nullable."""
        cols = [pa.field(KEY_COLUMN, pa.string())]
        cols += [pa.field(n, t) for n, t in self.column_types().items()]
        cols.append(pa.field(ROW_MARKER, pa.int32()))
        return pa.schema(cols)

    def to_json(self) -> str:
        fields: list[dict[str, Any]] = [
            {
                "field": s.field,
                "column": s.column,
                "kind": s.kind,
                "binary_subtype": s.binary_subtype,
                "twin": s.has_twin,
            }
            for s in self._fields.values()
        ]
        doc = {"format": _FORMAT, "version": self.version, "fields": fields, "order": self._order}
        return json.dumps(doc, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TableSchema:
        doc = json.loads(text)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unknown table schema format {doc.get('format')!r}")
        schema = cls()
        for f in doc["fields"]:
            spec = FieldSpec(f["field"], f["column"], f["kind"], f["binary_subtype"], f["twin"])
            if spec.kind not in ARROW_TYPES or spec.field in schema._fields:
                raise ValueError(f"bad field entry {f!r}")
            schema._fields[spec.field] = spec
            schema._taken.add(spec.column.casefold())
            if spec.has_twin:
                schema._taken.add(spec.twin.casefold())
        schema._order = list(doc["order"])
        expected = {s.column for s in schema._fields.values()}
        expected |= {s.twin for s in schema._fields.values() if s.has_twin}
        if set(schema._order) != expected or len(schema._order) != len(expected):
            raise ValueError("table schema order does not match its fields")
        schema.version = schema._saved_version = int(doc["version"])
        return schema
