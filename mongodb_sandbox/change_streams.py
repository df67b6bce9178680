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

from mongodb_sandbox import aggregation, query, storage
from mongodb_sandbox.cursors import MAX_BATCH_BYTES, Batch
from mongodb_sandbox.errors import CommandError, ErrorCode, unsupported
from mongodb_sandbox.oplog import Entry, Oplog

EVENT, INVALIDATE, HIGH_WATER = 0, 1, 2
DEFAULT_AWAIT_MS = 1000
MAX_EVENT_BYTES = 16 * 1024 * 1024
_TOKEN = re.compile(
    r"82([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{16})[0-9A-F]{8}([0-9A-F]{2})([0-9A-F]{4})"
)
_RESUME_DATA = "82%08X%08X%016X%08X%02X%04X"
_SYSTEM_DATABASES = ("admin", "config", "local")
SPLIT_STAGE = "$changeStreamSplitLargeEvent"
# Events only streams opened with showExpandedEvents see (the manual's "Expanded Events"),
# which also get each event's collectionUUID and a DDL event's operationDescription.
EXPANDED_OPERATIONS = frozenset({"create", "createIndexes", "dropIndexes", "modify"})
# The stages a change stream's pipeline may hold after `$changeStream` (the manual's "Modify
# Change Stream Output"; the server's `isAllowedInChangeStream` constraint), and the ones the
# sandbox runs. `$redact` is allowed by MongoDB but needs expression operators the sandbox lacks.
ALLOWED_STAGES = frozenset(
    {
        "$match",
        "$project",
        "$addFields",
        "$set",
        "$unset",
        "$replaceRoot",
        "$replaceWith",
        "$redact",
        SPLIT_STAGE,
    }
)
# Stages a real server knows but refuses after `$changeStream` with IllegalOperation (20)
# "<stage> is not permitted in a $changeStream pipeline" (Pipeline::validateTopLevelPipeline);
# any other name is "Unrecognized pipeline stage name" (40324), as DocumentSource::parse says.
KNOWN_STAGES = frozenset(
    {
        "$bucket",
        "$bucketAuto",
        "$changeStream",
        "$collStats",
        "$count",
        "$currentOp",
        "$densify",
        "$documents",
        "$facet",
        "$fill",
        "$geoNear",
        "$graphLookup",
        "$group",
        "$indexStats",
        "$limit",
        "$listLocalSessions",
        "$listSearchIndexes",
        "$listSessions",
        "$lookup",
        "$merge",
        "$out",
        "$planCacheStats",
        "$sample",
        "$search",
        "$searchMeta",
        "$setWindowFields",
        "$skip",
        "$sort",
        "$sortByCount",
        "$unionWith",
        "$unwind",
    }
)
# DocumentSourceChangeStreamSpec (document_source_change_stream.idl, 7.0): each field and its
# BSON type. The IDL parser refuses any other field with 40415 and a wrong type with 14.
_SPEC_FIELDS: dict[str, tuple[type, ...]] = {
    "resumeAfter": (Mapping,),
    "startAfter": (Mapping,),
    "startAtOperationTime": (Timestamp,),
    "fullDocument": (str,),
    "fullDocumentBeforeChange": (str,),
    "allChangesForCluster": (bool,),
    "showMigrationEvents": (bool,),
    "showSystemEvents": (bool,),
    "allowToRunOnConfigDB": (bool,),
    "allowToRunOnSystemNS": (bool,),
    "showExpandedEvents": (bool,),
}
_BSON_TYPE_NAMES = {Mapping: "object", Timestamp: "timestamp", str: "string", bool: "bool"}
# The enumerations FullDocumentMode and FullDocumentBeforeChangeMode of the same IDL.
FULL_DOCUMENT_MODES = ("default", "updateLookup", "whenAvailable", "required")
BEFORE_CHANGE_MODES = ("off", "whenAvailable", "required")


def validate_spec(spec: Any) -> None:
    """Refuse a `$changeStream` specification as the server's IDL parser does."""
    if not isinstance(spec, Mapping):
        raise CommandError(
            ErrorCode.FAILED_TO_PARSE,
            "the $changeStream stage specification must be an object",
        )
    for name, value in spec.items():
        types = _SPEC_FIELDS.get(name)
        if types is None:
            raise CommandError(
                ErrorCode.UNKNOWN_FIELD, f"BSON field '$changeStream.{name}' is an unknown field."
            )
        if not isinstance(value, types) or (types == (Mapping,) and isinstance(value, bool)):
            raise CommandError(
                ErrorCode.TYPE_MISMATCH,
                f"BSON field '$changeStream.{name}' is the wrong type "
                f"'{type(value).__name__}', expected type '{_BSON_TYPE_NAMES[types[0]]}'",
            )
    for name, modes in (
        ("fullDocument", FULL_DOCUMENT_MODES),
        ("fullDocumentBeforeChange", BEFORE_CHANGE_MODES),
    ):
        if name in spec and spec[name] not in modes:
            raise CommandError(
                ErrorCode.BAD_VALUE,
                f"Enumeration value '{spec[name]}' for field '$changeStream.{name}' is not a "
                "valid value.",
            )
    if sum(name in spec for name in ("resumeAfter", "startAfter", "startAtOperationTime")) > 1:
        # DocumentSourceChangeStream::createFromBson (change_stream_helpers).
        raise CommandError(
            ErrorCode.MULTIPLE_RESUME_OPTIONS,
            "Only one type of resume option is allowed, but multiple were found.",
        )


