"""The publisher: the single owner of every table's file sequence in the landing zone.

Publishing one batch, and why each step is where it is:
1. stage: write the parquet bytes under a ``_staging-...`` name (ignored by the replicator);
2. allocate: one compare-and-swap on the table's sequence record takes the next number, records
   the staged name and its SHA-256 against it as *pending* (with the writer's claim and a lease),
   and stores the writer's progress in the same write — so "this batch is published" and "the
   writer has moved past it" can never disagree;
3. rename: the staged file appears complete under its 20-digit name (never overwriting);
4. record: a second compare-and-swap clears the pending entry.
A crash after 1 leaves only an ignored orphan (the writer republishes from its old progress).
A crash after 2 or 3 leaves a pending entry that ``repair`` finishes: rename the staged file, or —
if its data can never arrive — fill the number with a valid zero-row file. No gap survives.
Repair touches a pending entry only once its writer is provably gone: the writer was claimed by a
newer run (which fences the old one out), or the entry's lease expired. A live publish in another
process is never taken for a crashed one.
An existing file under a number is ours only if its SHA-256 is the one recorded at allocation;
anything else is a conflict, reported and never deleted.

Fencing. Every write a writer makes to a table is checked against its claim in the same
compare-and-swap that makes it (``_owned``), and a superseded writer changes nothing: a newer
claim, a rebuild that retired the table's generation, or a new generation after a rebuild all
fail that check. A rebuild (``retire`` / ``sweep`` / ``forget``, driven by
shared/pipeline/rebuild.py) is fenced the same way: ``retire`` marks the generation as going in
one compare-and-swap that names the generation the rebuilder means, so a rebuilder that slept
while another finished cannot retire the new generation; its sweep deletes only files it listed
while the old generation's record still existed (``delete_unchanged``: a newer file of the same
name is spared); and the record is forgotten only while it is still retired by that rebuilder.
A new generation can be bound only once the old record is gone, so nothing of it can be listed
by an older rebuild.

Binding. A table folder and the state store that numbers its files belong to each other: the
folder holds ``_mirror-binding.json`` naming the state store's identity and the table's
generation, and the sequence record names the same generation. ``prepare_table`` checks both,
and the files, before anything is published: a folder bound to another state, a state that lost
the table, a folder that lost files the state expects, or a state older than the folder stops the
table with a message that says how to recover.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from shared import __version__, telemetry
from shared.errors import MirrorError
from shared.landing_zone import parquet_files
from shared.landing_zone.stores.base import (
    LandingZoneStore,
    PathExistsError,
    PathNotFoundError,
    StoredFile,
)
from shared.landing_zone.tables import (
    PARTNER_EVENTS_FILE,
    TableRef,
    published_files,
    published_path,
    sequence_of,
)
from shared.state.base import ConflictError, JsonObject, StateStore, update

log = logging.getLogger(__name__)

SEQUENCE_KIND = "sequence"
# Per table folder: a folder deleted by a rebuild whose table Fabric may still hold. While it
# stands the folder is not bound again (nothing of a new generation is written), because Fabric
# must drop the old table first (see shared/pipeline/rebuild.py).
DROP_KIND = "drop"
STORE_KIND = "store"
STORE_IDENTITY_KEY = "identity"
STAGING_PREFIX = "_staging-"
BINDING_FILE = "_mirror-binding.json"
# A staged file not yet allocated after this long belongs to a publisher that died before step 2.
ORPHAN_AGE_SECONDS = 3600
# A pending publish whose writer was never claimed again is repaired after this long. A live
# publish finishes its rename and record within seconds; a restarted writer repairs at once.
PUBLISH_LEASE_SECONDS = 300
METADATA = {"keyColumns": [parquet_files.KEY_COLUMN]}
# The table as resync takes it: <database>.<collection>, the collection's own name, shell-quoted.
RESYNC_HINT = "mongo-fabric-mirror resync --table {table}"
_CLAIM_KEYS = ("owner", "lease_expires", "epoch")  # a writer's claim, beside its progress


class Superseded(MirrorError):
    """Another process claimed this writer; this one must stop without publishing."""


class LeaseHeld(MirrorError):
    """A live process holds this writer's lease; a second one must not publish for it."""


class PublishConflict(MirrorError):
    """A numbered file exists that this state store did not write: never deleted, never adopted."""


class BindingError(MirrorError):
    """The table folder and the state store do not belong to each other."""


class TableRebuilding(Superseded):
    """The table's generation is being rebuilt: no writer of it may publish or claim again."""


