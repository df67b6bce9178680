"""The state-store contract: every backend (fixture ``backend``) must pass this module unchanged."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.errors import MirrorError
from shared.state import (
    MAX_VALUE_BYTES,
    ConflictError,
    CorruptStateError,
    JsonObject,
    Record,
    StateStore,
    update,
)
from tests.state.conftest import Backend

AWKWARD_KEYS = [
    "a/b#c?d\\e%",
    "%2F stays %2F",
    "sales.schema/orders",
    "orders#p0003",
    "日本語/キー",
    "emoji 😀 key",
    "tab\tnew\nline\x7f",
    'it\'s "quoted" & +=',
    " leading and trailing ",
    "k" * 500,
]


def test_get_absent_is_none(store: StateStore) -> None:
    assert store.get("plan", "nothing-here") is None


def test_create_then_get(store: StateStore) -> None:
    value = {"phase": "snapshot", "ranges": [1, 2.5, None, True], "nested": {"ü": "ok"}}
    created = store.create("plan", "sales/orders", value)
    assert created.value == value
    assert store.get("plan", "sales/orders") == created


def test_create_twice_conflicts_and_keeps_the_first(store: StateStore) -> None:
    first = store.create("plan", "k", {"n": 1})
    with pytest.raises(ConflictError):
        store.create("plan", "k", {"n": 2})
    assert store.get("plan", "k") == first


def test_replace_with_current_etag(store: StateStore) -> None:
    first = store.create("plan", "k", {"n": 1})
    second = store.replace("plan", "k", {"n": 2}, first.etag)
    assert second.value == {"n": 2}
    assert second.etag != first.etag
    assert store.get("plan", "k") == second


def test_replace_with_stale_etag_conflicts_and_keeps_the_value(store: StateStore) -> None:
    first = store.create("plan", "k", {"n": 1})
    second = store.replace("plan", "k", {"n": 2}, first.etag)
    with pytest.raises(ConflictError):
        store.replace("plan", "k", {"n": 3}, first.etag)
    assert store.get("plan", "k") == second


def test_replace_of_a_missing_record_conflicts(store: StateStore) -> None:
    gone = store.create("plan", "k", {"n": 1})
    store.delete("plan", "k")
    with pytest.raises(ConflictError):
        store.replace("plan", "k", {"n": 2}, gone.etag)
    assert store.get("plan", "k") is None


def test_recreated_record_does_not_match_its_predecessors_etag(store: StateStore) -> None:
    old = store.create("plan", "k", {"n": 1})
    store.delete("plan", "k", old.etag)
    store.create("plan", "k", {"n": 1})
    with pytest.raises(ConflictError):
        store.replace("plan", "k", {"n": 2}, old.etag)


def test_delete_with_stale_etag_conflicts_and_keeps_the_record(store: StateStore) -> None:
    first = store.create("plan", "k", {"n": 1})
    second = store.replace("plan", "k", {"n": 2}, first.etag)
    with pytest.raises(ConflictError):
        store.delete("plan", "k", first.etag)
    assert store.get("plan", "k") == second


@pytest.mark.parametrize("with_etag", [True, False])
def test_delete_removes_the_record(store: StateStore, with_etag: bool) -> None:
    record = store.create("plan", "k", {"n": 1})
    store.delete("plan", "k", record.etag if with_etag else None)
    assert store.get("plan", "k") is None


def test_delete_of_an_absent_record_is_silent(store: StateStore) -> None:
    gone = store.create("plan", "k", {"n": 1})
    store.delete("plan", "k")
    store.delete("plan", "k")
    store.delete("plan", "k", gone.etag)
    store.delete("plan", "never-existed")


def test_list_is_sorted_by_key_and_isolated_per_kind(store: StateStore) -> None:
    for key in ["b", "a", "c/2", "c#1"]:
        store.create("progress", key, {"key": key})
    store.create("checkpoint", "a", {"other": True})
    listed = store.list("progress")
    assert [key for key, _ in listed] == sorted(["b", "a", "c/2", "c#1"])
    assert all(record.value == {"key": key} for key, record in listed)
    assert [key for key, _ in store.list("checkpoint")] == ["a"]
    assert store.list("empty_kind") == []


def test_awkward_keys_round_trip(store: StateStore) -> None:
    for key in AWKWARD_KEYS:
        store.create("schema", key, {"key": key})
    listed = store.list("schema")
    assert [key for key, _ in listed] == sorted(AWKWARD_KEYS)
    assert all(record.value == {"key": key} for key, record in listed)
    for key in AWKWARD_KEYS:
        record = store.get("schema", key)
        assert record is not None and record.value == {"key": key}


@pytest.mark.parametrize("key", ["", "/" * 400, "\ud800 lone surrogate"])
def test_unstorable_keys_are_rejected(store: StateStore, key: str) -> None:
    with pytest.raises(MirrorError, match="state key"):
        store.create("schema", key, {})


@pytest.mark.parametrize("kind", ["", "Plan", "plan-x", "1plan", "a" * 64])
def test_invalid_kinds_are_rejected(store: StateStore, kind: str) -> None:
    with pytest.raises(MirrorError, match="state kind"):
        store.get(kind, "k")


def _value_of_size(size: int) -> JsonObject:
    # Multi-byte characters make chunk boundaries fall inside characters.
    text = ("é€x" * size)[: size // 2]
    return {"text": text, "floats": [0.1, -0.0, 1e300, 5e-324]}


@pytest.mark.parametrize("size", [300_000, MAX_VALUE_BYTES - 1_000])
def test_large_values_round_trip(store: StateStore, size: int) -> None:
    value = _value_of_size(size)
    created = store.create("schema", "big", value)
    assert store.get("schema", "big") == created
    assert created.value == value
    replaced = store.replace("schema", "big", {"small": 1}, created.etag)
    assert store.get("schema", "big") == replaced


def test_oversized_value_is_rejected_with_the_limit(store: StateStore) -> None:
    with pytest.raises(MirrorError, match=str(MAX_VALUE_BYTES)):
        store.create("schema", "huge", {"text": "x" * MAX_VALUE_BYTES})
    assert store.get("schema", "huge") is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected(store: StateStore, bad: float) -> None:
    with pytest.raises(MirrorError, match="not valid JSON"):
        store.create("progress", "k", {"rows": [1.0, bad]})
    assert store.get("progress", "k") is None
    record = store.create("progress", "k", {"rows": [1.0]})
    with pytest.raises(MirrorError, match="not valid JSON"):
        store.replace("progress", "k", {"rows": bad}, record.etag)
    assert store.get("progress", "k") == record


@pytest.mark.parametrize("value", [{"raw": b"bytes"}, {"when": object()}, ["not", "a", "dict"]])
def test_non_json_values_are_rejected(store: StateStore, value: JsonObject) -> None:
    with pytest.raises(MirrorError):
        store.create("progress", "k", value)


@pytest.mark.parametrize("garbage", ['{"unterminated": ', "[1, 2]", '{"n": NaN}', "", "null"])
def test_corrupt_stored_value_is_an_error_naming_the_record(backend: Backend, garbage: str) -> None:
    backend.write_raw("checkpoint", "sales/orders#1", garbage)
    with pytest.raises(CorruptStateError) as raised:
        backend.store.get("checkpoint", "sales/orders#1")
    message = str(raised.value)
    assert "checkpoint" in message and "sales/orders#1" in message
    assert backend.store.description in message
    with pytest.raises(CorruptStateError):
        backend.store.list("checkpoint")


def _increment(value: JsonObject | None) -> JsonObject:
    return {"count": (value or {"count": 0})["count"] + 1}


def test_update_from_many_threads_loses_no_increment(store: StateStore) -> None:
    def worker() -> None:
        for _ in range(25):
            update(store, "counter", "shared", _increment)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(worker) for _ in range(8)]:
            future.result()
    record = store.get("counter", "shared")
    assert record is not None and record.value["count"] == 200


class LostAnswers:
    """The store as a client sees it when the service applies a write but the answer is lost
    and the SDK's own retry then meets the changed record (409 on insert, 412 on replace)."""

    def __init__(self, inner: StateStore, losses: int) -> None:
        self.inner = inner
        self.losses = losses

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def create(self, kind: str, key: str, value: JsonObject) -> Record:
        record = self.inner.create(kind, key, value)
        return self._lose(record)

    def replace(self, kind: str, key: str, value: JsonObject, etag: str) -> Record:
        return self._lose(self.inner.replace(kind, key, value, etag))

    def _lose(self, record: Record) -> Record:
        if self.losses:
            self.losses -= 1
            raise ConflictError("the retry of an applied write met the changed record")
        return record


def test_update_whose_answer_is_lost_is_applied_once(store: StateStore) -> None:
    lossy = LostAnswers(store, losses=2)
    update(lossy, "counter", "lost", _increment)  # the insert's answer is lost
    update(lossy, "counter", "lost", _increment)  # and the replace's
    record = store.get("counter", "lost")
    assert record is not None and record.value["count"] == 2
    assert lossy.losses == 0
