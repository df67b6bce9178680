"""Where a mirrored table lives in the landing zone, and the names of the files inside it."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors import MirrorError
from shared.landing_zone.stores.base import LandingZoneStore, StoredFile

METADATA_FILE = "_metadata.json"
PARTNER_EVENTS_FILE = "_partnerEvents.json"
# Fabric's replicator moves each file it has applied into one of these two folders of the table
# folder, and deletes it there after seven days ("landing zone format" and "troubleshooting"
# pages of open mirroring; shared/spec/landing-zone-contract.md). A moved file is published all
# the same, and a number below the lowest file present anywhere was consumed and deleted.
PROCESSED_FOLDER = "_ProcessedFiles"
READY_TO_DELETE_FOLDER = "_FilesReadyToDelete"
CONSUMED_FOLDERS = (PROCESSED_FOLDER, READY_TO_DELETE_FOLDER)
SCHEMA_SUFFIX = ".schema"
SEQUENCE_DIGITS = 20
DATA_FILE_PATTERN = re.compile(r"^(\d{20})\.parquet$")
# The replicator takes "/" as a folder separator and ignores names starting with "_".
_UNUSABLE_NAME = re.compile(r"[/\\\x00-\x1f]|^_|^\.{1,2}$")
# What collection_folder escapes: unusable characters, a leading "_", a name of only dots, and a
# "%" that already looks like an escape (so no real name can collide with an escaped one).
_ESCAPED_IN_FOLDER = re.compile(r"[/\\\x00-\x1f]|^_|^\.{1,2}$|%(?=[0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# Part of the folder-name format (changing them renames every long table): a folder name is at
# most FOLDER_NAME_BYTES of UTF-8. Filesystems and the DFS API allow 255 bytes per path segment;
# the lower bound keeps a table's state key, escaped once more for Table Storage (up to six bytes
# per byte), within its 1 KiB limit.
FOLDER_NAME_BYTES = 128
HASH_DIGITS = 24  # hex digits of SHA-256: 96 bits, so two collections never share a folder
# "%7E" (an escaped "~") never occurs in an escaped name: a real "%7E" is escaped to "%257E".
HASH_MARKER = "%7E"
_HASHED = re.compile(rf"{HASH_MARKER}[0-9a-f]{{{HASH_DIGITS}}}$")
_PREFIX_BYTES = FOLDER_NAME_BYTES - len(HASH_MARKER) - HASH_DIGITS
# Where an escaped name may be cut: before any character that is not inside a "%XX" escape.
_ESCAPE_OR_CHARACTER = re.compile(r"%[0-9A-F]{2}|.", re.DOTALL)


@dataclass(frozen=True)
class TableRef:
    """A table folder: ``<schema>.schema/<name>`` (schema = database) or ``<name>``."""

    schema: str | None
    name: str

    def __post_init__(self) -> None:
        for part in (self.schema, self.name):
            if part is not None and (not part or _UNUSABLE_NAME.search(part)):
                raise MirrorError(
                    f"{part!r} cannot name a landing-zone folder "
                    "(empty, starts with '_', or contains '/', '\\' or control characters)"
                )

    @classmethod
    def for_collection(cls, database: str, collection: str) -> TableRef:
        """The table of a MongoDB collection, whose name may not be usable as a folder as is."""
        return cls(database, collection_folder(collection))

    @property
    def folder(self) -> str:
        if self.schema is None:
            return self.name
        return f"{self.schema}{SCHEMA_SUFFIX}/{self.name}"

    @classmethod
    def from_folder(cls, folder: str) -> TableRef:
        parts = folder.strip("/").split("/")
        if len(parts) == 2 and parts[0].endswith(SCHEMA_SUFFIX):
            return cls(parts[0][: -len(SCHEMA_SUFFIX)], parts[1])
        if len(parts) == 1:
            return cls(None, parts[0])
        raise MirrorError(f"{folder!r} is not a table folder (<table> or <schema>.schema/<table>)")

    def __str__(self) -> str:
        """The table as Fabric names it: ``<schema>.<folder name>``."""
        return self.name if self.schema is None else f"{self.schema}.{self.name}"

    @property
    def collection(self) -> str | None:
        """The collection this folder mirrors, decoded from its name; None for a hashed name
        (decoded only against known names: ``collection_name``) or a folder no collection has."""
        return collection_name(self.name)

    @property
    def label(self) -> str:
        """The table as commands show it to people: ``<database>.<collection>``, the name
        ``resync --table`` and ``inspect --table`` take, then the folder when it differs
        (``shop._tmp (folder %5Ftmp)``); the folder alone when no collection can be decoded."""
        return self.label_for(self.collection)

    def label_for(self, collection: str | None) -> str:
        """``label`` with the collection known (a hashed folder name cannot be decoded)."""
        if collection is None or collection == self.name:
            return str(self)
        return f"{_qualified(self.schema, _shown(collection))} (folder {self.name})"

    @property
    def command_name(self) -> str:
        """The table as a command line argument names it (``resync --table``), quoted for a
        POSIX shell: ``<database>.<collection>``. A hashed folder name cannot be decoded, so
        the user is asked for the collection's name instead."""
        collection = self.collection
        if collection is None:
            return _qualified(self.schema, f"<the collection of folder {self.name}>")
        return shlex.quote(_qualified(self.schema, collection))

    def data_file(self, sequence: int) -> str:
        return f"{self.folder}/{sequence:0{SEQUENCE_DIGITS}d}.parquet"

    @property
    def metadata_file(self) -> str:
        return f"{self.folder}/{METADATA_FILE}"