def validate_stages(stages: list[Any], *, split_large_events: bool = True) -> None:
    """Refuse the stages after `$changeStream` as a server does, with its codes.

    Without `split_large_events` the split stage is unknown, as on servers before 7.0 and 6.0.9
    (the manual: "$changeStreamSplitLargeEvent ... New in version 7.0 (also 6.0.9)").
    """
    for index, stage in enumerate(stages):
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise CommandError(
                ErrorCode.STAGE_NOT_ONE_FIELD,
                "A pipeline stage specification object must contain exactly one field.",
            )
        name, spec = next(iter(stage.items()))
        if name == "$changeStream":
            raise CommandError(
                ErrorCode.STAGE_ONLY_FIRST,
                "$changeStream is only valid as the first stage in a pipeline",
            )
        if name in KNOWN_STAGES:
            raise CommandError(
                ErrorCode.ILLEGAL_OPERATION, f"{name} is not permitted in a $changeStream pipeline"
            )
        if name not in ALLOWED_STAGES or (name == SPLIT_STAGE and not split_large_events):
            raise CommandError(
                ErrorCode.UNRECOGNIZED_PIPELINE_STAGE,
                f"Unrecognized pipeline stage name: '{name}'",
            )
        if name == SPLIT_STAGE:
            # document_source_change_stream_split_large_event.cpp: 7182800, 7183900, 7182802.
            if not isinstance(spec, Mapping) or spec:
                raise CommandError(
                    ErrorCode.SPLIT_SPEC_NOT_EMPTY,
                    "$changeStreamSplitLargeEvent spec should be an empty object",
                )
            if any(SPLIT_STAGE in other for other in stages[:index]):
                raise CommandError(
                    ErrorCode.STAGE_USED_TWICE,
                    "$changeStreamSplitLargeEvent can only be used once in the pipeline",
                )
            if index != len(stages) - 1:
                raise CommandError(
                    ErrorCode.SPLIT_NOT_LAST,
                    "$changeStreamSplitLargeEvent must be the last stage in the pipeline",
                )
        if name == "$redact":
            raise unsupported("$redact (expression operators)")


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
        split_large_events: bool = True,
    ) -> None:
        self.namespace = namespace
        self._scope = scope
        self._oplog = oplog
        self._lookup = lookup
        self._max_event_bytes = max_event_bytes
        validate_spec(spec)
        validate_stages(stages, split_large_events=split_large_events)
        self._full_document = spec.get("fullDocument", "default")
        self._before_change = spec.get("fullDocumentBeforeChange", "off")
        self._expanded = bool(spec.get("showExpandedEvents", False))
        self._split = bool(stages) and SPLIT_STAGE in stages[-1]
        self._stages = stages[:-1] if self._split else stages
        self._projects = any("$match" not in stage for stage in self._stages)
        self._filters = [query.MemoizedFilter(s["$match"]) for s in self._stages if "$match" in s]
        self._filters_read_documents = any(f.reads("fullDocument") for f in self._filters)
        self._pending: list[tuple[RawBSONDocument, dict[str, str]]] = []
        self._skip_fragments = 0
        self._invalidated = False  # the invalidate is rendered (maybe not yet delivered)
        self._closed = False  # the invalidate is delivered and the cursor asked for more
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
            entry = self._oplog.entry(position.seq)
            if position.kind == EVENT and entry is not None and self._invalidates(entry):
                # Resuming from the invalidating event itself (a drop, rename or dropDatabase,
                # not its invalidate): the server's check-invalidate stage sees that entry again
                # and the invalidate after it is the stream's first event, whether resumeAfter
                # or startAfter (document_source_change_stream_check_invalidate.cpp swallows
                # the invalidate only when the token given is the invalidate's own).
                self._pending = [self._invalidate(entry)]
                self._invalidated = True
                # Until the invalidate is delivered, the batches' postBatchResumeToken stays
                # the resume point given.
                self._last_token = make_token(entry.cluster_time, entry.seq, EVENT)
                return position.seq
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
                if documents or first or self._closed or remaining <= 0 or limit == 0:
                    break
                condition.wait(remaining)
            if not documents and not first:
                # Idle: the post-batch token moves on only with the periodic no-op write.
                self._oplog.write_noop_if_due()
            token = self._post_batch_token(documents)
        return Batch(documents, exhausted=self._closed, extra={"postBatchResumeToken": token})

    def _post_batch_token(self, documents: list[RawBSONDocument]) -> dict[str, str]:
        if self._pending or self._invalidated or (documents and self._last_token_is_current):
            assert self._last_token is not None
            return self._last_token
        return make_token(self._oplog.clock.current(), self._position, HIGH_WATER)

    def _collect(self, limit: int | None) -> list[RawBSONDocument]:
        out: list[RawBSONDocument] = []
        size = 0
        self._last_token_is_current = False
        while True:
            if limit is not None and len(out) >= limit:
                break
            if self._invalidated and not self._pending:
                # As getmore_cmd.cpp: the invalidate is a document of the batch like any other;
                # the cursor closes when the batch asks for one more (ChangeStreamInvalidated
                # is thrown then), so an invalidate that fills a batch comes with an open
                # cursor and the next getMore answers an empty, final batch.
                self._closed = True
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
        if entry.operation in EXPANDED_OPERATIONS and not self._expanded:
            return []
        rendered: list[tuple[RawBSONDocument, dict[str, str]]] = []
        event = self._event(entry)
        raw = self._apply_stages(event)
        if raw is not None:
            rendered.extend(self._encode(raw, event["_id"], entry))
        if self._scope.invalidated_by(entry):
            rendered.append(self._invalidate(entry))
            self._invalidated = True
        return rendered

    def _invalidates(self, entry: Entry) -> bool:
        return self._scope.sees(entry) and self._scope.invalidated_by(entry)

    def _invalidate(self, entry: Entry) -> tuple[RawBSONDocument, dict[str, str]]:
        token = make_token(entry.cluster_time, entry.seq, INVALIDATE)
        invalidate = {
            "_id": token,
            "operationType": "invalidate",
            "clusterTime": entry.cluster_time,
            "wallTime": entry.wall_time,
        }
        return storage.encode(invalidate), token

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
        elif entry.operation == "update" and self._full_document in ("whenAvailable", "required"):
            # The post-image kept with the write when the collection has
            # changeStreamPreAndPostImages enabled (manual: "Change Streams with Document
            # Pre- and Post-Images"); none otherwise: null, or NoMatchingDocument if required.
            if entry.post_image is None and self._full_document == "required":
                raise _image_missing("a post-image for all update events", "post-image", event)
            event["fullDocument"] = entry.post_image
        elif full_document is not None:
            event["fullDocument"] = full_document
        if self._before_change != "off" and entry.operation in ("update", "replace", "delete"):
            if entry.pre_image is None and self._before_change == "required":
                raise _image_missing(
                    "a pre-image for all update, delete and replace events", "pre-image", event
                )
            event["fullDocumentBeforeChange"] = entry.pre_image
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
            event["updateDescription"] = _update_description(
                entry.update_description, expanded=self._expanded
            )
        if self._expanded:
            if entry.collection_uuid is not None:
                event["collectionUUID"] = entry.collection_uuid
            if entry.operation_description is not None:
                event["operationDescription"] = entry.operation_description
            if entry.state_before_change is not None:
                event["stateBeforeChange"] = entry.state_before_change
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
        document: dict[str, Any] | None = storage.decode(raw)
        for stage in self._stages:
            assert document is not None
            document = _run_stage(document, stage)
            if document is None:
                return None
        assert document is not None
        if document.get("_id") != token:
            # DocumentSourceChangeStreamEnsureResumeTokenPresent / change_stream_helpers: the
            # event's _id is its resume token; a pipeline that changes it fails the stream.
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


