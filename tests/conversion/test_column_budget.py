"""COLUMN_BUDGET (issue #16 item 18): a table's files never have more columns than its budget;
fields beyond it go to one string column, ``__overflow__``, as a relaxed Extended JSON object
per row, and which fields overflow is settled by the saved schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Regex
from bson.datetime_ms import DatetimeMS

from shared.conversion import (
    OVERFLOW_COLUMN,
    ROW_MARKER,
    BatchConverter,
    RowMarker,
    TableSchema,
    recover_document,
)
from shared.landing_zone.tables import TableRef
from shared.pipeline.schema_registry import SCHEMA_KIND, SchemaRegistry
from shared.state.sqlite import SqliteStateStore

from .helpers import DECODE, doc_norm

BUDGET = 8  # _id, five value columns, __overflow__, __rowMarker__


def wide(_id: Any, fields: int, **extra: Any) -> dict[str, Any]:
    return {"_id": _id, **{f"f{i}": i for i in range(fields)}, **extra}


@pytest.mark.parametrize("_id", ["text-id", 7], ids=["fast path", "per-document path"])
def test_fields_beyond_the_budget_go_to_one_json_column_losslessly(_id: Any) -> None:
    later = f"{_id}-2" if isinstance(_id, str) else _id + 1
    # A null is alike a missing field: not in the object.
    documents = [wide(_id, 3), wide(later, 12, d={"x": [1]}, skip=None)]
    conv = BatchConverter(TableSchema(BUDGET))
    table = conv.convert([bson.encode(d) for d in documents])

    assert table.num_columns == BUDGET
    assert table.column_names == ["_id", "f0", "f1", "f2", "f3", "f4", OVERFLOW_COLUMN, ROW_MARKER]
    first, second = table.column(OVERFLOW_COLUMN).to_pylist()
    assert first is None  # its fields all have columns
    assert second is not None
    assert list(json.loads(second)) == [f"f{i}" for i in range(5, 12)] + ["d"]
    for document, back in zip(documents, recover_document(table, conv.schema), strict=True):
        assert doc_norm(back) == doc_norm(bson.decode(bson.encode(document), DECODE))


def test_past_the_budget_a_value_without_a_twin_overflows_and_no_column_is_ever_added() -> None:
    conv = BatchConverter(TableSchema(BUDGET))
    conv.convert([bson.encode(wide(1, 5))])  # five value columns: the budget's worth
    documents = [
        {"_id": 2, "f0": "text", "f1": DatetimeMS(253_402_300_800_000), "new": Regex("a")},
        {"_id": 3, "f0": 5},
    ]
    table = conv.convert([bson.encode(d) for d in documents])
    assert table.column_names[-2:] == [OVERFLOW_COLUMN, ROW_MARKER]
    assert table.num_columns == BUDGET
    assert "f0__json" not in table.column_names  # no room for a twin
    overflow = table.column(OVERFLOW_COLUMN).to_pylist()
    assert list(json.loads(overflow[0])) == ["f0", "f1", "new"] and overflow[1] is None
    for document, back in zip(documents, recover_document(table, conv.schema), strict=True):
        assert doc_norm(back) == doc_norm(bson.decode(bson.encode(document), DECODE))

    # A larger budget later (another process, a changed setting) adds no column to the table.
    reloaded = TableSchema.from_json(conv.schema.to_json(), column_budget=10_000)
    assert reloaded.overflow
    later = BatchConverter(reloaded).convert([bson.encode({"_id": 4, "other": 1})])
    assert later.column_names == table.column_names
    assert json.loads(later.column(OVERFLOW_COLUMN)[0].as_py()) == {"other": 1}


def test_workers_and_processes_agree_on_which_fields_overflow(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "state.db")
    table = TableRef("shop", "wide")
    first = SchemaRegistry(state, table, "generation-1", BUDGET)
    second = SchemaRegistry(state, table, "generation-1", BUDGET)  # loaded before either saved

    won = first.convert([bson.encode(wide("a", 4, a=1, b=2))], [RowMarker.UPSERT])
    lost = second.convert([bson.encode(wide("b", 1, z=1, y=2, x=3))], [RowMarker.UPSERT])
    # The loser re-converted against the saved schema: the winner's columns, the rest overflow.
    assert lost.column_names == won.column_names
    assert json.loads(lost.column(OVERFLOW_COLUMN)[0].as_py()) == {"z": 1, "y": 2, "x": 3}
    record = state.get(SCHEMA_KIND, table.folder)
    assert record is not None and json.loads(record.value["schema"])["overflow"] is True
    # A restarted process with no budget at all still sends new fields to the overflow column.
    restarted = SchemaRegistry(state, table, "generation-1")
    batch = restarted.convert([bson.encode({"_id": "c", "w": 1})], [RowMarker.UPSERT])
    assert batch.column_names == won.column_names
    state.close()


def test_a_field_named_like_the_overflow_column_gets_a_column_of_its_own() -> None:
    table = BatchConverter().convert([bson.encode({"_id": 1, OVERFLOW_COLUMN: 5})])
    assert table.column_names == ["_id", OVERFLOW_COLUMN + "_", ROW_MARKER]
