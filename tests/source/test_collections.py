"""Which collections are mirrored: plain ones; views, system.* and time-series never silently."""

from __future__ import annotations

import logging

import pytest
from pymongo import MongoClient

from shared.errors import ConfigError
from shared.source.collections import SourceCollection, select_collections


@pytest.fixture
def database(mongo_client: MongoClient, mongo_db_name: str):
    db = mongo_client[mongo_db_name]
    db.orders.insert_one({"_id": 1})
    db.users.insert_one({"_id": 1})
    db.create_collection("paid_orders", viewOn="orders", pipeline=[{"$match": {"paid": True}}])
    db.create_collection("readings", timeseries={"timeField": "at"})
    return db


def test_all_selects_plain_collections_and_warns_about_the_rest(database, caplog):
    with caplog.at_level(logging.WARNING):
        chosen = select_collections(database, None)
    assert chosen == [
        SourceCollection(database.name, "orders"),
        SourceCollection(database.name, "users"),
    ]
    assert "readings: a timeseries cannot be mirrored" in caplog.text
    assert "paid_orders: a view cannot be mirrored" in caplog.text


def test_all_skips_the_staging_collection_of_a_rename_in_progress(database):
    """A copy from another database caught half done ("tmp%%%%%.renameCollection", the
    server's model): its data arrives by the rename that ends the copy. Named, it is taken."""
    for name in ("tmpAbC12.renameCollection", "tmp1234.renameCollection", "tmpAbC12.rename"):
        database[name].insert_one({"_id": 1})
    chosen = [source.name for source in select_collections(database, None)]
    assert chosen == ["orders", "tmp1234.renameCollection", "tmpAbC12.rename", "users"]
    named = select_collections(database, ["tmpAbC12.renameCollection"])
    assert named == [SourceCollection(database.name, "tmpAbC12.renameCollection")]


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        (["orders", "nope"], "no collection nope"),
        (["readings"], "cannot mirror readings (timeseries)"),
        (["paid_orders"], "cannot mirror paid_orders (view)"),
    ],
)
def test_named_collections_that_cannot_be_mirrored_are_errors(database, wanted, message):
    with pytest.raises(ConfigError) as caught:
        select_collections(database, wanted)
    assert caught.value.setting == "MONGODB_COLLECTIONS"
    assert message in str(caught.value)


def test_named_collections_keep_their_order(database):
    chosen = select_collections(database, ["users", "orders"])
    assert [c.name for c in chosen] == ["users", "orders"]


def test_a_database_without_any_collection_is_an_error_naming_the_setting(
    mongo_client: MongoClient, mongo_db_name: str
):
    # MongoDB lists a database only once it has a collection: a typo looks like an empty database.
    with pytest.raises(ConfigError) as caught:
        select_collections(mongo_client[mongo_db_name], None)
    assert caught.value.setting == "MONGODB_DATABASE"
    assert f"no database '{mongo_db_name}'" in str(caught.value)


def test_a_named_collection_dropped_while_mirrored_is_skipped_not_fatal(database):
    with pytest.raises(ConfigError, match="no collection gone"):
        select_collections(database, ["orders", "gone"])
    chosen = select_collections(database, ["orders", "gone"], mirrored={"gone"})
    assert chosen == [SourceCollection(database.name, "orders")]


def test_a_dropped_database_that_was_mirrored_selects_nothing(mongo_client: MongoClient):
    empty = mongo_client["never_created_here"]
    with pytest.raises(ConfigError, match="no database"):
        select_collections(empty, None)
    assert select_collections(empty, None, mirrored={"orders"}) == []


def test_names_alike_but_for_case_stay_separate_tables_with_a_warning(
    mongo_client: MongoClient, mongo_db_name: str, caplog
):
    db = mongo_client[mongo_db_name]
    db.Orders.insert_one({"_id": 1})
    db.orders.insert_one({"_id": 1})
    with caplog.at_level(logging.WARNING):
        chosen = select_collections(db, None)
    assert [source.name for source in chosen] == ["Orders", "orders"]
    assert "collections Orders and orders differ only by case" in caplog.text
