"""The sandbox's remembered filter verdicts: always the verdict the filter itself gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mongodb_sandbox import query

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, -0.0, float("nan")]),
    st.sampled_from(["a", "b", "1"]),
    st.lists(st.integers(-2, 2), max_size=2),
    st.fixed_dictionaries({"coll": st.sampled_from(["a", "b"])}),
)
documents = st.dictionaries(st.sampled_from(["ns", "op", "n"]), values, max_size=3)
FILTERS: list[dict[str, Any]] = [
    {"$or": [{"ns.coll": {"$in": ["a", "c"]}}, {"ns.coll": {"$exists": False}}]},
    {"op": {"$in": [1, "1", True]}, "n": {"$gte": 0}},
    {"$nor": [{"n": 1}, {"op": None}]},
    {"n": {"$type": "number"}},
]


@given(st.lists(documents, max_size=30))
def test_remembered_verdicts_equal_the_filters_own(docs: list[dict[str, Any]]) -> None:
    for condition in FILTERS:
        remembered = query.MemoizedFilter(condition)
        for doc in docs + docs:  # the second pass is answered from memory
            assert remembered.matches(doc) == query.matches(doc, condition), (condition, doc)


def test_paths_are_known_only_for_plain_field_conditions() -> None:
    assert query.filter_paths(FILTERS[0]) == {"ns.coll"}
    assert query.filter_paths({"$and": [{"a": 1}, {"b.c": 2}]}) == {"a", "b.c"}
    assert query.filter_paths({"$expr": {"$eq": ["$a", 1]}}) is None
    assert query.MemoizedFilter({"$expr": {}}).reads("fullDocument")
    assert not query.MemoizedFilter(FILTERS[0]).reads("fullDocument")
