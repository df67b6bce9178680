"""The ``_id`` key as text: natural for ObjectId and strings, collision-free across all types.

Forms (``~`` starts every tagged form; a plain string never starts with ``~``):

- ObjectId: its 24 lowercase hex digits.
- string: itself, unless it starts with ``~`` or is 24 lowercase hex digits (it would read as
  a tag or an ObjectId); those become ``~s:<string>``.
- number (int32, int64, double, Decimal128): ``~n:<canonical decimal>``. MongoDB compares
  numbers by value, so 5, Int64(5), 5.0 and Decimal128("5.00") are one ``_id`` and share one
  text ``~n:5``; -0 is ``0``; every NaN is ``~n:NaN``; ``~n:Infinity``, ``~n:-Infinity``.
  Doubles are written exactly (0.1 is ``~n:0.1000000000000000055511151231257827...``), so they
  never meet a different Decimal128.
- date: ``~d:<milliseconds since epoch>``.
- binary subtype 4 of 16 bytes: ``~u:<canonical UUID>``.
- embedded document: ``~o:`` + JSON array of ``[key, id_text(value)]`` pairs in field order.
- array (only inside documents): ``~a:`` + JSON array of ``id_text(item)``.
- anything else (null, bool, other binary, regex, code, timestamp, min/max key, DBRef...):
  ``~x:`` + canonical Extended JSON.

Each tag's payload is an injective function of the value, and tags differ, so distinct
``_id`` values never share a text. :func:`parse_id_text` is the inverse.
"""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal
from typing import Any

import bson
from bson import Binary, Decimal128, Int64, ObjectId, json_util
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions

_TAG = "~"
_HEX24 = re.compile(r"[0-9a-f]{24}")
# Normalising through BSON makes equal BSON values equal Python values whatever the caller
# decoded them with (datetime vs DatetimeMS, dict vs SON vs RawBSONDocument, uuid.UUID...).
_NORMALISE: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)
_EXT_JSON: JSONOptions = CANONICAL_JSON_OPTIONS.with_options(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)
# Integers up to this many digits are written positionally; bigger ones in E notation.
_MAX_PLAIN_DIGITS = 40


def _canonical_number(d: Decimal) -> str:
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    if not d:
        return "0"
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    text = "".join(map(str, digits)).rstrip("0")
    exp += len(digits) - len(text)
    if exp >= 0 and len(text) + exp <= _MAX_PLAIN_DIGITS:
        return ("-" if sign else "") + text + "0" * exp
    return str(Decimal((sign, tuple(map(int, text)), exp)))


def _number(value: Any) -> Decimal | None:
    t = type(value)
    if t is int or t is Int64:
        return Decimal(value)
    if t is float:
        return Decimal(value)  # exact binary value, not the shortest repr
    if t is Decimal128:
        return value.to_decimal()
    return None


def id_text(value: Any) -> str:
    """Text key of one ``_id`` value (any BSON type, as PyMongo decodes it)."""
    t = type(value)
    if t is ObjectId:
        return str(value)
    if t is str:
        if value.startswith(_TAG) or _HEX24.fullmatch(value):
            return "~s:" + value
        return value
    num = _number(value)
    if num is not None:
        return "~n:" + _canonical_number(num)
    return _tagged(bson.decode(bson.encode({"v": value}), _NORMALISE)["v"])


def _tagged(value: Any) -> str:
    t = type(value)
    if t is ObjectId or t is str or _number(value) is not None:
        return id_text(value)
    if t is DatetimeMS:
        return f"~d:{int(value)}"
    if t is Binary and value.subtype == 4 and len(value) == 16:
        return "~u:" + str(uuid.UUID(bytes=bytes(value)))
    if t is dict:
        pairs = [[k, _tagged(v)] for k, v in value.items()]
        return "~o:" + json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
    if t is list:
        items = [_tagged(v) for v in value]
        return "~a:" + json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    return "~x:" + json_util.dumps(value, json_options=_EXT_JSON)


def _parse_number(text: str) -> Any:
    d = Decimal(text)
    if d.is_nan() or d.is_infinite():
        return float(text)
    if d == d.to_integral_value() and -(2**63) <= d < 2**63:
        n = int(d)
        return Int64(n) if not -(2**31) <= n < 2**31 else n
    f = float(d)
    if Decimal(f) == d:
        return f
    return Decimal128(text)


def parse_id_text(text: str) -> Any:
    """Inverse of :func:`id_text`, up to MongoDB's own equivalences.

    Numbers come back as int (int64 range), else double when exact, else Decimal128; dates as
    ``DatetimeMS``; documents as dict.
    """
    if not text.startswith(_TAG):
        return ObjectId(text) if _HEX24.fullmatch(text) else text
    tag, payload = text[:3], text[3:]
    if tag == "~s:":
        return payload
    if tag == "~n:":
        return _parse_number(payload)
    if tag == "~d:":
        return DatetimeMS(int(payload))
    if tag == "~u:":
        return Binary(uuid.UUID(payload).bytes, 4)
    if tag == "~o:":
        return {k: parse_id_text(v) for k, v in json.loads(payload)}
    if tag == "~a:":
        return [parse_id_text(v) for v in json.loads(payload)]
    if tag == "~x:":
        return json_util.loads(payload, json_options=_EXT_JSON)
    raise ValueError(f"not an _id text: {text!r}")
