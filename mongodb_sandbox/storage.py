"""In-memory databases and collections holding documents as encoded BSON.

Documents stay as `RawBSONDocument` (the bytes the client sent), so answering a `find` is a copy
of bytes rather than a re-encode. Only `_id` is indexed: documents are keyed by the `_id`'s
ordering key (MongoDB's unique `_id_` index), and a sorted list of those keys, rebuilt lazily,
serves `_id`-ordered scans and `_id` range filters without decoding any document.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import bson
from bson.binary import Binary
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex

from mongodb_sandbox import ordering, query
from mongodb_sandbox.errors import CommandError, ErrorCode

# Out-of-range dates must survive a decode/encode round trip, hence DATETIME_AUTO; UUIDs stay
# Binary (the default UUID representation) so every subtype round-trips unchanged.
DECODE_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict,
    tz_aware=True,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)
RAW_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument,
    tz_aware=True,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)


def decode(raw: RawBSONDocument | bytes) -> dict[str, Any]:
    """A plain dict from encoded BSON."""
    data = raw.raw if isinstance(raw, RawBSONDocument) else raw
    return bson.decode(data, DECODE_OPTIONS)


def encode(doc: Mapping[str, Any]) -> RawBSONDocument:
    """Encoded BSON for a document (the storage and wire representation)."""
    return RawBSONDocument(bson.encode(doc, codec_options=DECODE_OPTIONS), RAW_OPTIONS)


def id_key(value: Any) -> ordering.SortKey:
    """The identity of an `_id` value, rejecting the types MongoDB refuses as `_id`."""
    if isinstance(value, list):
        raise CommandError(ErrorCode.INVALID_ID_FIELD, "The '_id' value cannot be of type array")
    if isinstance(value, Regex):
        raise CommandError(ErrorCode.INVALID_ID_FIELD, "The '_id' value cannot be of type regex")
    return ordering.sort_key(value)


@dataclass
class Collection:
    """One namespace: a collection, a view (no documents) or a time-series collection."""

    db: str
    name: str
    kind: str = "collection"
    options: dict[str, Any] = field(default_factory=dict)
    uuid: Binary = field(default_factory=lambda: Binary.from_uuid(uuid.uuid4()))
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _docs: dict[ordering.SortKey, tuple[Any, RawBSONDocument]] = field(default_factory=dict)
    _sorted: list[ordering.SortKey] | None = None

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.name}"

    def __len__(self) -> int:
        return len(self._docs)

    def data_size(self) -> int:
        return sum(len(raw.raw) for _, raw in self._docs.values())

    def get(self, key: ordering.SortKey) -> RawBSONDocument | None:
        entry = self._docs.get(key)
        return entry[1] if entry else None

    def insert(self, id_value: Any, raw: RawBSONDocument) -> ordering.SortKey:
        key = id_key(id_value)
        if key in self._docs:
            raise duplicate_key_error(self.namespace, id_value)
        self._docs[key] = (id_value, raw)
        self._sorted = None
        return key

    def replace(self, key: ordering.SortKey, raw: RawBSONDocument) -> None:
        self._docs[key] = (self._docs[key][0], raw)

    def delete(self, key: ordering.SortKey) -> None:
        del self._docs[key]
        self._sorted = None

    def _sorted_keys(self) -> list[ordering.SortKey]:
        if self._sorted is None:
            self._sorted = sorted(self._docs)
        return self._sorted

    def _index_range(
        self, lower: Any, upper: Any, candidates: list[ordering.SortKey] | None
    ) -> list[ordering.SortKey]:
        keys = self._sorted_keys()
        lo = 0 if lower is query.MISSING else bisect.bisect_left(keys, ordering.sort_key(lower))
        hi = (
            len(keys)
            if upper is query.MISSING
            else bisect.bisect_left(keys, ordering.sort_key(upper))
        )
        if candidates is None:
            return keys[lo:hi]
        allowed = set(keys[lo:hi])
        return [key for key in candidates if key in allowed]

    def _candidate_keys(self, condition: Any) -> tuple[list[ordering.SortKey] | None, bool]:
        """Keys (in `_id` order) an `_id` condition can match, and whether all of them do."""
        if condition is query.MISSING or isinstance(condition, Regex):
            return None, False
        if not query.is_operator_document(condition):
            return [ordering.sort_key(condition)], True
        exact = len(condition) == 1
        if "$eq" in condition and not isinstance(condition["$eq"], Regex):
            return [ordering.sort_key(condition["$eq"])], exact
        if isinstance(condition.get("$in"), list) and not any(
            isinstance(v, Regex) for v in condition["$in"]
        ):
            return sorted({ordering.sort_key(v) for v in condition["$in"]}), exact
        keys = self._sorted_keys()
        lo, hi = 0, len(keys)
        exact = True
        skip_nan = False
        for op, bound in condition.items():
            if op not in ("$gt", "$gte", "$lt", "$lte"):
                exact = False
                continue
            bound_key = ordering.sort_key(bound)
            low_edge, high_edge = ordering.bracket_bounds(bound_key[0])
            if bound_key[0] in (ordering.MINKEY, ordering.MAXKEY):
                low_edge, high_edge = (ordering.MINKEY,), (ordering.MAXKEY + 1,)
            elif bound_key == _NAN_KEY:
                exact = False
            else:
                skip_nan = True
            # Range operators never leave their bound's type bracket.
            lo = max(lo, bisect.bisect_left(keys, low_edge))
            hi = min(hi, bisect.bisect_right(keys, high_edge))
            if op == "$gt":
                lo = max(lo, bisect.bisect_right(keys, bound_key))
            elif op == "$gte":
                lo = max(lo, bisect.bisect_left(keys, bound_key))
            elif op == "$lt":
                hi = min(hi, bisect.bisect_left(keys, bound_key))
            else:
                hi = min(hi, bisect.bisect_right(keys, bound_key))
        # NaN sorts first among numbers but no non-NaN bracketed bound matches it.
        while skip_nan and lo < hi and keys[lo] == _NAN_KEY:
            lo += 1
        return keys[lo:hi], exact

    def select(
        self,
        filter_: Mapping[str, Any],
        sort: Mapping[str, Any] | None,
        index_bounds: tuple[Any, Any] | None = None,
    ) -> list[RawBSONDocument]:
        """Matching documents, sorted when asked (otherwise in insertion order).

        ``index_bounds`` are a find's ``min`` (inclusive) and ``max`` (exclusive) on the `_id`
        index, MISSING when open: unlike range filters they cross type brackets.
        """
        sort = sort or {}
        by_id = list(sort) == ["_id"]
        keys, exact = self._candidate_keys(filter_.get("_id", query.MISSING))
        if index_bounds is not None:
            keys = self._index_range(*index_bounds, keys)
        ordered = keys is not None
        if keys is None and by_id:
            keys, ordered = self._sorted_keys(), True
        entries: Iterator[tuple[Any, RawBSONDocument]]
        if keys is None:
            entries = iter(self._docs.values())
        else:
            entries = (self._docs[k] for k in keys if k in self._docs)
        if filter_ and not (exact and list(filter_) == ["_id"]):
            id_only = query.referenced_fields(filter_) <= {"_id"}
            entries = (
                (id_value, raw)
                for id_value, raw in entries
                if query.matches({"_id": id_value} if id_only else decode(raw), filter_)
            )
        if not sort:
            return [raw for _, raw in entries]
        if by_id:
            docs = [raw for _, raw in entries] if ordered else None
            if docs is None:
                pairs = sorted(entries, key=lambda entry: ordering.sort_key(entry[0]))
                docs = [raw for _, raw in pairs]
            if sort["_id"] < 0:
                docs.reverse()
            return docs
        return query.sort_documents([raw for _, raw in entries], sort, decode)

    def documents(self) -> list[RawBSONDocument]:
        return [raw for _, raw in self._docs.values()]

    def copy(self) -> Collection:
        """A copy whose documents change independently (the stored documents are immutable
        bytes, so they are shared): a transaction's snapshot of this collection."""
        return replace(
            self, options=dict(self.options), indexes=dict(self.indexes), _docs=dict(self._docs)
        )