class AwaitingDrop(TableRebuilding):
    """The table's folder was deleted by a rebuild and Fabric has not yet dropped the old table:
    the folder may not be recreated until it has (``confirm_drop``)."""


@dataclass(frozen=True)
class Retirement:
    """A rebuild in progress: the generation it retires, its fencing token, and the files it
    listed while that generation's record still existed."""

    table: TableRef
    generation: str
    owner: str
    cause: str
    listed: tuple[StoredFile, ...]


@dataclass(frozen=True)
class PartnerInfo:
    """The landing zone's ``_partnerEvents.json`` (Microsoft's open-mirroring landing-zone format:
    ``partnerName`` and ``sourceInfo`` with ``sourceType``, ``sourceVersion`` and a free-form
    ``additionalInformation``): who writes the landing zone, from which source."""

    name: str = "mongo-fabric-mirror"
    source_type: str = "MongoDB"
    source_version: str | None = None  # the server's (buildInfo), once a process has asked it
    additional: dict[str, str] = field(default_factory=lambda: {"mirrorVersion": __version__})

    def to_json(self) -> bytes:
        document = {
            "partnerName": self.name,
            "sourceInfo": {
                "sourceType": self.source_type,
                "sourceVersion": self.source_version or "unknown",
                "additionalInformation": self.additional,
            },
        }
        return json.dumps(document, indent=2).encode()


@dataclass(frozen=True)
class PendingPublish:
    """A number allocated to a staged file that is not yet known to be published."""

    staged: str
    sha256: str
    writer: str
    owner: str
    expires: float
    # False for an insert-only (snapshot) file: a zero-row filler of its number has no marker
    # column either, so it cannot end the table's initial load early.
    markers: bool = True

    def to_json(self) -> JsonObject:
        value: JsonObject = {
            "staged": self.staged,
            "sha256": self.sha256,
            "writer": self.writer,
            "owner": self.owner,
            "expires": self.expires,
        }
        if not self.markers:
            value["markers"] = False
        return value

    @classmethod
    def from_json(cls, value: Any) -> PendingPublish:
        if not isinstance(value, dict):
            raise TypeError("a pending entry must be an object")
        return cls(
            _text(value["staged"]),
            _text(value["sha256"]),
            _text(value["writer"]),
            _text(value["owner"]),
            float(value["expires"]),
            value.get("markers", True) is not False,
        )


@dataclass(frozen=True)
class SequenceState:
    """The durable record of one table's sequence (state kind ``sequence``, key = folder)."""

    next_number: int
    pending: dict[int, PendingPublish]
    progress: dict[str, JsonObject]
    generation: str
    retired: JsonObject | None = None  # {"owner", "cause"} while a rebuild removes this generation

    @classmethod
    def from_json(cls, value: JsonObject | None, table: TableRef) -> SequenceState:
        if value is None:
            raise BindingError(f"{table} has no sequence record in this state store")
        try:
            next_number = value["next"]
            pending = {
                int(number): PendingPublish.from_json(entry)
                for number, entry in value["pending"].items()
            }
            progress = dict(value["progress"])
            generation = _text(value["generation"])
            retired = value.get("retired")
            if retired is not None and not isinstance(retired.get("owner"), str):
                raise TypeError("a retirement must name its owner")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MirrorError(f"the sequence record of {table} is malformed: {error!r}") from None
        if not isinstance(next_number, int) or next_number < 1:
            raise MirrorError(f"the sequence record of {table} has an invalid next number")
        if any(not isinstance(item, dict) for item in progress.values()):
            raise MirrorError(f"the sequence record of {table} has malformed progress")
        return cls(next_number, pending, progress, generation, retired)

    def to_json(self) -> JsonObject:
        value: JsonObject = {
            "next": self.next_number,
            "pending": {str(number): entry.to_json() for number, entry in self.pending.items()},
            "progress": self.progress,
            "generation": self.generation,
        }
        if self.retired is not None:
            value["retired"] = self.retired
        return value

    def holder(self, writer: str) -> str | None:
        owner = self.progress.get(writer, {}).get("owner")
        return owner if isinstance(owner, str) else None