def _update_description(description: Mapping[str, Any], *, expanded: bool) -> dict[str, Any]:
    """`updateDescription` as the stream shows it: `disambiguatedPaths` (6.1+) only with
    showExpandedEvents (before 8.2; the sandbox answers as 7.0). The delta's writer worked them
    out (deltas.describe: array indexes as ints, and only for ambiguous paths)."""
    shown = {key: value for key, value in description.items() if key != "disambiguatedPaths"}
    if expanded:
        shown["disambiguatedPaths"] = description.get("disambiguatedPaths", {})
    return shown


def _run_stage(document: dict[str, Any], stage: Mapping[str, Any]) -> dict[str, Any] | None:
    """One allowed stage over one event; None when a `$match` drops it."""
    name, spec = next(iter(stage.items()))
    if name == "$match":
        return document if query.matches(document, spec) else None
    if name in ("$replaceRoot", "$replaceWith"):
        expression = spec.get("newRoot") if name == "$replaceRoot" else spec
        root = query.evaluate(document, expression)
        if not isinstance(root, Mapping):
            raise CommandError(
                ErrorCode.NEW_ROOT_NOT_OBJECT,
                f"'newRoot' expression must evaluate to an object, but resulting value was: "
                f"{root!r}",
            )
        return dict(root)
    (result,) = aggregation.run([document], [stage])
    return storage.decode(result)


def _image_missing(what: str, image: str, event: Mapping[str, Any]) -> CommandError:
    return CommandError(
        ErrorCode.NO_MATCHING_DOCUMENT,
        f"Executor error during getMore :: caused by :: Change stream was configured to require "
        f"{what}, but the {image} was not found for event: {event.get('operationType')} on "
        f"{event.get('ns')}",
    )


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