def table_for_name(text: str) -> TableRef:
    """The table a user names, as every command takes it: ``<database>.<collection>`` with the
    collection's own name, mapped forward with ``collection_folder``. Never a folder name:
    ``shop.%5Ftmp`` is the collection named ``%5Ftmp`` (folder ``%255Ftmp``), and the collection
    ``_tmp`` is ``shop._tmp``. Database names hold no dots, so the first dot ends the database
    (collection names may hold dots: ``shop.fs.chunks``)."""
    schema, dot, collection = text.partition(".")
    if not dot or not schema or not collection:
        raise MirrorError(f"{text!r} must be <database>.<collection>")
    return TableRef.for_collection(schema, collection)


def _qualified(schema: str | None, name: str) -> str:
    return name if schema is None else f"{schema}.{name}"


def _shown(collection: str) -> str:
    # A name with control characters is shown as Python writes it, so it stays on one line.
    return collection if collection.isprintable() else repr(collection)


def collection_folder(collection: str) -> str:
    """The folder name of a collection: the name itself unless it cannot name a folder.

    MongoDB allows "/", "\\" and control characters in collection names. Each such character,
    a leading "_", each dot of a name that is "." or "..", and any "%" followed by two hex
    digits is written as "%" and its two hex digits: "a/b" -> "a%2Fb", "_tmp" -> "%5Ftmp",
    "50%25off" -> "50%2525off". Deterministic, reversible (``collection_name``) and
    collision-free; every other name is its own folder name.

    An escaped name longer than FOLDER_NAME_BYTES keeps its longest prefix that fits (cut
    between escapes and characters), then HASH_MARKER and the first HASH_DIGITS hex digits of the
    SHA-256 of the collection's UTF-8 name: ``"\\x01" * 90`` -> ``"%01" * 33 + "%7E" + hash``.
    No escaped name contains HASH_MARKER, so a hashed name never equals an escaped one, and two
    hashed names differ with their hashes. Such a name cannot be decoded alone:
    ``collection_name`` maps known collections forward to find it.
    """

    def escape(match: re.Match[str]) -> str:
        return "".join(f"%{ord(char):02X}" for char in match[0])

    folder = _ESCAPED_IN_FOLDER.sub(escape, collection)
    if _utf8_bytes(folder) <= FOLDER_NAME_BYTES:
        return folder
    prefix, size = [], 0
    for piece in _ESCAPE_OR_CHARACTER.findall(folder):
        size += _utf8_bytes(piece)
        if size > _PREFIX_BYTES:
            break
        prefix.append(piece)
    digest = hashlib.sha256(collection.encode("utf-8", "surrogatepass")).hexdigest()
    return "".join(prefix) + HASH_MARKER + digest[:HASH_DIGITS]


