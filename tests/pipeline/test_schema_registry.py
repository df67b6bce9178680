"""Workers converting concurrently agree on every column's type through the state store."""

from __future__ import annotations

from pathlib import Path

import bson
import pyarrow as pa

from shared.conversion import ROW_MARKER, RowMarker, TableSchema
from shared.landing_zone.tables import TableRef
from shared.pipeline.schema_registry import SCHEMA_KIND, SchemaRegistry
from shared.state.sqlite import SqliteStateStore

TABLE = TableRef("shop", "orders")


def test_the_first_saved_type_wins_and_the_loser_reconverts_into_the_twin(tmp_path: Path):
    state = SqliteStateStore(tmp_path / "state.db")
    first = SchemaRegistry(state, TABLE, "generation-1")
    second = SchemaRegistry(state, TABLE, "generation-1")  # loaded before either saved: it is stale

    won = first.convert([bson.encode({"_id": 1, "x": 5})], [RowMarker.UPSERT])
    lost = second.convert([bson.encode({"_id": 2, "x": "five"})], [RowMarker.UPSERT])

    assert won.schema.field("x").type == pa.int64()
    assert lost.schema.field("x").type == pa.int64()
    assert lost.column("x").to_pylist() == [None]
    assert lost.column("x__json").to_pylist() == ['"five"']
    record = state.get(SCHEMA_KIND, TABLE.folder)
    assert record is not None
    stored = TableSchema.from_json(record.value["schema"]).arrow_schema()
    assert stored.field("x").type == pa.int64() and "x__json" in stored.names
    state.close()


def test_a_restarted_worker_reloads_the_saved_schema(tmp_path: Path):
    state = SqliteStateStore(tmp_path / "state.db")
    SchemaRegistry(state, TABLE, "generation-1").convert(
        [bson.encode({"_id": 1, "when": 1.5})], [RowMarker.UPSERT]
    )
    restarted = SchemaRegistry(state, TABLE, "generation-1")
    batch = restarted.convert([bson.encode({"_id": 2, "other": True})], [RowMarker.UPSERT])
    assert batch.column_names == ["_id", "when", "other", ROW_MARKER]
    assert batch.schema.field("when").type == pa.float64()
    state.close()
