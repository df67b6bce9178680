"""Change events read from a getMore reply's bytes: what a table needs of each event.

A batch of events is read the way the converter reads a batch of documents
(shared/conversion/_scan.py): events of one shape (an insert, an update, a delete...) are checked
and located with numpy over the whole reply at once, and only the few fields a table needs are
taken out: the resume token's ``_data``, the operation, the cluster time, the collection, and the
full document's bytes, sliced and never decoded. Events of any other shape (split fragments,
renames, drops, sharded document keys) are read one by one, in place
(shared/source/bson_elements.py). Decoding each event into Python objects, as PyMongo's change
stream does, took more than half of the change reader's time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from shared.conversion import _scan
from shared.errors import MirrorError
from shared.source.bson_elements import BsonType, Element
from shared.source.resume_tokens import token_to_json

ROW_OPERATIONS = frozenset({"insert", "update", "replace", "delete"})
# Events that end a table's history: its folder must be rebuilt (or removed).
TABLE_ENDING_OPERATIONS = frozenset({"drop", "rename"})
_UPSERTS = ROW_OPERATIONS - {"delete"}

_TOKEN_SHAPE: _scan.Shape = ((_scan.STRING, b"_data"),)
_NAMESPACE_SHAPE: _scan.Shape = ((_scan.STRING, b"db"), (_scan.STRING, b"coll"))


class ChangeEvent(NamedTuple):
    """One complete change event, with what a table needs of it (a tuple: a window makes one
    per event, and a frozen dataclass costs several times more to build)."""

    position: str  # the resume token's ``_data``: orders like the stream (see token_order)
    operation: str
    cluster_seconds: int  # when the change happened (the event's clusterTime)
    collection: str | None
    document: bytes | None  # full document (upserts) or {_id} (deletes), raw BSON
    size: int
    target: str | None = None  # a rename's new collection name
    target_database: str | None = None  # and its database

    @property
    def token(self) -> str:
        """The event's resume token as stored (built on demand: most events never need it)."""
        return token_to_json({"_data": self.position})


# Events built straight from their fields' tuple, in C: a window builds one per event.
_new_event: Callable[[tuple[Any, ...]], ChangeEvent] = partial(tuple.__new__, ChangeEvent)


def read_events(buffer: bytes, offsets: list[int]) -> list[ChangeEvent | None]:
    """The events at ``offsets`` in ``buffer``; None for each one that needs ``read_event``
    (and, if a split fragment, reassembly)."""
    events: list[ChangeEvent | None] = [None] * len(offsets)
    if not offsets:
        return events
    u8 = np.frombuffer(buffer, np.uint8)
    starts = np.array(offsets, dtype=np.int64)
    sizes = _scan.numbers(u8, _scan.Field(_scan.INT32, starts, 4))
    try:
        groups, _ = _scan.find_groups(
            buffer, starts, starts + sizes, _scan.EVENT_FIXED, _plain_row_event
        )
        for group in groups:
            _read_group(buffer, u8, group, sizes, events)
    except (ValueError, pa.ArrowException):
        # Text that is not UTF-8, say: each event is read (and its problem named) one by one.
        return [None] * len(offsets)
    return events


def _plain_row_event(shape: _scan.Shape) -> bool:
    kinds = dict((key, kind) for kind, key in shape)
    return (
        kinds.get(b"_id") == _scan.DOCUMENT
        and kinds.get(b"operationType") == _scan.STRING
        and kinds.get(b"ns") == _scan.DOCUMENT
        and b"splitEvent" not in kinds
        and kinds.get(b"clusterTime", _scan.TIMESTAMP) == _scan.TIMESTAMP
        and kinds.get(b"fullDocument", _scan.NULL) in (_scan.DOCUMENT, _scan.NULL)
    )


def _read_group(
    buffer: bytes,
    u8: np.ndarray,
    group: _scan.Group,
    sizes: np.ndarray,
    events: list[ChangeEvent | None],
) -> None:
    """Fill ``events`` for the rows of one verified shape whose tokens and namespaces have the
    usual shape too; rows left None go the per-event way."""
    rows = group.rows.tolist()
    positions = _strings_inside(u8, group.fields["_id"], _TOKEN_SHAPE, 0)
    collections = _strings_inside(u8, group.fields["ns"], _NAMESPACE_SHAPE, 1)
    operations = _scan.strings(u8, group.fields["operationType"]).to_pylist()
    cluster = group.fields.get("clusterTime")
    seconds = [0] * len(rows) if cluster is None else _scan.timestamp_seconds(u8, cluster).tolist()
    full = group.fields.get("fullDocument")
    documents: list[bytes | None]
    if full is not None and full.type == _scan.DOCUMENT:
        byte_sizes = np.asarray(full.size).tolist()
        slices = map(slice, full.start.tolist(), (full.start + full.size).tolist())
        documents = list(map(buffer.__getitem__, slices))
    else:
        byte_sizes = sizes[group.rows].tolist()
        documents = [None] * len(rows)
    fields = zip(
        positions,
        operations,
        seconds,
        collections,
        documents,
        byte_sizes,
        repeat(None),
        repeat(None),
    )
    for row, event in zip(rows, map(_new_event, fields), strict=True):
        # Deletes go the per-event way: their document key may hold shard key fields too.
        if event.position is not None and event.collection is not None:
            if event.operation in _UPSERTS:
                events[row] = event


def _strings_inside(
    u8: np.ndarray, field: _scan.Field, shape: _scan.Shape, which: int
) -> list[str | None]:
    """Per row, the text of the ``which``-th string of the embedded document, when it has
    exactly ``shape`` (strings only); else None."""
    ok, spans = _scan.verify(u8, field.start, field.start + field.size, shape)
    start, size = spans[which]
    texts = _scan.strings(u8, _scan.Field(_scan.STRING, start[ok], np.asarray(size)[ok]))
    values: list[str | None] = [None] * len(ok)
    for index, text in zip(np.flatnonzero(ok).tolist(), texts.to_pylist(), strict=True):
        values[index] = text
    return values


def read_event(event: dict[str, Element], position: str, size: int) -> ChangeEvent:
    """One event from its (reassembled) fields, read in place."""
    kind = event.get("operationType")
    if kind is None:
        raise MirrorError("the server sent a change event without an operationType")
    operation = kind.string()
    document: bytes | None = None
    if operation == "delete":
        document = event["documentKey"].document()["_id"].as_single_field_document()
    elif operation in ROW_OPERATIONS:
        full = event.get("fullDocument")
        # An update looked up after a later delete has no document: the delete follows.
        document = None if full is None or full.kind == BsonType.NULL else full.raw_document()
    cluster_time = event.get("clusterTime")
    target = event.get("to") if operation == "rename" else None
    return ChangeEvent(
        position,
        operation,
        0 if cluster_time is None else cluster_time.timestamp_seconds(),
        _collection_name(event.get("ns")),
        document,
        size if document is None else len(document),
        _collection_name(target),
        _namespace_part(target, "db"),
    )


def event_position(event: dict[str, Element]) -> str:
    """The event's resume token ``_data``."""
    token = event.get("_id")
    data = None if token is None else token.document().get("_data")
    if data is None or data.kind != BsonType.STRING:
        raise MirrorError("the server sent a resume token without a hex _data (MongoDB < 4.2?)")
    return data.string()


def _collection_name(namespace: Element | None) -> str | None:
    return _namespace_part(namespace, "coll")


def _namespace_part(namespace: Element | None, part: str) -> str | None:
    if namespace is None or namespace.kind != BsonType.DOCUMENT:
        return None
    value = namespace.document().get(part)
    return None if value is None else value.string()