def collection_name(folder_name: str, known: Iterable[str] = ()) -> str | None:
    """The collection whose folder is ``folder_name`` (the inverse of ``collection_folder``):
    decoded from the name, or for a hashed name the one of ``known`` that maps to it; None when
    no collection's folder has this name (or, hashed, none of ``known``)."""
    if _HASHED.search(folder_name):
        return next((name for name in known if collection_folder(name) == folder_name), None)
    collection = _ESCAPE.sub(lambda match: chr(int(match[1], 16)), folder_name)
    # A name the mirror would not write (say "%41", or too long) is no collection's folder.
    return collection if collection_folder(collection) == folder_name else None


def is_collection_folder(name: str) -> bool:
    """Whether ``collection_folder`` makes ``name`` of some collection."""
    return bool(_HASHED.search(name)) or collection_name(name) is not None


def _utf8_bytes(text: str) -> int:
    # surrogatepass: a name from the command line may hold undecodable bytes as surrogates.
    return len(text.encode("utf-8", "surrogatepass"))


def sequence_of(file_name: str) -> int | None:
    """The sequence number of a published data file name, or None for any other name."""
    match = DATA_FILE_PATTERN.match(file_name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class PublishedFiles:
    """The numbered files of a table folder wherever the replicator left them: in the folder,
    in ``_ProcessedFiles/`` or in ``_FilesReadyToDelete/`` (the first copy found wins).

    ``processed_folders`` says whether either processed folder exists: the replicator has been
    at work on the table, so files below the lowest present may have been deleted after their
    retention. (On Blob storage an emptied folder vanishes with its last file; there, a table
    whose every file was deleted looks like a table that never had one.)
    """

    files: dict[int, StoredFile]
    unexpected: list[str]
    processed_folders: bool

    @property
    def lowest(self) -> int | None:
        return min(self.files) if self.files else None

    @property
    def history_removed(self) -> bool:
        """The replicator applied and deleted the files below the lowest present (or every
        file): the folder no longer holds the whole history. Without a processed folder nothing
        was ever applied here, and a first file above 1 is a gap (Fabric waits for file 1)."""
        lowest = self.lowest
        return self.processed_folders and (lowest is None or lowest > 1)

    def consumed(self, number: int) -> bool:
        """``number`` is below every file present: applied, then deleted after its retention.
        With no file present at all, every number is (an idle table's files all age out)."""
        lowest = self.lowest
        return lowest is None or number < lowest


def published_files(store: LandingZoneStore, table: TableRef) -> PublishedFiles:
    """Every numbered file of ``table`` in the folder and in both processed folders."""
    subfolders = {
        folder.rstrip("/").rsplit("/", 1)[-1] for folder in store.list_folders(table.folder)
    }
    present = [name for name in CONSUMED_FOLDERS if name in subfolders]
    candidates = store.list_files(table.folder)
    for name in present:
        candidates += store.list_files(f"{table.folder}/{name}")
    files: dict[int, StoredFile] = {}
    unexpected: list[str] = []
    for stored in candidates:
        name = stored.path.rsplit("/", 1)[-1]
        number = sequence_of(name)
        if number is not None:
            files.setdefault(number, stored)
        elif not name.startswith("_"):
            unexpected.append(name)
    return PublishedFiles(dict(sorted(files.items())), unexpected, bool(present))


def published_path(store: LandingZoneStore, table: TableRef, number: int) -> str | None:
    """Where file ``number`` of ``table`` is now (the folder or a processed folder), or None."""
    name = table.data_file(number).rsplit("/", 1)[-1]
    for folder in (table.folder, *(f"{table.folder}/{sub}" for sub in CONSUMED_FOLDERS)):
        if store.size(f"{folder}/{name}") is not None:
            return f"{folder}/{name}"
    return None
