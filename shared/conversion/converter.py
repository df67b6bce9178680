"""Raw BSON batches → Arrow tables in the landing-zone layout.

Per batch, each document's top level is decoded once by PyMongo's C decoder with embedded
documents left raw; each column is then built from a Python list in one step, checking
types per column (a set of the batch's value types), not per value, in the common case.
Everything rendered as JSON (embedded documents, arrays, exotic types, twin values,
Decimal128 text) goes to libbson in one call per column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import bson
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bson import Binary
from bson.raw_bson import RawBSONDocument, _inflate_bson

from shared.landing_zone.parquet_files import RowMarker

from . import _libbson, _scan
from .id_text import id_text
from .names import KEY_COLUMN, OVERFLOW_COLUMN
from .schema import FieldSpec, TableSchema
from .values import (
    ACCEPTS,
    ARROW_TYPES,
    BINARY,
    BOOL,
    DECIMAL,
    DECODE_OPTIONS,
    FLOAT64,
    INT64,
    JSON,
    MAX_MS,
    MIN_MS,
    OBJECTID,
    STRING,
    TIMESTAMP,
    UUID,
    fits,
    kind_of,
)

RawDocs = bytes | bytearray | memoryview | Sequence[bytes | RawBSONDocument]

_NONE = type(None)
_DECIMAL_PREFIX = len('{ "$numberDecimal" : "')
_DECIMAL_SUFFIX = len('" }')


def split_documents(raw_docs: RawDocs) -> list[bytes]:
    """One ``bytes`` per document, from a concatenated buffer or a sequence of documents."""
    if isinstance(raw_docs, bytes | bytearray | memoryview):
        buf = bytes(raw_docs)
        out = []
        pos, end = 0, len(buf)
        while pos < end:
            size = int.from_bytes(buf[pos : pos + 4], "little")
            if size < 5 or pos + size > end or buf[pos + size - 1] != 0:
                raise ValueError(f"truncated or corrupt BSON document at byte {pos}")
            out.append(buf[pos : pos + size])
            pos += size
        return out
    return [bytes(d.raw) if isinstance(d, RawBSONDocument) else bytes(d) for d in raw_docs]


def _json_element(value: Any) -> bytes:
    if type(value) is RawBSONDocument:
        return _libbson.element(b"\x03", bytes(value.raw))
    # bson.encode picks the BSON type from the decoded value; slice off the wrapper document.
    return bson.encode({"v": value})[4:-1]


def json_texts(values: Iterable[Any]) -> list[str]:
    """Relaxed Extended JSON of each value (as decoded with ``DECODE_OPTIONS``)."""
    return _libbson.to_json_texts([_json_element(v) for v in values])


def _json_column(values: list[Any]) -> list[str | None]:
    present = [v for v in values if v is not None]
    if not present:
        return [None] * len(values)
    texts = iter(json_texts(present))
    return [None if v is None else next(texts) for v in values]


def _decimal_column(values: list[Any]) -> list[str | None]:
    # libbson prints Decimal128 far faster than Decimal128.__str__; same IEEE 754 text.
    present = [v for v in values if v is not None]
    elements = [_libbson.element(b"\x13", v.bid) for v in present]
    texts = iter(_libbson.to_json_texts(elements))
    return [None if v is None else next(texts)[_DECIMAL_PREFIX:-_DECIMAL_SUFFIX] for v in values]


def _uuid_text(b: Binary) -> str:
    h = bytes(b).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_array(kind: str, values: list[Any]) -> pa.Array:
    """Arrow array of a column kind from values that all fit it (or are None)."""
    if kind == JSON:
        return pa.array(_json_column(values), pa.string())
    if kind == DECIMAL:
        return pa.array(_decimal_column(values), pa.string())
    if kind == OBJECTID:
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    if kind == UUID:
        return pa.array([None if v is None else _uuid_text(v) for v in values], pa.string())
    if kind == BINARY:
        return pa.array([None if v is None else bytes(v) for v in values], pa.binary())
    if kind == TIMESTAMP:
        ms = pa.array([None if v is None else int(v) for v in values], pa.int64())
        return pc.multiply_checked(ms, 1000).cast(ARROW_TYPES[TIMESTAMP])
    return pa.array(values, ARROW_TYPES[kind])


def _all_fit(spec: FieldSpec, values: list[Any]) -> bool:
    if not set(map(type, values)) <= ACCEPTS[spec.kind]:
        return False
    if spec.kind == TIMESTAMP:
        ms = [int(v) for v in values if v is not None]
        return not ms or (MIN_MS <= min(ms) and max(ms) <= MAX_MS)
    return True


_FAST_FITS: dict[str, frozenset[int]] = {
    INT64: frozenset({_scan.INT32, _scan.INT64}),
    FLOAT64: frozenset({_scan.DOUBLE}),
    BOOL: frozenset({_scan.BOOL}),
    STRING: frozenset({_scan.STRING}),
    TIMESTAMP: frozenset({_scan.DATE}),
    DECIMAL: frozenset({_scan.DECIMAL}),
    OBJECTID: frozenset({_scan.OBJECTID}),
    JSON: frozenset({_scan.DOCUMENT, _scan.ARRAY}),
    UUID: frozenset(),
    BINARY: frozenset(),
}
_KIND_OF_TYPE = {t: kind for kind, types in _FAST_FITS.items() for t in types}
Piece: TypeAlias = pa.Array | None  # None: all null


def _batch(raw_docs: RawDocs) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The batch as one buffer with each document's start and end offset."""
    if isinstance(raw_docs, bytes | bytearray | memoryview):
        buf = bytes(raw_docs)
        return (buf, *_scan.doc_offsets(buf))
    parts = split_documents(raw_docs)
    ends = np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)))
    return b"".join(parts), ends - np.fromiter(map(len, parts), np.int64, len(parts)), ends


