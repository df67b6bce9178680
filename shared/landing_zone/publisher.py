"""The publisher: the single owner of every table's file sequence in the landing zone.

Publishing one batch, and why each step is where it is:
1. stage: write the parquet bytes under a ``_staging-...`` name (ignored by the replicator);
2. allocate: one compare-and-swap on the table's sequence record takes the next number, records
   the staged name against it as *pending*, and stores the writer's progress in the same write —
   so "this batch is published" and "the writer has moved past it" can never disagree;
3. rename: the staged file appears complete under its 20-digit name (never overwriting);
4. record: a second compare-and-swap clears the pending entry.
A crash after 1 leaves only an ignored orphan (the writer republishes from its old progress).
A crash after 2 or 3 leaves a pending entry that ``repair`` finishes: rename the staged file, or —
if its data can never arrive — fill the number with a valid zero-row file. No gap survives.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa

from shared.errors import MirrorError
from shared.landing_zone import parquet_files
from shared.landing_zone.stores.base import LandingZoneStore, PathExistsError, PathNotFoundError
from shared.landing_zone.tables import (
    PARTNER_EVENTS_FILE,
    PROCESSED_FOLDER,
    TableRef,
)
from shared.state.base import JsonObject, StateStore, update

log = logging.getLogger(__name__)

SEQUENCE_KIND = "sequence"
STAGING_PREFIX = "_staging-"
# A staged file not yet allocated after this long belongs to a publisher that died before step 2.
ORPHAN_AGE_SECONDS = 3600
METADATA = {"keyColumns": [parquet_files.KEY_COLUMN]}


class Superseded(MirrorError):
    """Another process claimed this writer; this one must stop without publishing."""


@dataclass(frozen=True)
class PartnerInfo:
    name: str = "mongo-fabric-mirror"
    source_type: str = "MongoDB"
    source_version: str = "unknown"
    additional: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        document = {
            "partnerName": self.name,
            "sourceInfo": {
                "sourceType": self.source_type,
                "sourceVersion": self.source_version,
                "additionalInformation": self.additional,
            },
        }
        return json.dumps(document, indent=2).encode()


@dataclass(frozen=True)
class SequenceState:
    """The durable record of one table's sequence (state kind ``sequence``, key = folder)."""

    next_number: int
    pending: dict[int, str]
    progress: dict[str, JsonObject]

    @classmethod
    def from_json(cls, value: JsonObject | None, table: TableRef) -> SequenceState:
        if value is None:
            return cls(1, {}, {})
        try:
            next_number = value["next"]
            pending = {int(number): str(staged) for number, staged in value["pending"].items()}
            progress = dict(value["progress"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MirrorError(f"the sequence record of {table} is malformed: {error!r}") from None
        if not isinstance(next_number, int) or next_number < 1:
            raise MirrorError(f"the sequence record of {table} has an invalid next number")
        if any(not isinstance(item, dict) for item in progress.values()):
            raise MirrorError(f"the sequence record of {table} has malformed progress")
        return cls(next_number, pending, progress)

    def to_json(self) -> JsonObject:
        return {
            "next": self.next_number,
            "pending": {str(number): staged for number, staged in self.pending.items()},
            "progress": self.progress,
        }


class Publisher:
    def __init__(
        self, store: LandingZoneStore, state: StateStore, partner: PartnerInfo | None = None
    ) -> None:
        self.store = store
        self.state = state
        self.partner = partner or PartnerInfo()

    def prepare_table(self, table: TableRef) -> None:
        """Write the root's partner file and the table's ``_metadata.json``; finish crashed work."""
        self._write_once(PARTNER_EVENTS_FILE, self.partner.to_json())
        self._write_once(table.metadata_file, json.dumps(METADATA).encode())
        existing = json.loads(self.store.read(table.metadata_file))
        if existing.get("keyColumns") != METADATA["keyColumns"]:
            raise MirrorError(
                f"{table.metadata_file} has keyColumns {existing.get('keyColumns')!r}; "
                "keys can never change, so this table must be rebuilt"
            )
        self.repair(table)

    def claim(self, table: TableRef, writer: str) -> tuple[str, JsonObject]:
        """Take over ``writer`` (fencing any earlier holder); returns the owner token and progress.

        A process that lost its claim gets Superseded on its next publish, so two runs of the same
        partition or stream (a redelivered message, a restarted worker) never interleave files.
        """
        owner = uuid.uuid4().hex
        claimed: list[JsonObject] = []

        def take(value: JsonObject | None) -> JsonObject:
            current = SequenceState.from_json(value, table)
            previous = {k: v for k, v in current.progress.get(writer, {}).items() if k != "owner"}
            claimed[:] = [previous]
            progress = {**current.progress, writer: {**previous, "owner": owner}}
            return SequenceState(current.next_number, current.pending, progress).to_json()

        update(self.state, SEQUENCE_KIND, table.folder, take)
        return owner, claimed[0]

    def publish(
        self,
        table: TableRef,
        batch: pa.Table,
        writer: str,
        progress: JsonObject,
        owner: str | None = None,
    ) -> int:
        """Publish ``batch`` as the table's next file and record ``progress`` for ``writer``.

        Returns the file's sequence number. After a crash, ``progress(table, writer)`` tells the
        writer exactly which batches are in the landing zone (or will be, after ``repair``).
        With ``owner`` (from ``claim``), raises Superseded if another process claimed the writer.
        """
        staged = f"{table.folder}/{STAGING_PREFIX}{int(time.time())}-{uuid.uuid4().hex}.parquet"
        self.store.write(staged, parquet_files.encode(batch))
        taken: list[int] = []

        def allocate(value: JsonObject | None) -> JsonObject:
            current = SequenceState.from_json(value, table)
            if owner is not None and current.progress.get(writer, {}).get("owner") != owner:
                raise Superseded(f"{table}: another process took over {writer}")
            taken[:] = [current.next_number]
            recorded = progress if owner is None else {**progress, "owner": owner}
            return SequenceState(
                current.next_number + 1,
                {**current.pending, current.next_number: staged},
                {**current.progress, writer: recorded},
            ).to_json()

        try:
            update(self.state, SEQUENCE_KIND, table.folder, allocate)
        except Superseded:
            self.store.delete(staged)
            raise
        self._finish(table, taken[0], staged)
        return taken[0]

    def progress(self, table: TableRef, writer: str) -> JsonObject | None:
        return self._sequence(table).progress.get(writer)

    def allocated_count(self, table: TableRef) -> int:
        """How many sequence numbers have been allocated (pending ones are finished by repair)."""
        return self._sequence(table).next_number - 1

    def repair(self, table: TableRef) -> None:
        """Finish every allocated-but-unpublished number and remove orphaned staged files."""
        current = self._sequence(table)
        for number, staged in sorted(current.pending.items()):
            log.warning("repairing %s file %d left pending by a crashed publish", table, number)
            self._finish(table, number, staged)
        self._remove_orphans(table, set(current.pending.values()))

    def drop_table(self, table: TableRef) -> None:
        """Delete the table folder and its sequence: the replicator drops the table."""
        self.store.delete_folder(table.folder)
        self.state.delete(SEQUENCE_KIND, table.folder)

    def _sequence(self, table: TableRef) -> SequenceState:
        record = self.state.get(SEQUENCE_KIND, table.folder)
        return SequenceState.from_json(None if record is None else record.value, table)

    def _finish(self, table: TableRef, number: int, staged: str) -> None:
        final = table.data_file(number)
        try:
            self.store.rename_new(staged, final)
        except PathExistsError:
            self.store.delete(staged)  # published already; this is a leftover copy
        except PathNotFoundError:
            if not self._was_published(table, final):
                log.error("%s file %d lost its staged data; filled with zero rows", table, number)
                self._write_once(final, parquet_files.empty_file())

        def clear(value: JsonObject | None) -> JsonObject:
            current = SequenceState.from_json(value, table)
            pending = {n: s for n, s in current.pending.items() if n != number}
            return SequenceState(current.next_number, pending, current.progress).to_json()

        update(self.state, SEQUENCE_KIND, table.folder, clear)

    def _was_published(self, table: TableRef, final: str) -> bool:
        # The replicator moves processed files into _ProcessedFiles/; they count as published.
        name = final.rsplit("/", 1)[1]
        processed = f"{table.folder}/{PROCESSED_FOLDER}/{name}"
        return self.store.size(final) is not None or self.store.size(processed) is not None

    def _remove_orphans(self, table: TableRef, referenced: set[str]) -> None:
        cutoff = time.time() - ORPHAN_AGE_SECONDS
        for stored in self.store.list_files(table.folder):
            name = stored.path.rsplit("/", 1)[-1]
            if not name.startswith(STAGING_PREFIX) or stored.path in referenced:
                continue
            created = _staged_time(name)
            if created is not None and created < cutoff:
                self.store.delete(stored.path)

    def _write_once(self, path: str, data: bytes) -> None:
        try:
            self.store.write_new(path, data)
        except PathExistsError:
            pass


def _staged_time(name: str) -> int | None:
    stamp = name[len(STAGING_PREFIX) :].split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else None
