"""Reading BSON in place: every element found where a decoder finds it; bad framing named."""

from __future__ import annotations

import datetime
import re
import uuid
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex
from bson.timestamp import Timestamp
from hypothesis import example, given
from hypothesis import strategies as st

from shared.errors import MirrorError
from shared.source.bson_elements import BsonType, fields

EVERY_TYPE: dict[str, Any] = {
    "double": 1.5,
    "string": "héllo",
    "document": {"a": 1, "b": [1, 2]},
    "array": [1, "two", {"three": 3}],
    "binary": Binary(b"\x00\x01", 0x80),
    "uuid": Binary(uuid.uuid4().bytes, 4),
    "oid": ObjectId(),
    "bool": True,
    "date": datetime.datetime(2026, 11, 27),  # naive: what bson.decode returns by default
    "null": None,
    "regex": Regex("^a.*b$", "im"),
    "dbref": DBRef("c", 1),
    "code": Code("function() {}"),
    "code_scope": Code("function() { return x }", {"x": 1}),
    "int32": 7,
    "timestamp": Timestamp(1_800_000_000, 3),
    "int64": Int64(1 << 40),
    "decimal": Decimal128(Decimal("1.10")),
    "min": MinKey(),
    "max": MaxKey(),
}


def test_every_bson_type_is_located_exactly() -> None:
    data = bson.encode(EVERY_TYPE)
    found = fields(data)
    assert list(found) == list(EVERY_TYPE)
    for name, value in EVERY_TYPE.items():
        element = found[name]
        # The element's bytes, alone in a document, decode to the same value.
        assert bson.decode(element.as_single_field_document()) == {name: value}
    assert found["string"].string() == "héllo"
    assert found["int32"].int32() == 7
    assert found["int64"].int64() == 1 << 40
    assert found["timestamp"].timestamp_seconds() == 1_800_000_000
    assert bson.decode(found["document"].raw_document()) == EVERY_TYPE["document"]
    assert list(found["array"].document()) == ["0", "1", "2"]
    assert found["null"].kind == BsonType.NULL


def test_a_document_inside_a_buffer_is_read_at_its_offset() -> None:
    first, second = bson.encode({"x": 1}), bson.encode({"y": "two"})
    assert fields(first + second, len(first))["y"].string() == "two"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x05\x00\x00", "unpack"),  # shorter than its length prefix
        (b"\x0c\x00\x00\x00\x02a\x00\x05\x00\x00\x00", "bad document length"),
        (bson.encode({"a": "text"})[:-1] + b"\x01", "bad document length"),  # no closing zero
        (b"\x0c\x00\x00\x00\x02a\x00\xff\x00\x00\x00\x00", "runs past"),  # string overruns
        (b"\x08\x00\x00\x00\x20a\x00\x00", "unknown element type 0x20"),
    ],
)
def test_malformed_documents_are_named_not_misread(data: bytes, problem: str) -> None:
    with pytest.raises(MirrorError, match=re.escape("malformed BSON document")) as raised:
        fields(data)
    assert problem in str(raised.value)


def test_asking_an_element_for_the_wrong_type_is_an_error() -> None:
    found = fields(bson.encode({"n": 1}))
    with pytest.raises(MirrorError, match="expected a BSON string, found type 0x10"):
        found["n"].string()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
documents = st.recursive(
    st.dictionaries(st.text(max_size=8).filter(lambda k: "\x00" not in k), scalars, max_size=6),
    lambda inner: st.dictionaries(
        st.text(max_size=8).filter(lambda k: "\x00" not in k),
        st.one_of(scalars, inner, st.lists(scalars, max_size=4)),
        max_size=6,
    ),
    max_leaves=30,
)


@given(documents)
@example({"": None, "_id": None})  # the encoder moves a top-level _id first
def test_any_document_is_walked_like_the_decoder_walks_it(document: dict[str, Any]) -> None:
    data = bson.encode(document)
    decoded = bson.decode(data)  # the encoder puts a top-level _id first
    found = fields(data)
    assert list(found) == list(decoded)
    for name, element in found.items():
        assert bson.decode(element.as_single_field_document()) == {name: decoded[name]}


def test_an_array_of_documents_gives_each_documents_offset() -> None:
    entries = [{"n": n, "s": "x" * n} for n in range(12)]
    data = bson.encode({"batch": entries})
    array = fields(data)["batch"]
    offsets = array.document_offsets()
    assert [
        bson.decode(fields(data, offset)["n"].as_single_field_document()) for offset in offsets
    ] == [{"n": n} for n in range(12)]
    with pytest.raises(MirrorError, match="not a document"):
        fields(bson.encode({"batch": [1]}))["batch"].document_offsets()
