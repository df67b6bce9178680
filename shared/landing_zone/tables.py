"""Where a mirrored table lives in the landing zone, and the names of the files inside it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import MirrorError

METADATA_FILE = "_metadata.json"
PARTNER_EVENTS_FILE = "_partnerEvents.json"
PROCESSED_FOLDER = "_ProcessedFiles"
SCHEMA_SUFFIX = ".schema"
SEQUENCE_DIGITS = 20
DATA_FILE_PATTERN = re.compile(r"^(\d{20})\.parquet$")
# The replicator takes "/" as a folder separator and ignores names starting with "_".
_UNUSABLE_NAME = re.compile(r"[/\\\x00-\x1f]|^_|^\.{1,2}$")
# What collection_folder escapes: unusable characters, a leading "_", a name of only dots, and a
# "%" that already looks like an escape (so no real name can collide with an escaped one).
_ESCAPED_IN_FOLDER = re.compile(r"[/\\\x00-\x1f]|^_|^\.{1,2}$|%(?=[0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


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
        return self.name if self.schema is None else f"{self.schema}.{self.name}"

    def data_file(self, sequence: int) -> str:
        return f"{self.folder}/{sequence:0{SEQUENCE_DIGITS}d}.parquet"

    @property
    def metadata_file(self) -> str:
        return f"{self.folder}/{METADATA_FILE}"


def collection_folder(collection: str) -> str:
    """The folder name of a collection: the name itself unless it cannot name a folder.

    MongoDB allows "/", "\\" and control characters in collection names. Each such character,
    a leading "_", each dot of a name that is "." or "..", and any "%" followed by two hex
    digits is written as "%" and its two hex digits: "a/b" -> "a%2Fb", "_tmp" -> "%5Ftmp",
    "50%25off" -> "50%2525off". Deterministic, reversible (``collection_name``) and
    collision-free; every other name is its own folder name.
    """

    def escape(match: re.Match[str]) -> str:
        return "".join(f"%{ord(char):02X}" for char in match[0])

    return _ESCAPED_IN_FOLDER.sub(escape, collection)


def collection_name(folder_name: str) -> str:
    """The collection a folder name was made from (the inverse of ``collection_folder``)."""
    return _ESCAPE.sub(lambda match: chr(int(match[1], 16)), folder_name)


def sequence_of(file_name: str) -> int | None:
    """The sequence number of a published data file name, or None for any other name."""
    match = DATA_FILE_PATTERN.match(file_name)
    return int(match.group(1)) if match else None
