"""Which collections of a database are mirrored."""

from __future__ import annotations

import logging
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from pymongo.database import Database

from shared.errors import ConfigError

log = logging.getLogger(__name__)

# The staging collection of a rename from another database: the server names it after the model
# "tmp%%%%%.renameCollection", each "%" one of [0-9A-Za-z], creates it in the target database,
# inserts every document into it (database streams show those inserts: SERVER-107688), then
# renames it onto the target (rename_collection.cpp, renameCollectionAcrossDatabases; the server
# keeps the name fixed because MongoDB's own mirroring tool relies on it). It lives for the copy
# only, so it never becomes a table: the rename onto the target brings its data in.
_RENAME_STAGING = re.compile(r"tmp[0-9A-Za-z]{5}\.renameCollection")


def is_rename_staging(name: str) -> bool:
    """Whether ``name`` is the server's staging collection of a rename across databases."""
    return _RENAME_STAGING.fullmatch(name) is not None


@dataclass(frozen=True)
class SourceCollection:
    database: str
    name: str


def select_collections(
    database: Database, wanted: list[str] | None, mirrored: AbstractSet[str] = frozenset()
) -> list[SourceCollection]:
    """The collections to mirror: every plain collection (``wanted`` None) or exactly ``wanted``.

    ``mirrored`` names collections this mirror has had: one of them missing now was dropped
    while mirrored (its table was rebuilt away), so it is skipped until it exists again rather
    than taken for a typo that stops every other table.

    A database without any collection does not exist in MongoDB: that is an error. Views,
    ``system.*`` collections and (with ``all``) the staging collection of a rename in progress
    (``is_rename_staging``) are never mirrored. Time-series collections cannot feed a
    change stream, so a mirror of them would silently go stale: named ones are an error, and
    ``all`` skips them with a warning.
    """
    kinds: dict[str, str] = {}
    listed = 0
    for info in database.list_collections():
        listed += 1
        name = str(info["name"])
        if not name.startswith("system.") and not (wanted is None and is_rename_staging(name)):
            kinds[name] = str(info.get("type", "collection"))
    if not listed and not mirrored:
        # MongoDB creates a database with its first collection: none at all means a wrong name,
        # which must not pass as a snapshot of nothing.
        raise ConfigError(
            "MONGODB_DATABASE",
            f"no database {database.name!r} on this server (it has no collections)",
        )
    if wanted is None:
        for name, kind in sorted(kinds.items()):
            if kind != "collection":
                log.warning("skipping %s.%s: a %s cannot be mirrored", database.name, name, kind)
        chosen = sorted(name for name, kind in kinds.items() if kind == "collection")
    else:
        for name in wanted:
            if name not in kinds and name in mirrored:
                log.warning(
                    "%s.%s no longer exists; it is mirrored again once it is created",
                    database.name,
                    name,
                )
        missing = [name for name in wanted if name not in kinds and name not in mirrored]
        if missing:
            raise ConfigError(
                "MONGODB_COLLECTIONS",
                f"no collection {', '.join(missing)} in database {database.name}",
            )
        wanted = [name for name in wanted if name in kinds]
        unsupported = [f"{name} ({kinds[name]})" for name in wanted if kinds[name] != "collection"]
        if unsupported:
            raise ConfigError(
                "MONGODB_COLLECTIONS",
                f"cannot mirror {', '.join(unsupported)}: views and time-series collections "
                "have no change stream",
            )
        chosen = list(wanted)
    _warn_of_names_alike_but_for_case(database.name, chosen)
    return [SourceCollection(database.name, name) for name in chosen]


def _warn_of_names_alike_but_for_case(database: str, chosen: list[str]) -> None:
    """Collections whose names differ only by case get folders (and Fabric tables) of their own,
    so the mirror keeps them apart. Fabric's SQL analytics endpoint follows its workspace's
    collation: the default, Latin1_General_100_BIN2_UTF8, tells them apart, a case-insensitive
    one does not (Fabric Data Warehouse, "Collation"), and Spark resolves table names ignoring
    case: said once per planning, so nobody meets it first in a query."""
    by_folded: dict[str, list[str]] = {}
    for name in chosen:
        by_folded.setdefault(name.casefold(), []).append(name)
    for names in by_folded.values():
        if len(names) > 1:
            log.warning(
                "%s: collections %s differ only by case; they are mirrored as separate tables, "
                "which a case-insensitive SQL endpoint collation or Spark cannot tell apart",
                database,
                " and ".join(sorted(names)),
            )
