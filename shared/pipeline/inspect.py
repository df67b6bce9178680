"""The ``inspect`` step: check every table of a landing zone against the contract and replay it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.errors import UnknownTableError
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.tables import TableRef, collection_folder, is_collection_folder

if TYPE_CHECKING:
    from shared.landing_zone.replayer import TableReport


def inspect_landing_zone(store: LandingZoneStore, table: str | None = None) -> list[TableReport]:
    """Reports for every table, or for the one named ``<table>`` or ``<schema>.<table>``.

    A table is named by its collection, as every command names it (``a/b``, ``_tmp``).
    """
    # Imported here: the replayer loads DuckDB, which no other trigger of the Functions app needs.
    from shared.landing_zone.replayer import find_tables, inspect_table

    tables = find_tables(store)
    if table is not None:
        tables = [ref for ref in tables if _named(ref, table)]
        if not tables:
            raise UnknownTableError(f"no table {table!r} in {store.description}")
    return [inspect_table(store, ref) for ref in tables]


# One HTTP request's share of a whole-landing-zone inspection. An HTTP trigger must answer within
# 230 seconds (Azure Load Balancer's idle timeout, whatever functionTimeout says: Microsoft's
# "Azure Functions hosting options", function app timeout duration), and a replay reads every
# file of a table: a page stops after PAGE_TABLES tables, or sooner once PAGE_FILES files were
# replayed, and names the table to go on after. One table is never split: its replay is one check.
PAGE_TABLES = 20
MAX_PAGE_TABLES = 100
PAGE_FILES = 2_000


@dataclass(frozen=True)
class InspectPage:
    reports: list[TableReport]
    tables: int  # in the whole landing zone
    after: str | None  # the last table folder inspected, when tables after it are left


def inspect_page(
    store: LandingZoneStore,
    after: str | None = None,
    limit: int = PAGE_TABLES,
    max_files: int = PAGE_FILES,
) -> InspectPage:
    """Reports for the tables whose folder sorts after ``after``: at most ``limit`` of them, and
    no more once ``max_files`` files were replayed (at least one table either way)."""
    from shared.landing_zone.replayer import find_tables, inspect_table

    tables = find_tables(store)  # sorted by folder: the order pages follow
    remaining = [ref for ref in tables if after is None or ref.folder > after]
    reports: list[TableReport] = []
    files = 0
    for ref in remaining[:limit]:
        if reports and files >= max_files:
            break
        report = inspect_table(store, ref)
        reports.append(report)
        files += report.files
    more = len(reports) < len(remaining)
    return InspectPage(reports, len(tables), reports[-1].table.folder if more else None)


def _named(ref: TableRef, name: str) -> bool:
    """``name`` is the table's collection, alone or after ``<schema>.``: mapped forward with
    ``collection_folder`` (a hashed folder name cannot be decoded), never read as a folder name,
    so ``%5Ftmp`` is the collection named so, not ``_tmp``. A folder that no collection maps to
    (another writer's) is named by its folder name: no collection's name can mean it."""
    names = {name}
    if ref.schema is not None and name.startswith(f"{ref.schema}."):
        names.add(name[len(ref.schema) + 1 :])
    if any(collection_folder(text) == ref.name for text in names):
        return True
    return ref.name in names and not is_collection_folder(ref.name)


def format_report(report: TableReport) -> str:
    verdict = "conforms" if report.conforms else "DOES NOT CONFORM"
    lines = [
        f"{report.table.label}: {verdict}; {report.files} files, {report.row_count} rows replayed"
    ]
    if report.history_removed:
        lines.append(f"  - {history_note(report)}")
    lines += [f"  - {problem.message}" for problem in report.problems]
    return "\n".join(lines)


def report_to_json(report: TableReport) -> dict[str, object]:
    return {
        "table": str(report.table),
        "collection": report.table.collection,
        "conforms": report.conforms,
        "files": report.files,
        "rows": report.row_count,
        "firstFile": report.first_file,
        "historyRemoved": report.history_removed,
        "problems": [{"code": p.code, "message": p.message} for p in report.problems],
    }


def history_note(report: TableReport) -> str:
    """What a replay of a table whose early files the replicator removed does and does not say."""
    if report.first_file is None:
        removed = "every file was applied by the replicator and removed after its retention"
    else:
        removed = (
            f"files 1 to {report.first_file - 1} were applied by the replicator and removed after "
            f"their retention; numbering and schema checked from file {report.first_file} on"
        )
    return f"{removed}: the rows replayed are not the whole table (see its Delta table)"
