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


def sequence_of(file_name: str) -> int | None:
    """The sequence number of a published data file name, or None for any other name."""
    match = DATA_FILE_PATTERN.match(file_name)
    return int(match.group(1)) if match else None