@dataclass(frozen=True)
class Binding:
    """The content of a table folder's ``_mirror-binding.json``."""

    state_id: str
    generation: str
    state_description: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "stateStoreId": self.state_id,
                "generation": self.generation,
                "stateStore": self.state_description,
            },
            indent=2,
        ).encode()

    @classmethod
    def parse(cls, data: bytes, table: TableRef) -> Binding:
        try:
            value = json.loads(data)
            return cls(
                _text(value["stateStoreId"]),
                _text(value["generation"]),
                _text(value.get("stateStore", "unknown")),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise BindingError(
                f"{table}/{BINDING_FILE} is unreadable ({error}); the folder's owner is unknown. "
                f"{_recovery(table)}"
            ) from None


class Publisher:
    def __init__(
        self, store: LandingZoneStore, state: StateStore, partner: PartnerInfo | None = None
    ) -> None:
        self.store = store
        self.state = state
        self.partner = partner or PartnerInfo()
        self._partner_written: bytes | None = None  # the partner file known to be in the store
        self._state_id: str | None = None
        self._bound: set[str] = set()

    @property
    def state_id(self) -> str:
        """This state store's identity: a random id recorded in the store on first use."""
        if self._state_id is None:
            record = self.state.get(STORE_KIND, STORE_IDENTITY_KEY)
            if record is None:
                try:
                    record = self.state.create(
                        STORE_KIND, STORE_IDENTITY_KEY, {"id": uuid.uuid4().hex}
                    )
                except ConflictError:
                    record = self.state.get(STORE_KIND, STORE_IDENTITY_KEY)
            identity = None if record is None else record.value.get("id")
            if not isinstance(identity, str) or not identity:
                raise MirrorError(f"{self.state.description} has a malformed identity record")
            self._state_id = identity
        return self._state_id

    def prepare_table(self, table: TableRef, generation: str | None = None) -> None:
        """Check the folder belongs to this state (binding a new table), write the root's partner
        file and the table's ``_metadata.json``, and finish crashed publishes whose lease expired.

        With ``generation``, only that generation of the table is prepared, never a new one bound:
        TableRebuilding if the table has another by now (a worker of a plan rebuilt away must not
        bring back the folder of a collection dropped for good).
        """
        self._bind(table, generation)
        self._write_partner_events()
        self._write_once(table.metadata_file, json.dumps(METADATA).encode())
        existing = json.loads(self.store.read(table.metadata_file))
        if existing.get("keyColumns") != METADATA["keyColumns"]:
            raise MirrorError(
                f"{table.metadata_file} has keyColumns {existing.get('keyColumns')!r}; "
                "keys can never change, so this table must be rebuilt: "
                + RESYNC_HINT.format(table=table.command_name)
            )
        self.repair(table)

    def claim(
        self,
        table: TableRef,
        writer: str,
        lease_seconds: float | None = None,
        epoch: int | None = None,
    ) -> tuple[str, JsonObject]:
        """Take over ``writer`` (fencing any earlier holder); returns the owner token and progress.

        A process that lost its claim gets Superseded on its next publish, so two runs of the same
        partition or stream (a redelivered message, a restarted worker) never interleave files.
        With ``lease_seconds``, the claim is refused (LeaseHeld) while another holder's lease is
        live, and each publish renews it. With ``epoch`` (the change reader's lease epoch), a
        holder of a newer epoch is never taken over (Superseded): a paused reader cannot take a
        table back from its successor. Publishes the fenced holder left pending are finished.
        """
        owner = uuid.uuid4().hex
        claimed: list[JsonObject] = []
        now = time.time()

        def take(value: JsonObject | None) -> JsonObject:
            current = _live(SequenceState.from_json(value, table), table)
            held = current.progress.get(writer, {})
            expires = held.get("lease_expires")
            if (
                lease_seconds is not None
                and held.get("owner")
                and isinstance(expires, int | float)
                and expires > now
            ):
                raise LeaseHeld(
                    f"{table}: another process holds {writer} for {expires - now:.0f} more "
                    "seconds; only one reader may publish a table"
                )
            held_epoch = held.get("epoch", 0)
            if epoch is not None and isinstance(held_epoch, int) and held_epoch > epoch:
                raise Superseded(
                    f"{table}: a newer reader (epoch {held_epoch}) holds {writer}; "
                    f"this one (epoch {epoch}) stops"
                )
            previous = {k: v for k, v in held.items() if k not in _CLAIM_KEYS}
            claimed[:] = [previous]
            mine: JsonObject = {**previous, "owner": owner}
            if epoch is not None:
                mine["epoch"] = epoch
            if lease_seconds is not None:
                mine["lease_expires"] = now + lease_seconds
            return _with(current, progress={**current.progress, writer: mine}).to_json()

        update(self.state, SEQUENCE_KIND, table.folder, take)
        self._repair_where(table, lambda entry: entry.writer == writer and entry.owner != owner)
        return owner, claimed[0]

    def publish(
        self,
        table: TableRef,
        batch: pa.Table,
        writer: str,
        progress: JsonObject,
        owner: str,
        lease_seconds: float | None = None,
    ) -> int:
        """Publish ``batch`` as the table's next file and record ``progress`` for ``writer``.

        Returns the file's sequence number. After a crash, ``progress(table, writer)`` tells the
        writer exactly which batches are in the landing zone (or will be, after ``repair``).
        ``owner`` comes from ``claim``: raises Superseded if another process claimed the writer.
        """
        data = parquet_files.encode(batch)
        staged = f"{table.folder}/{STAGING_PREFIX}{int(time.time())}-{uuid.uuid4().hex}.parquet"
        self.store.write(staged, data)
        entry = PendingPublish(
            staged,
            hashlib.sha256(data).hexdigest(),
            writer,
            owner,
            time.time() + PUBLISH_LEASE_SECONDS,
            parquet_files.has_markers(batch),
        )
        taken: list[int] = []

        def allocate(value: JsonObject | None) -> JsonObject:
            current = self._owned(value, table, writer, owner)
            for number, pending in current.pending.items():
                if pending.staged == staged:  # allocated by an attempt whose answer was lost
                    taken[:] = [number]
                    return current.to_json()
            taken[:] = [current.next_number]
            return _with(
                current,
                next_number=current.next_number + 1,
                pending={**current.pending, current.next_number: entry},
                progress={
                    **current.progress,
                    writer: _progress(current, writer, progress, owner, lease_seconds),
                },
            ).to_json()

        try:
            update(self.state, SEQUENCE_KIND, table.folder, allocate)
        except Superseded as error:
            self.store.delete(staged)
            if (
                isinstance(error, TableRebuilding)
                and self.state.get(SEQUENCE_KIND, table.folder) is None
            ):
                # Staging re-created the folder a rebuild had deleted (a writer paused before it
                # staged): remove it again, or Fabric would see the table's folder come back
                # before it dropped the table. Only while nothing is bound there (no record).
                self.store.delete_empty_folder(table.folder)
            raise
        self._finish(table, taken[0], entry)
        telemetry.record("files_published", 1, table=str(table))
        telemetry.record("rows_published", batch.num_rows, table=str(table))
        return taken[0]

    def record_progress(
        self,
        table: TableRef,
        writer: str,
        progress: JsonObject,
        owner: str,
        lease_seconds: float | None = None,
    ) -> None:
        """Record ``writer``'s progress without a file (e.g. an idle stream's checkpoint),
        fenced like a publish and renewing the lease."""

        def record(value: JsonObject | None) -> JsonObject:
            current = self._owned(value, table, writer, owner)
            mine = _progress(current, writer, progress, owner, lease_seconds)
            return _with(current, progress={**current.progress, writer: mine}).to_json()

        update(self.state, SEQUENCE_KIND, table.folder, record)

    def release(self, table: TableRef, writer: str, owner: str) -> None:
        """Give up ``writer``'s lease so the next reader need not wait for it to expire."""

        def drop_lease(value: JsonObject | None) -> JsonObject:
            current = SequenceState.from_json(value, table)
            held = current.progress.get(writer, {})
            if held.get("owner") != owner:
                return current.to_json()
            mine = {k: v for k, v in held.items() if k != "lease_expires"}
            return _with(current, progress={**current.progress, writer: mine}).to_json()

        update(self.state, SEQUENCE_KIND, table.folder, drop_lease)

    def progress(self, table: TableRef, writer: str) -> JsonObject | None:
        progress = self._sequence(table).progress.get(writer)
        if progress is None:
            return None
        return {k: v for k, v in progress.items() if k not in _CLAIM_KEYS}

    def allocated_count(self, table: TableRef) -> int:
        """How many sequence numbers have been allocated (pending ones are finished by repair)."""
        return self._sequence(table).next_number - 1

    def unfinished(self, table: TableRef, owners: set[str]) -> int:
        """Finish the pending publishes of ``owners`` (claims the caller holds and is not using
        right now); returns how many numbers of the table are still pending after that."""
        self._repair_where(table, lambda entry: entry.owner in owners)
        return len(self._sequence(table).pending)

    def repair(self, table: TableRef) -> None:
        """Finish allocated-but-unpublished numbers whose lease expired; remove old orphans."""
        now = time.time()
        self._repair_where(table, lambda entry: entry.expires <= now)
        current = self._sequence(table)
        self._remove_orphans(table, {entry.staged for entry in current.pending.values()})

    def generation(self, table: TableRef) -> str:
        return self._sequence(table).generation

    def retire(
        self, table: TableRef, cause: str, generation: str, hold_seconds: float = 0.0
    ) -> Retirement | None:
        """Begin (or take over) the rebuild of ``generation``: from this write on, no writer of
        it publishes or claims again. None if the table's generation is another one by now.

        ``hold_seconds``: the rebuilder waits before it sweeps (``resync`` lets the window in
        flight end); ``retired`` does not take the rebuild over from it meanwhile."""
        record = self.state.get(SEQUENCE_KIND, table.folder)
        if record is None or SequenceState.from_json(record.value, table).generation != generation:
            return None
        # Listed between two reads that both find ``generation``: no newer generation can have
        # written here in between, since one is bound only after this record is gone.
        listed = self._listing(table.folder)
        owner = uuid.uuid4().hex

        def mark(value: JsonObject | None) -> JsonObject:
            current = _of_generation(value, table, generation)
            retired: JsonObject = {"owner": owner, "cause": cause}
            if hold_seconds > 0:
                retired["held_until"] = time.time() + hold_seconds
            return _with(current, retired=retired).to_json()

        try:
            update(self.state, SEQUENCE_KIND, table.folder, mark)
        except _OtherGeneration:
            return None
        return Retirement(table, generation, owner, cause, tuple(listed))

    def retired(self, table: TableRef) -> Retirement | None:
        """The rebuild a crash left unfinished, taken over; None if the table is not retired."""
        record = self.state.get(SEQUENCE_KIND, table.folder)
        if record is None:
            return None
        current = SequenceState.from_json(record.value, table)
        if current.retired is None:
            return None
        held_until = current.retired.get("held_until")
        if isinstance(held_until, int | float) and held_until > time.time():
            return None  # its rebuilder is alive and waiting on purpose: not a crash's leftover
        return self.retire(table, str(current.retired.get("cause", "")), current.generation)

    def holds(self, retirement: Retirement) -> bool:
        """``retirement`` is still the table's rebuild (not finished or taken over by another)."""
        record = self.state.get(SEQUENCE_KIND, retirement.table.folder)
        if record is None:
            return False
        current = SequenceState.from_json(record.value, retirement.table)
        return (
            current.generation == retirement.generation
            and current.retired is not None
            and current.retired.get("owner") == retirement.owner
        )

    def sweep(self, retirement: Retirement) -> bool:
        """Delete the retired generation's files; False if another rebuild took over."""
        table, listed = retirement.table, list(retirement.listed)
        while listed:
            for stored in listed:
                self.store.delete_unchanged(stored)
            # Files a publisher of the old generation renamed in after the listing: listed again
            # between two checks that the old record still stands.
            if not self.holds(retirement):
                return False
            listed = self._listing(table.folder)
            if not self.holds(retirement):
                return False
        for folder in sorted(self._folders(table.folder), reverse=True):
            self.store.delete_empty_folder(folder)
        return True

    def sweep_unowned(self, table: TableRef) -> bool:
        """Delete a table folder this state store never numbered (another tool's, another
        state's): only while it still has no sequence record here, which binding would create.
        True if it held anything (a table Fabric may have made of it)."""
        listed = self._listing(table.folder)
        if self.state.get(SEQUENCE_KIND, table.folder) is not None:
            raise MirrorError(f"{table} was bound by another process meanwhile; nothing deleted")
        for stored in listed:
            self.store.delete_unchanged(stored)
        for folder in sorted(self._folders(table.folder), reverse=True):
            self.store.delete_empty_folder(folder)
        self._bound.discard(table.folder)
        return bool(listed)

    # -- waiting for Fabric to drop a deleted table ---------------------------------------------

    def await_drop(self, table: TableRef, cause: str) -> None:
        """Record that ``table``'s folder was deleted just now: it is not bound again until
        ``confirm_drop``. Made before the sequence record is forgotten, so no binder can find
        neither (``_bind`` reads the record first, then this)."""
        since = time.time()

        def mark(value: JsonObject | None) -> JsonObject:
            # A later deletion restarts the wait: Fabric must notice that one too.
            return {"since": since, "cause": cause}

        update(self.state, DROP_KIND, table.folder, mark)
        self._bound.discard(table.folder)

    def confirm_drop(self, table: TableRef, etag: str) -> bool:
        """Fabric no longer has the table (or the wait is over): the folder may be bound again.
        ``etag`` is the drop record's as the caller judged it; False if it changed since (the
        folder was deleted again meanwhile, so the judgement is stale)."""
        try:
            self.state.delete(DROP_KIND, table.folder, etag=etag)
        except ConflictError:
            return False
        return True

    def forget(self, retirement: Retirement) -> None:
        """Remove the retired generation's sequence record: the table may be bound afresh."""
        record = self.state.get(SEQUENCE_KIND, retirement.table.folder)
        if record is not None and self.holds(retirement):
            try:
                self.state.delete(SEQUENCE_KIND, retirement.table.folder, etag=record.etag)
            except ConflictError:
                return  # taken over meanwhile: the new owner forgets it
        self._bound.discard(retirement.table.folder)

    def _listing(self, folder: str) -> list[StoredFile]:
        return [file for sub in self._folders(folder) for file in self.store.list_files(sub)]

    def _folders(self, folder: str) -> list[str]:
        """``folder`` and every folder below it, parents first."""
        found = [folder]
        for sub in self.store.list_folders(folder):
            found += self._folders(sub)
        return found

    def _repair_where(self, table: TableRef, abandoned: Any) -> None:
        current = self._sequence(table)
        for number, entry in sorted(current.pending.items()):
            if abandoned(entry):
                log.warning("repairing %s file %d left pending by a crashed publish", table, number)
                self._finish(table, number, entry)

    def _owned(
        self, value: JsonObject | None, table: TableRef, writer: str, owner: str
    ) -> SequenceState:
        if value is None:  # the writer had a claim: its generation was rebuilt away since
            raise TableRebuilding(f"{table} was rebuilt; its writers of before stop")
        current = _live(SequenceState.from_json(value, table), table)
        holder = current.holder(writer)
        if holder is None:  # claims are never removed: this record is a newer generation's
            raise TableRebuilding(f"{table} was rebuilt since {writer} claimed it")
        if holder != owner:
            raise Superseded(f"{table}: another process took over {writer}")
        return current

    def _sequence(self, table: TableRef) -> SequenceState:
        record = self.state.get(SEQUENCE_KIND, table.folder)
        return SequenceState.from_json(None if record is None else record.value, table)

    def _finish(self, table: TableRef, number: int, entry: PendingPublish) -> None:
        final = table.data_file(number)
        try:
            self.store.rename_new(entry.staged, final)
        except PathExistsError:
            self._check_ours(table, number, entry, accept_fill=False)
            self.store.delete(entry.staged)  # published already; this is a leftover copy
        except PathNotFoundError:
            if published_files(self.store, table).consumed(number):
                pass  # renamed, applied by the replicator and deleted after its retention
            elif self._published_copy(table, final) is not None:
                # The staged data is gone either way; a concurrent repair may have filled it.
                self._check_ours(table, number, entry, accept_fill=True)
            elif self._still_pending(table, number, entry):
                log.error("%s file %d lost its staged data; filled with zero rows", table, number)
                self._write_once(final, parquet_files.empty_file(entry.markers))
            else:
                return  # the generation was rebuilt away: its numbers are nobody's to fill

        def clear(value: JsonObject | None) -> JsonObject:
            if value is None:
                raise _OtherGeneration  # rebuilt away meanwhile: nothing of ours to clear
            current = SequenceState.from_json(value, table)
            # Only this very entry: after a rebuild the number may be a newer generation's.
            pending = {n: e for n, e in current.pending.items() if (n, e) != (number, entry)}
            return _with(current, pending=pending).to_json()

        with contextlib.suppress(_OtherGeneration):
            update(self.state, SEQUENCE_KIND, table.folder, clear)

    def _still_pending(self, table: TableRef, number: int, entry: PendingPublish) -> bool:
        record = self.state.get(SEQUENCE_KIND, table.folder)
        if record is None:
            return False
        current = SequenceState.from_json(record.value, table)
        return current.retired is None and current.pending.get(number) == entry

    def _check_ours(
        self, table: TableRef, number: int, entry: PendingPublish, accept_fill: bool
    ) -> None:
        """An existing file under ``number`` is ours only if it has the content we allocated."""
        copy = self._published_copy(table, table.data_file(number))
        if copy is not None:
            data = self.store.read(copy)
            if hashlib.sha256(data).hexdigest() == entry.sha256:
                return
            if accept_fill and data == parquet_files.empty_file(entry.markers):
                return
        raise PublishConflict(
            f"{table}: file {number} already exists with content this state store did not "
            "write (another process or state store is writing this folder). Nothing was "
            f"deleted. Stop the other writer, then rebuild the table: "
            + RESYNC_HINT.format(table=table.command_name)
        )

    def _published_copy(self, table: TableRef, final: str) -> str | None:
        # The replicator moves processed files into _ProcessedFiles/ or _FilesReadyToDelete/;
        # they count as published.
        number = sequence_of(final.rsplit("/", 1)[1])
        assert number is not None
        return published_path(self.store, table, number)

    def _bind(self, table: TableRef, generation: str | None = None) -> None:
        if table.folder in self._bound and generation is None:
            known = self.state.get(SEQUENCE_KIND, table.folder)
            if known is not None and "retired" not in known.value:
                return
            self._bound.discard(table.folder)  # rebuilt by another process: bind afresh
        binding_path = f"{table.folder}/{BINDING_FILE}"
        record = self.state.get(SEQUENCE_KIND, table.folder)
        if generation is not None and (
            record is None or record.value.get("generation") != generation
        ):
            raise TableRebuilding(f"{table} was rebuilt since generation {generation}")
        if record is None:
            # After the sequence record (see await_drop): a folder a rebuild deleted stays
            # deleted until Fabric dropped the table.
            drop = self.state.get(DROP_KIND, table.folder)
            if drop is not None:
                since = drop.value.get("since")
                ago = time.time() - since if isinstance(since, int | float) else 0.0
                raise AwaitingDrop(
                    f"{table}: its folder was deleted {ago:.0f} s ago "
                    f"({drop.value.get('cause') or 'rebuilt'}); waiting for Fabric to drop the "
                    "old table before the new one is published"
                )
        binding = self._read_binding(table)
        numbers = self._data_numbers(table)
        if record is None:
            if binding is not None:
                raise BindingError(
                    f"{table}: the folder belongs to another state store "
                    f"({binding.state_description}, id {binding.state_id}), and "
                    f"{self.state.description} has no record of this table. Point STATE_STORE "
                    f"at the store that wrote it, or rebuild the table: "
                    + RESYNC_HINT.format(table=table.command_name)
                )
            if numbers:
                raise BindingError(
                    f"{table}: the folder holds {len(numbers)} data files that "
                    f"{self.state.description} did not number (written by another tool or "
                    "an older version). Rebuild the table: "
                    + RESYNC_HINT.format(table=table.command_name)
                )
            fresh = SequenceState(1, {}, {}, uuid.uuid4().hex)
            try:
                record = self.state.create(SEQUENCE_KIND, table.folder, fresh.to_json())
            except ConflictError:
                record = self.state.get(SEQUENCE_KIND, table.folder)
        current = _live(
            SequenceState.from_json(None if record is None else record.value, table), table
        )
        mine = Binding(self.state_id, current.generation, self.state.description)
        if binding is None:
            binding = self._read_binding(table)  # another process may have just bound it
        if binding is None:
            if current.next_number > 1:
                raise BindingError(
                    f"{table}: {self.state.description} has published "
                    f"{current.next_number - 1} files to this table, but the folder has no "
                    "binding: this is not the landing zone that state belongs to (or the "
                    "table folder was deleted). Point LANDING_ZONE at the right place, or "
                    "rebuild the table: " + RESYNC_HINT.format(table=table.command_name)
                )
            try:
                self.store.write_new(binding_path, mine.to_json())
                binding = mine
            except PathExistsError:
                binding = self._read_binding(table)
        if binding != mine and (
            binding is None
            or (binding.state_id, binding.generation) != (mine.state_id, mine.generation)
        ):
            theirs = "unknown" if binding is None else binding.state_description
            raise BindingError(
                f"{table}: the folder is bound to another state store or an earlier generation "
                f"of this table ({theirs}); {self.state.description} does not own it. Point "
                "STATE_STORE at the store that wrote it, or rebuild the table: "
                + RESYNC_HINT.format(table=table.command_name)
            )
        # Other writers may publish while the folder is listed. A number is allocated before its
        # file appears, so files are judged "ahead" against the state read *after* the listing,
        # and "missing" against the state read *before* it.
        self._check_files(table, current, self._sequence(table), numbers)
        self._bound.add(table.folder)

    def _check_files(
        self,
        table: TableRef,
        current: SequenceState,
        after: SequenceState,
        numbers: set[int],
    ) -> None:
        ahead = sorted(n for n in numbers if n >= after.next_number)
        if ahead:
            raise BindingError(
                f"{table}: the folder holds file {ahead[0]}, beyond the {after.next_number - 1} "
                f"files {self.state.description} numbered: the state is older than the landing "
                "zone (restored from a backup?). Point STATE_STORE at the current store, or "
                "rebuild the table: " + RESYNC_HINT.format(table=table.command_name)
            )
        done = [n for n in range(current.next_number - 1, 0, -1) if n not in current.pending]
        # Fabric's replicator deletes applied files after their retention, oldest first: a
        # number below the lowest file present (every number, once all have aged out) was
        # consumed. Only a published file missing above a file still present is lost.
        if done and done[0] not in numbers and numbers and done[0] > min(numbers):
            raise BindingError(
                f"{table}: file {done[0]} that {self.state.description} published is missing "
                "from the folder (deleted by hand?); the table can no longer be trusted. "
                "Rebuild it: " + RESYNC_HINT.format(table=table.command_name)
            )

    def _read_binding(self, table: TableRef) -> Binding | None:
        try:
            data = self.store.read(f"{table.folder}/{BINDING_FILE}")
        except PathNotFoundError:
            return None
        return Binding.parse(data, table)

    def _data_numbers(self, table: TableRef) -> set[int]:
        return set(published_files(self.store, table).files)

    def _remove_orphans(self, table: TableRef, referenced: set[str]) -> None:
        cutoff = time.time() - ORPHAN_AGE_SECONDS
        for stored in self.store.list_files(table.folder):
            name = stored.path.rsplit("/", 1)[-1]
            if not name.startswith(STAGING_PREFIX) or stored.path in referenced:
                continue
            created = _staged_time(name)
            if created is not None and created < cutoff:
                self.store.delete(stored.path)

    def describe_source(self, server_version: str) -> None:
        """The source's version for ``_partnerEvents.json`` (written by the next prepare_table)."""
        self.partner = replace(self.partner, source_version=server_version)

    def _write_partner_events(self) -> None:
        """Once per process and content: a process that knows the source's version brings the
        file up to date (a new mirror or server version); one that does not only creates it, so
        it never replaces a file that says more."""
        data = self.partner.to_json()
        if data == self._partner_written:
            return
        if self.partner.source_version is None:
            self._write_once(PARTNER_EVENTS_FILE, data)
            return
        if self.store.size(PARTNER_EVENTS_FILE) is None or (
            self.store.read(PARTNER_EVENTS_FILE) != data
        ):
            self.store.write(PARTNER_EVENTS_FILE, data)
        self._partner_written = data

    def _write_once(self, path: str, data: bytes) -> None:
        try:
            self.store.write_new(path, data)
        except PathExistsError:
            pass


def _with(current: SequenceState, **changes: Any) -> SequenceState:
    return SequenceState(
        changes.get("next_number", current.next_number),
        changes.get("pending", current.pending),
        changes.get("progress", current.progress),
        current.generation,
        changes.get("retired", current.retired),
    )


class _OtherGeneration(Exception):
    """The sequence record is gone or belongs to another generation than the one meant."""


def _of_generation(value: JsonObject | None, table: TableRef, generation: str) -> SequenceState:
    current = None if value is None else SequenceState.from_json(value, table)
    if current is None or current.generation != generation:
        raise _OtherGeneration
    return current


def _live(current: SequenceState, table: TableRef) -> SequenceState:
    if current.retired is not None:
        raise TableRebuilding(
            f"{table} is being rebuilt ({current.retired.get('cause') or 'no cause given'}); "
            "its writers stop"
        )
    return current


def _progress(
    current: SequenceState,
    writer: str,
    progress: JsonObject,
    owner: str,
    lease_seconds: float | None,
) -> JsonObject:
    recorded: JsonObject = {**progress, "owner": owner}
    epoch = current.progress.get(writer, {}).get("epoch")
    if epoch is not None:
        recorded["epoch"] = epoch  # the claim's, whatever the writer passed
    if lease_seconds is not None:
        recorded["lease_expires"] = time.time() + lease_seconds
    return recorded


def _recovery(table: TableRef) -> str:
    return "Rebuild the table: " + RESYNC_HINT.format(table=table.command_name)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _staged_time(name: str) -> int | None:
    stamp = name[len(STAGING_PREFIX) :].split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else None