_NAN_KEY = ordering.sort_key(float("nan"))


def duplicate_key_error(namespace: str, id_value: Any) -> CommandError:
    """MongoDB's E11000 error for a second document with the same `_id`."""
    return CommandError(
        ErrorCode.DUPLICATE_KEY,
        f"E11000 duplicate key error collection: {namespace} index: _id_ dup key: "
        f"{{ _id: {id_value!r} }}",
    )


class Store:
    """All databases. Callers hold the server lock while using it."""

    def __init__(self) -> None:
        self.databases: dict[str, dict[str, Collection]] = {}
        # Told of every collection or view created, explicitly or by a first write (the
        # sandbox logs it: a real server's oplog holds a `create` entry for both).
        self.on_create: Callable[[Collection], None] | None = None

    def get(self, db: str, name: str) -> Collection | None:
        return self.databases.get(db, {}).get(name)

    def create(
        self, db: str, name: str, kind: str = "collection", options: dict[str, Any] | None = None
    ) -> Collection:
        validate_namespace(db, name)
        if self.get(db, name) is not None:
            raise CommandError(
                ErrorCode.NAMESPACE_EXISTS, f"Collection {db}.{name} already exists."
            )
        collection = Collection(db=db, name=name, kind=kind, options=options or {})
        self.databases.setdefault(db, {})[name] = collection
        if self.on_create is not None:
            self.on_create(collection)
        return collection

    def writable(self, db: str, name: str) -> Collection:
        """The collection a write goes to, created implicitly as MongoDB does."""
        collection = self.get(db, name)
        if collection is None:
            return self.create(db, name)
        if collection.kind == "view":
            raise CommandError(
                ErrorCode.COMMAND_NOT_SUPPORTED_ON_VIEW,
                f"Namespace {db}.{name} is a view, not a collection",
            )
        return collection

    def drop(self, db: str, name: str) -> Collection | None:
        collections = self.databases.get(db, {})
        dropped = collections.pop(name, None)
        if not collections:
            self.databases.pop(db, None)
        return dropped

    def snapshot(self) -> Store:
        """Every database as it is now, copied: what a transaction reads and writes until it
        commits (a copy of dictionaries; the documents themselves are shared)."""
        copy = Store()
        copy.databases = {
            db: {name: collection.copy() for name, collection in collections.items()}
            for db, collections in self.databases.items()
        }
        return copy

    def rename(self, source: Collection, db: str, name: str) -> None:
        validate_namespace(db, name)
        self.drop(source.db, source.name)
        source.db, source.name = db, name
        self.databases.setdefault(db, {})[name] = source


def validate_namespace(db: str, name: str) -> None:
    """Reject names MongoDB rejects."""
    if not db or any(c in db for c in '/\\. "$\x00'):
        raise CommandError(ErrorCode.INVALID_NAMESPACE, f"Invalid database name: '{db}'")
    if not name or name.startswith(".") or "$" in name or "\x00" in name:
        raise CommandError(ErrorCode.INVALID_NAMESPACE, f"Invalid collection name: '{name}'")
