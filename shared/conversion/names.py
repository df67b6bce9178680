"""Column names for document fields: deterministic, collision-free, case-insensitive.

Delta/Spark resolve column names case-insensitively and treat ``.`` as a path separator,
so a name is derived from the field and then made unique against every name already taken
(compared with ``casefold``). The mapping is stored in the table schema, so a field keeps its
column name in every later file even if a later batch would have resolved differently.
"""

from __future__ import annotations

import re

from shared.landing_zone.parquet_files import KEY_COLUMN, ROW_MARKER

TWIN_SUFFIX = "__json"
EMPTY_NAME = "_empty_"
# The one string column of a table past its column budget (COLUMN_BUDGET): per row, the relaxed
# Extended JSON object of the fields that have no column of their own (see schema.py).
OVERFLOW_COLUMN = "__overflow__"

_UNSAFE = re.compile(r"[.$\x00-\x1f\x7f]")
_RESERVED = {KEY_COLUMN.casefold(), ROW_MARKER.casefold(), OVERFLOW_COLUMN.casefold()}


def twin_name(column: str) -> str:
    """The string column that holds values which do not fit ``column``'s type."""
    return column + TWIN_SUFFIX


def _base(field: str) -> str:
    base = _UNSAFE.sub("_", field) if field else EMPTY_NAME
    folded = base.casefold()
    if folded in _RESERVED or folded.endswith(TWIN_SUFFIX):
        # Only our own columns may end in the twin suffix or equal the reserved names.
        base += "_"
    return base


def column_name(field: str, taken: set[str]) -> str:
    """A new column name for ``field``; ``taken`` holds casefolded names already in use."""
    base = _base(field)
    candidate = base
    n = 2
    while candidate.casefold() in taken:
        candidate = f"{base}_{n}"
        n += 1
    return candidate
