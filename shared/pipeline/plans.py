"""The durable plan of each mirrored table: phase, change-stream start point, `_id` ranges.

One state record per table (kind ``table``, key = the table folder) so that every change to the
plan — including the fan-in that flips a table to streaming — is one compare-and-swap.

A plan names the generation of the table's sequence (shared/landing_zone/publisher.py) it was
made for. Completing a partition is fenced by it: a worker of an earlier generation (frozen
through a rebuild and a new plan) can never complete the new plan's partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from shared.errors import MirrorError
from shared.landing_zone.tables import TableRef
from shared.source.id_ranges import IdRange
from shared.state.base import JsonObject, StateStore, update

TABLE_KIND = "table"
CHANGES_WRITER = "changes"  # the change reader's writer name in every table's sequence
PARTITION_KIND = "partition"  # per partition: its progress for people (status, the CLI's bar)
REBUILD_KIND = "rebuild"  # per table folder: how often and why it was rebuilt (outlives the plan)


class Phase(StrEnum):
    PLANNING = "planning"  # start point recorded, ranges not yet
    SNAPSHOTTING = "snapshotting"  # partitions running
    STREAMING = "streaming"  # snapshot published; change windows from the start point


@dataclass(frozen=True)
class TablePlan:
    table: TableRef
    database: str
    collection: str
    phase: Phase
    start_token: str  # canonical Extended JSON resume token, taken before any data was read
    ranges: tuple[IdRange, ...] = ()
    completed: frozenset[int] = field(default_factory=frozenset)
    estimated_documents: int = 0
    generation: str = ""  # the sequence generation it was made for ("" in plans made before)

    @property
    def pending_partitions(self) -> list[int]:
        if self.phase != Phase.SNAPSHOTTING:
            return []
        return [index for index in range(len(self.ranges)) if index not in self.completed]

    def to_json(self) -> JsonObject:
        return {
            "database": self.database,
            "collection": self.collection,
            "phase": self.phase.value,
            "start_token": self.start_token,
            "ranges": [id_range.to_json() for id_range in self.ranges],
            "completed": sorted(self.completed),
            "estimated_documents": self.estimated_documents,
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, folder: str, value: JsonObject) -> TablePlan:
        try:
            plan = cls(
                table=TableRef.from_folder(folder),
                database=_text(value["database"]),
                collection=_text(value["collection"]),
                phase=Phase(value["phase"]),
                start_token=_text(value["start_token"]),
                ranges=tuple(IdRange.from_json(item) for item in value["ranges"]),
                completed=frozenset(int(index) for index in value["completed"]),
                estimated_documents=int(value["estimated_documents"]),
                generation=_text(value.get("generation", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise MirrorError(f"the plan of table {folder} is malformed: {error!r}") from None
        if any(not 0 <= index < len(plan.ranges) for index in plan.completed):
            raise MirrorError(f"the plan of table {folder} completes unknown partitions")
        return plan


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def load_plan(state: StateStore, table: TableRef) -> TablePlan | None:
    record = state.get(TABLE_KIND, table.folder)
    return None if record is None else TablePlan.from_json(table.folder, record.value)


def all_plans(state: StateStore) -> list[TablePlan]:
    return [TablePlan.from_json(key, record.value) for key, record in state.list(TABLE_KIND)]


def complete_partition(state: StateStore, table: TableRef, index: int, generation: str) -> bool:
    """Record partition ``index`` of the plan made for ``generation`` as published; True for the
    one call that finishes the table.

    The compare-and-swap makes the fan-in exact: of any number of concurrent completers (or
    redelivered messages), only the write that adds the last partition flips the phase. A plan
    of another generation is left alone (the caller's work belongs to a table rebuilt since).
    """
    flipped: list[bool] = []

    def finish(value: JsonObject | None) -> JsonObject:
        if value is None:
            raise MirrorError(f"table {table} has no plan")
        plan = TablePlan.from_json(table.folder, value)
        flipped[:] = [False]
        if plan.generation != generation:
            raise StalePlan(f"{table} was rebuilt: partition {index} belongs to an older plan")
        if plan.phase != Phase.SNAPSHOTTING or index in plan.completed:
            return value
        completed = plan.completed | {index}
        done = len(completed) == len(plan.ranges)
        flipped[:] = [done]
        phase = Phase.STREAMING if done else Phase.SNAPSHOTTING
        return replace(plan, completed=frozenset(completed), phase=phase).to_json()

    update(state, TABLE_KIND, table.folder, finish)
    return flipped[0]


class StalePlan(MirrorError):
    """The plan was replaced by a newer one (the table was rebuilt) since the caller read it."""
