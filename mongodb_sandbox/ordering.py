"""MongoDB's total order over BSON values, as sort keys that Python can compare.

`sort_key(value)` maps any decoded BSON value to a tuple whose first element is the value's
canonical type rank, so values of different types order exactly as MongoDB orders them and
values of the same bracket (all numbers; string and symbol) compare by value. The keys are also
hashable and equal exactly when MongoDB considers the values equal, which makes them usable as
`_id` identity in the store (so `1`, `1.0` and `Int64(1)` are the same `_id`, as in MongoDB).
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

# Canonical type ranks, as in MongoDB's canonicalizeBSONType.
MINKEY = -1
NULL = 5
NUMBER = 10
STRING = 15
OBJECT = 20
ARRAY = 25
BINARY = 30
OBJECTID = 35
BOOL = 40
DATE = 45
TIMESTAMP = 47
REGEX = 50
CODE = 60
CODE_WITH_SCOPE = 65
MAXKEY = 100

SortKey = tuple[Any, ...]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def datetime_millis(value: datetime.datetime | DatetimeMS) -> int:
    """Milliseconds since the epoch, the way BSON stores a date."""
    if isinstance(value, DatetimeMS):
        return int(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return (value - _EPOCH) // datetime.timedelta(milliseconds=1)


_EXACT_RANKS: dict[type, int] = {
    type(None): NULL,
    int: NUMBER,
    float: NUMBER,
    str: STRING,
    dict: OBJECT,
    list: ARRAY,
}


def type_rank(value: Any) -> int:
    """The canonical type bracket of a decoded BSON value (None stands for null and missing)."""
    # bool and Code subclass int and str: test them before their bases.
    exact = _EXACT_RANKS.get(type(value))  # the common types, without the isinstance chain
    if exact is not None:
        return exact
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float | Decimal128 | Decimal):
        return NUMBER
    if isinstance(value, Code):
        return CODE if value.scope is None else CODE_WITH_SCOPE
    if isinstance(value, str):
        return STRING
    if isinstance(value, Mapping | DBRef):
        return OBJECT
    if isinstance(value, list | tuple):
        return ARRAY
    if isinstance(value, bytes | Binary):
        return BINARY
    if isinstance(value, ObjectId):
        return OBJECTID
    if isinstance(value, datetime.datetime | DatetimeMS):
        return DATE
    if isinstance(value, Timestamp):
        return TIMESTAMP
    if isinstance(value, Regex | re.Pattern):
        return REGEX
    if isinstance(value, MinKey):
        return MINKEY
    if isinstance(value, MaxKey):
        return MAXKEY
    raise TypeError(f"not a BSON value: {type(value).__name__}")


def _number_key(value: Any) -> SortKey:
    number = value.to_decimal() if isinstance(value, Decimal128) else value
    if isinstance(number, Decimal):
        if number.is_nan():
            return (NUMBER, 0)
        # Decimal compares and hashes consistently with int and float, so no conversion.
        return (NUMBER, 1, number)
    if isinstance(number, float) and math.isnan(number):
        # NaN sorts below every other number and equals itself, as in MongoDB.
        return (NUMBER, 0)
    return (NUMBER, 1, number)


def _regex_parts(value: Regex | re.Pattern[str]) -> tuple[str, str]:
    if isinstance(value, Regex):
        flags = value.flags if isinstance(value.flags, str) else _flag_letters(value.flags)
        return str(value.pattern), "".join(sorted(flags))
    return value.pattern, _flag_letters(value.flags)


def _flag_letters(flags: int) -> str:
    letters = {re.IGNORECASE: "i", re.LOCALE: "l", re.MULTILINE: "m", re.DOTALL: "s"}
    letters[re.VERBOSE] = "x"
    return "".join(sorted(letter for flag, letter in letters.items() if flags & flag))


def sort_key(value: Any) -> SortKey:
    """A tuple ordering like `value` does among all BSON values."""
    rank = type_rank(value)
    if rank == NUMBER:
        return _number_key(value)
    if rank in (NULL, MINKEY, MAXKEY):
        return (rank,)
    if rank in (STRING, CODE):
        return (rank, str(value))
    if rank == OBJECT:
        items = value.as_doc().items() if isinstance(value, DBRef) else value.items()
        # Objects compare element by element: type, then field name, then value.
        return (rank, tuple((type_rank(v), k, sort_key(v)) for k, v in items))
    if rank == ARRAY:
        return (rank, tuple(sort_key(v) for v in value))
    if rank == BINARY:
        subtype = value.subtype if isinstance(value, Binary) else 0
        return (rank, len(value), subtype, bytes(value))
    if rank == OBJECTID:
        return (rank, value.binary)
    if rank == BOOL:
        return (rank, bool(value))
    if rank == DATE:
        return (rank, datetime_millis(value))
    if rank == TIMESTAMP:
        return (rank, value.time, value.inc)
    if rank == REGEX:
        return (rank, *_regex_parts(value))
    # Code with scope: the code, then the scope document.
    return (rank, str(value), sort_key(dict(value.scope)))


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as MongoDB orders `a` and `b`."""
    ka, kb = sort_key(a), sort_key(b)
    return (ka > kb) - (ka < kb)


def bracket_bounds(rank: int) -> tuple[SortKey, SortKey]:
    """Keys below and above every key of one type bracket (for range scans over sorted keys)."""
    return (rank,), (rank + 0.5,)
