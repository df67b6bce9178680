"""Change streams over the sandbox oplog: event shapes, resume tokens, invalidation, splitting.

Resume tokens are `{"_data": hex}` where the hex spells the cluster time, the oplog sequence
number, the event's index in its transaction (txnOpIndex, as a real token carries it), a kind
(event < invalidate < high-water mark) and a fragment number, all fixed width, so comparing
tokens as strings orders them like the positions they encode. The events of one transaction
share one cluster time: the sequence number, one per event, orders and tells them apart, so a
stream resumed from one of them goes on with the very next.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from mongodb_sandbox import query, storage
from mongodb_sandbox.cursors import MAX_BATCH_BYTES, Batch
from mongodb_sandbox.errors import CommandError, ErrorCode
from mongodb_sandbox.oplog import Entry, Oplog

EVENT, INVALIDATE, HIGH_WATER = 0, 1, 2
DEFAULT_AWAIT_MS = 1000
MAX_EVENT_BYTES = 16 * 1024 * 1024
_TOKEN = re.compile(
    r"82([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{16})[0-9A-F]{8}([0-9A-F]{2})([0-9A-F]{4})"
)
_RESUME_DATA = "82%08X%08X%016X%08X%02X%04X"
_SYSTEM_DATABASES = ("admin", "config", "local")


def make_token(
    cluster_time: Timestamp, seq: int, kind: int, fragment: int = 0, txn_op_index: int = 0
) -> dict[str, str]:
    """A resume token encoding a position in the oplog."""
    values = (cluster_time.time, cluster_time.inc, seq, txn_op_index, kind, fragment)
    return {"_data": _RESUME_DATA % values}


@dataclass(frozen=True)
class Position:
    seq: int
    kind: int
    fragment: int


def parse_token(token: Any) -> Position:
    data = token.get("_data") if isinstance(token, Mapping) else None
    match = _TOKEN.fullmatch(data) if isinstance(data, str) else None
    if match is None:
        raise CommandError(
            ErrorCode.INVALID_RESUME_TOKEN,
            f"Bad resume token: {token!r} was not issued by this server",
        )
    return Position(int(match[3], 16), int(match[4], 16), int(match[5], 16))


def history_lost(during: str) -> CommandError:
    return CommandError(
        ErrorCode.CHANGE_STREAM_HISTORY_LOST,
        f"{during} :: caused by :: Resume of change stream was not possible, as the resume "
        "point may no longer be in the oplog.",
        ("NonResumableChangeStreamError",),
    )


def position_lost(seq: int) -> CommandError:
    """What an open cursor's getMore meets when the oplog was truncated past its scan position:
    the oplog scan itself dies with CappedPositionLost (136), not the resume-time 286 (as
    real servers answer, e.g. rwynn/monstache#23, opensearch-project/data-prepper#5730)."""
    return CommandError(
        ErrorCode.CAPPED_POSITION_LOST,
        "Executor error during getMore :: caused by :: CollectionScan died due to position in "
        f"capped collection being deleted. Last seen record id: RecordId({seq})",
    )


@dataclass(frozen=True)
class Scope:
    """What a stream watches: the deployment (db None), a database (coll None) or a collection."""

    db: str | None
    coll: str | None

    def sees(self, entry: Entry) -> bool:
        if self.db is None:
            return entry.db not in _SYSTEM_DATABASES
        if entry.db != self.db:
            return False
        # A collection stream learns of dropDatabase through the per-collection drop before it.
        # It also sees a rename onto its collection, and is invalidated by it (the server's
        # change_stream_filter_helpers.cpp: renameToEvent and buildInvalidationFilter match
        # "o.to" too); a replaced collection gets no drop of its own (SERVER-53478).
        return self.coll is None or (
            (entry.coll == self.coll and entry.operation != "dropDatabase")
            or (entry.operation == "rename" and entry.to == {"db": self.db, "coll": self.coll})
        )

    def invalidated_by(self, entry: Entry) -> bool:
        if self.coll is not None:
            return entry.operation in ("drop", "rename")  # of or onto it: sees() kept only those
        return self.db is not None and entry.operation == "dropDatabase"


Lookup = Callable[[str, str, Any], RawBSONDocument | None]


class ChangeStreamCursor:
    """A tailable, awaitable cursor reading oplog entries after `position`."""

    def __init__(
        self,
        *,
        namespace: str,
        scope: Scope,
        spec: Mapping[str, Any],
        stages: list[Mapping[str, Any]],
        oplog: Oplog,
        lookup: Lookup,
        max_event_bytes: int,
    ) -> None:
        self.namespace = namespace
        self._scope = scope
        self._oplog = oplog
        self._lookup = lookup
        self._max_event_bytes = max_event_bytes
        self._full_document = spec.get("fullDocument", "default")
        self._expanded = spec.get("showExpandedEvents") is True
        if self._full_document not in ("default", "updateLookup", "whenAvailable"):
            raise CommandError(
                ErrorCode.INVALID_OPTIONS,
                "the sandbox keeps no post-images: use fullDocument 'default', "
                "'updateLookup' or 'whenAvailable'",
            )
        self._split = bool(stages) and "$changeStreamSplitLargeEvent" in stages[-1]
        self._stages = stages[:-1] if self._split else stages
        self._projects = any("$project" in stage for stage in self._stages)
        for stage in self._stages:
            if next(iter(stage)) not in ("$match", "$project"):
                raise CommandError(
                    ErrorCode.CHANGE_STREAM_FATAL_ERROR,
                    f"{next(iter(stage))} is not supported in a change stream pipeline",
                )
        self._filters = [query.MemoizedFilter(s["$match"]) for s in self._stages if "$match" in s]
        self._filters_read_documents = any(f.reads("fullDocument") for f in self._filters)
        self._pending: list[tuple[RawBSONDocument, dict[str, str]]] = []
        self._skip_fragments = 0
        self._invalidated = False
        self._last_token: dict[str, str] | None = None
        self._last_token_is_current = False
        self._position = self._start(spec)

    def _start(self, spec: Mapping[str, Any]) -> int:
        if "resumeAfter" in spec or "startAfter" in spec:
            use_after = "startAfter" in spec
            position = parse_token(spec["startAfter"] if use_after else spec["resumeAfter"])
            if position.kind == INVALIDATE and not use_after:
                raise CommandError(
                    ErrorCode.INVALID_RESUME_TOKEN,
                    "Attempting to resume a change stream using 'resumeAfter' is not allowed "
                    "from an invalidate notification.",
                )
            if self._oplog.lost_after(position.seq):
                raise history_lost("PlanExecutor error during aggregation")
            if position.kind == EVENT and position.fragment:
                # Resuming inside a split event: replay that event, skipping delivered fragments.
                self._skip_fragments = position.fragment
                return position.seq - 1
            return position.seq
        if "startAtOperationTime" in spec:
            start = spec["startAtOperationTime"]
            if not isinstance(start, Timestamp):
                raise CommandError(
                    ErrorCode.TYPE_MISMATCH, "startAtOperationTime must be a timestamp"
                )
            seq = self._oplog.first_seq_at(start)
            if seq is None:
                raise history_lost("PlanExecutor error during aggregation")
            return seq
        return self._oplog.last_seq

    def next_batch(self, batch_size: int | None, max_time_ms: int | None, first: bool) -> Batch:
        limit = batch_size if batch_size and batch_size > 0 else None
        if first and batch_size == 0:
            limit = 0
        deadline = time.monotonic() + (max_time_ms or DEFAULT_AWAIT_MS) / 1000
        condition = self._oplog.condition
        with condition:
            while True:
                documents = self._collect(limit)
                remaining = deadline - time.monotonic()
                if documents or first or self._invalidated or remaining <= 0 or limit == 0:
                    break
                condition.wait(remaining)
            if not documents and not first:
                # Idle: the post-batch token moves on only with the periodic no-op write.
                self._oplog.write_noop_if_due()
            token = self._post_batch_token(documents)
        return Batch(documents, exhausted=self._invalidated, extra={"postBatchResumeToken": token})

    def _post_batch_token(self, documents: list[RawBSONDocument]) -> dict[str, str]:
        if self._pending or self._invalidated or (documents and self._last_token_is_current):
            assert self._last_token is not None
            return self._last_token
        return make_token(self._oplog.clock.current(), self._position, HIGH_WATER)

    def _collect(self, limit: int | None) -> list[RawBSONDocument]:
        out: list[RawBSONDocument] = []
        size = 0
        self._last_token_is_current = False
        while self._pending or not self._invalidated:
            if limit is not None and len(out) >= limit:
                break
            if not self._pending:
                if self._oplog.lost_after(self._position):
                    raise position_lost(self._position)
                entry = self._oplog.entry(self._position + 1)
                if entry is None:
                    break
                self._position = entry.seq
                self._pending = self._render(entry)
                self._last_token_is_current = False
                continue
            raw, token = self._pending[0]
            if out and size + len(raw.raw) > MAX_BATCH_BYTES:
                break
            self._pending.pop(0)
            out.append(raw)
            size += len(raw.raw)
            self._last_token = token
            self._last_token_is_current = True
        return out

    def _render(self, entry: Entry) -> list[tuple[RawBSONDocument, dict[str, str]]]:
        if not self._scope.sees(entry):
            return []
        rendered: list[tuple[RawBSONDocument, dict[str, str]]] = []
        event = self._event(entry)
        raw = self._apply_stages(event)
        if raw is not None:
            rendered.extend(self._encode(raw, event["_id"], entry))
        if self._scope.invalidated_by(entry):
            token = make_token(entry.cluster_time, entry.seq, INVALIDATE)
            invalidate = {
                "_id": token,
                "operationType": "invalidate",
                "clusterTime": entry.cluster_time,
                "wallTime": entry.wall_time,
            }
            rendered.append((storage.encode(invalidate), token))
            self._invalidated = True
        return rendered

    def _event(self, entry: Entry) -> dict[str, Any]:
        event: dict[str, Any] = {}
        if entry.txn_number is not None:
            # A transaction's events carry its number and session, and the server adds them
            # first (change_stream_event_transform.cpp, addTransactionIdFieldsIfPresent runs
            # before the resume token is set).
            event["txnNumber"] = entry.txn_number
            event["lsid"] = entry.lsid
        event["_id"] = make_token(entry.cluster_time, entry.seq, EVENT, 0, entry.txn_op_index)
        event["operationType"] = entry.operation
        event["clusterTime"] = entry.cluster_time
        event["wallTime"] = entry.wall_time
        full_document: RawBSONDocument | None = entry.full_document
        if entry.operation == "update" and self._full_document == "updateLookup":
            assert entry.coll is not None and entry.document_key is not None
            full_document = self._lookup(entry.db, entry.coll, entry.document_key["_id"])
            event["fullDocument"] = full_document
        elif entry.operation == "update" and self._full_document == "whenAvailable":
            event["fullDocument"] = None
        elif full_document is not None:
            event["fullDocument"] = full_document
        event["ns"] = (
            {"db": entry.db} if entry.coll is None else {"db": entry.db, "coll": entry.coll}
        )
        if entry.to is not None:
            event["to"] = entry.to
            if self._expanded:
                # 6.0+: the rename again, and the UUID of the collection it replaced if any
                # (manual: change-events/rename, "Expanded Event Information").
                description: dict[str, Any] = {"to": entry.to}
                if entry.drop_target is not None:
                    description["dropTarget"] = entry.drop_target
                event["operationDescription"] = description
        if entry.document_key is not None:
            event["documentKey"] = entry.document_key
        if entry.update_description is not None:
            event["updateDescription"] = entry.update_description
        return event

    def _apply_stages(self, event: dict[str, Any]) -> RawBSONDocument | None:
        """The event encoded after the pipeline's stages; None when a `$match` drops it."""
        if not self._stages:
            return storage.encode(event)
        if not self._projects:
            # Only filters: match the event as built, before encoding it. Its full document is
            # matched through a fresh lazy view, so a filter reaching into it decodes only as far
            # as its paths go and leaves the stored document (and the batch) holding no decoded
            # objects; an event a filter drops is never encoded.
            view = event
            full_document = event.get("fullDocument")
            if full_document is not None and self._filters_read_documents:
                fresh = RawBSONDocument(full_document.raw, storage.RAW_OPTIONS)
                view = {**event, "fullDocument": fresh}
            for matcher in self._filters:
                if not matcher.matches(view):
                    return None
            return storage.encode(event)
        raw = storage.encode(event)
        token = event["_id"]
        document = storage.decode(raw)
        for stage in self._stages:
            if "$match" in stage:
                if not query.matches(document, stage["$match"]):
                    return None
            else:
                document = query.project(document, stage["$project"])
        if document.get("_id") != token:
            raise CommandError(
                ErrorCode.CHANGE_STREAM_FATAL_ERROR,
                "Encountered an event whose _id field, which contains the resume token, was "
                "modified by the pipeline. Modifying the _id field of an event makes it "
                "impossible to resume the stream from that point.",
            )
        return storage.encode(document)

    def _encode(
        self, raw: RawBSONDocument, token: dict[str, str], entry: Entry
    ) -> list[tuple[RawBSONDocument, dict[str, str]]]:
        if len(raw.raw) <= self._max_event_bytes:
            return [(raw, token)]
        if not self._split:
            raise too_large(len(raw.raw), self._max_event_bytes, token)
        fragments = split_event(storage.decode(raw), entry, self._max_event_bytes)
        skipped, self._skip_fragments = self._skip_fragments, 0
        return fragments[skipped:]


def too_large(size: int, limit: int, token: Mapping[str, str]) -> CommandError:
    return CommandError(
        ErrorCode.BSON_OBJECT_TOO_LARGE,
        f"Executor error during getMore :: caused by :: BSONObj size: {size} ({size:#x}) is "
        f"invalid. Size must be between 0 and {limit}({limit // (1024 * 1024)}MB) First element: "
        f'_id: {{ _data: "{token["_data"]}" }}',
    )


def _field_size(name: str, value: Any) -> int:
    # An element's size is the size of a one-field document less its 5 bytes of framing.
    return len(bson.encode({name: value}, codec_options=storage.DECODE_OPTIONS)) - 5


def split_event(
    event: dict[str, Any], entry: Entry, limit: int
) -> list[tuple[RawBSONDocument, dict[str, str]]]:
    """Fragments of an oversized event as `$changeStreamSplitLargeEvent` produces them."""
    sample_token = make_token(entry.cluster_time, entry.seq, EVENT, 1, entry.txn_op_index)
    overhead = (
        _field_size("_id", sample_token) + _field_size("splitEvent", {"fragment": 1, "of": 1}) + 5
    )
    groups: list[list[tuple[str, Any]]] = [[]]
    used = overhead
    for name, value in event.items():
        if name == "_id":
            continue
        size = _field_size(name, value)
        if size + overhead > limit:
            raise too_large(size + overhead, limit, event["_id"])
        if used + size > limit and groups[-1]:
            groups.append([])
            used = overhead
        groups[-1].append((name, value))
        used += size
    fragments = []
    for number, group in enumerate(groups, start=1):
        token = make_token(entry.cluster_time, entry.seq, EVENT, number, entry.txn_op_index)
        fragment = {"_id": token, "splitEvent": {"fragment": number, "of": len(groups)}}
        fragment.update(group)
        fragments.append((storage.encode(fragment), token))
    return fragments
