"""Per-table schema registry: grows only, never changes a column's type, persists as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .names import KEY_COLUMN, OVERFLOW_COLUMN, ROW_MARKER, column_name, twin_name
from .values import ARROW_TYPES, BINARY, JSON

_FORMAT = 1
# Columns of every table past its budget that hold no field of their own: _id, the overflow
# column and __rowMarker__.
FIXED_COLUMNS = 3


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

    The column budget (COLUMN_BUDGET, ``column_budget``; None: unbounded) caps how many columns
    a table's files have, ``_id``, :data:`OVERFLOW_COLUMN` and ``__rowMarker__`` included. When a
    new field or twin finds no room, the table's overflow column opens (``overflow``, saved with
    the schema) and from then on the table gets no new column, whatever the budget later says:
    every field without a column of its own, and every value that fits neither its column nor a
    twin, goes to the overflow column. So which fields overflow is settled by the saved schema,
    the same in every file, process and worker; a larger budget takes effect on a rebuild.
    """

    def __init__(self, column_budget: int | None = None) -> None:
        self._fields: dict[str, FieldSpec] = {}
        self._order: list[str] = []  # output column names (values, twins, overflow), in order
        self._taken: set[str] = {
            KEY_COLUMN.casefold(),
            ROW_MARKER.casefold(),
            OVERFLOW_COLUMN.casefold(),
        }
        self.version = 0
        self._saved_version = 0
        self.column_budget = column_budget
        self.overflow = False

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

    def has_room(self) -> bool:
        """Whether one more column (a field's or a twin) stays within the column budget."""
        if self.overflow:
            return False
        if self.column_budget is None:
            return True
        return len(self._order) + 1 <= self.column_budget - FIXED_COLUMNS

    def open_overflow(self) -> None:
        """Add the overflow column; from now on the table gets no other new column."""
        if self.overflow:
            return
        self.overflow = True
        self._order.append(OVERFLOW_COLUMN)
        self.version += 1

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
        if self.overflow:
            types[OVERFLOW_COLUMN] = ARROW_TYPES[JSON]
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
        doc = {
            "format": _FORMAT,
            "version": self.version,
            "fields": fields,
            "order": self._order,
            "overflow": self.overflow,
        }
        return json.dumps(doc, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, column_budget: int | None = None) -> TableSchema:
        doc = json.loads(text)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unknown table schema format {doc.get('format')!r}")
        schema = cls(column_budget)
        # Schemas saved before the column budget existed have no "overflow": never opened.
        schema.overflow = doc.get("overflow", False) is True
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
        if schema.overflow:
            expected.add(OVERFLOW_COLUMN)
        if set(schema._order) != expected or len(schema._order) != len(expected):
            raise ValueError("table schema order does not match its fields")
        schema.version = schema._saved_version = int(doc["version"])
        return schema