def _fast_piece(u8: np.ndarray, buf: bytes, kind: str, f: _scan.Field) -> tuple[pa.Array, Piece]:
    """Main and twin values of one field for a group whose values all have type ``f.type``."""
    if f.type not in _FAST_FITS[kind]:
        return pa.nulls(len(f.start), ARROW_TYPES[kind]), _scan.json_array(buf, f)
    if kind == STRING:
        return _scan.strings(u8, f), None
    if kind == OBJECTID:
        return _scan.object_ids(u8, f), None
    if kind == DECIMAL:
        return _scan.decimals(u8, f), None
    if kind == JSON:
        return _scan.json_array(buf, f), None
    values = _scan.numbers(u8, f)
    if kind != TIMESTAMP:
        return pa.array(values, ARROW_TYPES[kind]), None
    bad = (values < MIN_MS) | (values > MAX_MS)
    main = pa.array(np.where(bad, 0, values) * 1000, ARROW_TYPES[TIMESTAMP], mask=bad)
    if not bad.any():
        return main, None
    out_of_range = np.flatnonzero(bad)
    texts = _scan.json_array(buf, f, out_of_range)
    # Scatter the texts back to their rows: row i takes text k where k counts bad rows before i.
    twin = texts.take(pa.array(np.cumsum(bad) - 1, mask=~bad))
    return main, twin


def _slow_piece(spec: FieldSpec, values: list[Any]) -> tuple[pa.Array, Piece]:
    if _all_fit(spec, values):
        return build_array(spec.kind, values), None
    misfit = [v is not None and not fits(v, spec.kind, spec.binary_subtype) for v in values]
    main = [None if bad else v for v, bad in zip(values, misfit, strict=True)]
    twin = [v if bad else None for v, bad in zip(values, misfit, strict=True)]
    return build_array(spec.kind, main), build_array(JSON, twin) if any(misfit) else None


class BatchConverter:
    """Converts batches of raw documents, growing ``schema``; keeps no rows between calls.

    Documents whose shape is verified by the vectorised walk in ``_scan`` are converted
    column-wise from the raw bytes; the rest are decoded one by one (top level only). Both
    paths give the same values and the same schema decisions, in document order.
    """

    def __init__(self, schema: TableSchema | None = None) -> None:
        self.schema = schema if schema is not None else TableSchema()

    def convert(self, raw_docs: RawDocs, marker: RowMarker = RowMarker.UPSERT) -> pa.Table:
        """Every document as one row, all with the same row marker."""
        buf, starts, ends = _batch(raw_docs)
        return self._convert(buf, starts, ends, pa.array(np.full(len(starts), marker, np.int32)))

    def convert_rows(self, raw_docs: RawDocs, markers: Sequence[int]) -> pa.Table:
        """One row per document with its own ``RowMarker`` (``UPSERT`` with the full document,
        ``DELETE`` with a document holding only ``_id``)."""
        buf, starts, ends = _batch(raw_docs)
        if len(starts) != len(markers):
            raise ValueError(f"{len(starts)} documents but {len(markers)} row markers")
        return self._convert(buf, starts, ends, pa.array(markers, pa.int32()))

    def _convert(
        self, buf: bytes, starts: np.ndarray, ends: np.ndarray, markers: pa.Array
    ) -> pa.Table:
        n = len(starts)
        groups, slow_rows = _scan.find_groups(buf, starts, ends)
        u8 = np.frombuffer(buf, np.uint8)
        slow = [
            _inflate_bson(buf[a:b], DECODE_OPTIONS)
            for a, b in zip(starts[slow_rows].tolist(), ends[slow_rows].tolist(), strict=True)
        ]
        for d in slow:
            if KEY_COLUMN not in d:
                raise ValueError("a document without _id cannot be mirrored (no key)")
        slow_index = slow_rows.tolist()
        sizes = [len(g.rows) for g in groups] + [len(slow)]
        order = np.concatenate([g.rows for g in groups] + [slow_rows])
        take = None if np.array_equal(order, np.arange(n)) else pa.array(np.argsort(order))

        def combine(pieces: list[Piece], arrow_type: pa.DataType) -> pa.Array:
            arrays = [
                p if p is not None else pa.nulls(size, arrow_type)
                for p, size in zip(pieces, sizes, strict=True)
            ]
            out = pa.concat_arrays(arrays) if len(arrays) > 1 else arrays[0]
            return out if take is None else out.take(take)

        id_pieces: list[Piece] = [self._fast_ids(u8, g.fields[KEY_COLUMN]) for g in groups]
        id_pieces.append(pa.array([id_text(d[KEY_COLUMN]) for d in slow], pa.string()))
        arrays: dict[str, pa.Array] = {KEY_COLUMN: combine(id_pieces, pa.string())}

        # Fields in order of first appearance across the batch: (first row, position in it).
        first: dict[str, tuple[int, int]] = {}
        for g in groups:
            row = int(g.rows[0])
            for pos, key in enumerate(g.keys):
                if key not in first or (row, pos) < first[key]:
                    first[key] = (row, pos)
        for row, d in zip(slow_index, slow, strict=True):
            for pos, key in enumerate(d):
                if key not in first or (row, pos) < first[key]:
                    first[key] = (row, pos)
        # Past the column budget: per row, the fields whose values go to the overflow column.
        overflow: dict[int, set[str]] = {}
        for field in sorted(first, key=first.__getitem__):
            if field == KEY_COLUMN:
                continue
            slow_values = [d.get(field) for d in slow]
            spec = self.schema.get(field) or self._new_field(field, groups, slow_index, slow_values)
            if spec is None:
                # Null everywhere (same as missing until a typed value appears), or no room.
                if self.schema.overflow:
                    for row in self._rows_with(field, groups, slow_index, slow_values):
                        overflow.setdefault(row, set()).add(field)
                continue
            mains: list[Piece] = []
            twins: list[Piece] = []
            for g in groups:
                f = g.fields.get(field)
                if f is None or f.type == _scan.NULL:
                    mains.append(None)
                    twins.append(None)
                else:
                    main, twin = _fast_piece(u8, buf, spec.kind, f)
                    mains.append(main)
                    twins.append(twin)
            main, twin = _slow_piece(spec, slow_values)
            mains.append(main)
            twins.append(twin)
            arrays[spec.column] = combine(mains, ARROW_TYPES[spec.kind])
            if any(t is not None for t in twins):
                if spec.has_twin or self.schema.has_room():
                    spec = self.schema.add_twin(field)
                    arrays[spec.twin] = combine(twins, pa.string())
                else:  # no room for a twin: the values that do not fit overflow
                    self.schema.open_overflow()
                    misfits = combine(twins, pa.string()).is_valid()
                    for row in np.flatnonzero(misfits.to_numpy(zero_copy_only=False)).tolist():
                        overflow.setdefault(row, set()).add(field)
        if self.schema.overflow:
            arrays[OVERFLOW_COLUMN] = _overflow_column(
                buf, starts, ends, slow_index, slow, overflow
            )
        columns = [arrays[KEY_COLUMN]]
        for name, arrow_type in self.schema.column_types().items():
            arr = arrays.get(name)
            columns.append(arr if arr is not None else pa.nulls(n, arrow_type))
        columns.append(markers)
        return pa.Table.from_arrays(columns, schema=self.schema.arrow_schema())

    @staticmethod
    def _fast_ids(u8: np.ndarray, f: _scan.Field) -> pa.Array:
        if f.type == _scan.OBJECTID:
            return _scan.object_ids(u8, f)
        texts = _scan.strings(u8, f)
        # Strings that would read as a tag or an ObjectId take the tagged form.
        clash = pc.or_(
            pc.starts_with(texts, "~"), pc.match_substring_regex(texts, "^[0-9a-f]{24}$")
        )
        if not pc.any(clash).as_py():
            return texts
        return pa.array([id_text(t) for t in texts.to_pylist()], pa.string())

    @staticmethod
    def _rows_with(
        field: str, groups: list[_scan.Group], slow_index: list[int], slow_values: list[Any]
    ) -> list[int]:
        """The rows (batch indices) where ``field`` holds a non-null value."""
        rows = [
            int(row)
            for g in groups
            if (f := g.fields.get(field)) is not None and f.type != _scan.NULL
            for row in g.rows
        ]
        rows += [row for row, v in zip(slow_index, slow_values, strict=True) if v is not None]
        return rows

    def _new_field(
        self,
        field: str,
        groups: list[_scan.Group],
        slow_index: list[int],
        slow_values: list[Any],
    ) -> FieldSpec | None:
        """Adds the field with the kind its first non-null value (in document order) founds;
        None if it has no such value, or if the column budget leaves no room (the overflow
        column is then open)."""
        best: tuple[int, str, int | None] | None = None
        for g in groups:
            f = g.fields.get(field)
            if f is not None and f.type != _scan.NULL:
                row = int(g.rows[0])
                if best is None or row < best[0]:
                    best = (row, _KIND_OF_TYPE[f.type], None)
        for row, v in zip(slow_index, slow_values, strict=True):
            if v is not None:
                if best is None or row < best[0]:
                    best = (row, *kind_of(v))
                break
        if best is None:
            return None
        if not self.schema.has_room():
            self.schema.open_overflow()
            return None
        return self.schema.add_field(field, best[1], best[2])


def _overflow_column(
    buf: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    slow_index: list[int],
    slow: list[Any],
    overflow: dict[int, set[str]],
) -> pa.Array:
    """Per row, the relaxed Extended JSON object of its overflowing fields in the document's
    order (NULL when none); null values are left out, as null and missing are alike at the top
    level. Only tables past their column budget get here, so rows are decoded one by one."""
    if not overflow:
        return pa.nulls(len(starts), pa.string())
    slow_of = dict(zip(slow_index, slow, strict=True))
    rows = sorted(overflow)
    objects = []
    for row in rows:
        document = slow_of.get(row)
        if document is None:
            document = _inflate_bson(buf[int(starts[row]) : int(ends[row])], DECODE_OPTIONS)
        keys = overflow[row]
        objects.append({k: v for k, v in document.items() if k in keys and v is not None})
    texts: list[str | None] = [None] * len(starts)
    for row, text in zip(rows, json_texts(objects), strict=True):
        texts[row] = text
    return pa.array(texts, pa.string())


def key_only(document_key: bytes | RawBSONDocument | dict[str, Any]) -> bytes:
    """BSON of ``{_id: ...}`` alone, for a ``RowMarker.DELETE`` row: every other column NULL."""
    if isinstance(document_key, bytes | RawBSONDocument):
        raw = document_key.raw if isinstance(document_key, RawBSONDocument) else document_key
        doc = _inflate_bson(raw, DECODE_OPTIONS)
    else:
        doc = document_key
    return bson.encode({KEY_COLUMN: doc[KEY_COLUMN]})
