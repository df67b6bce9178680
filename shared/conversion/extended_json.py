"""Relaxed Extended JSON rendered in C by MongoDB's ``python-bsonjs``, many values per call.

PyMongo's ``json_util`` is pure Python and costs tens of microseconds per nested document;
``bsonjs.dumps`` renders a whole batch with libbson in one call. Values are wrapped as the
elements of one BSON document separated by a string element holding a random per-call nonce:
quotes inside rendered strings are always escaped, so ``"s" : "<nonce>"`` can only appear as
our separator and a plain split recovers every value's JSON text exactly.

The libbson inside python-bsonjs 0.7 writes dates after the year 9999 as ISO text
(``{ "$date" : "10000-01-01T00:00:00Z" }``), which Extended JSON forbids (relaxed ISO dates are
for years 1970 to 9999) and ``json_util`` cannot read back; :func:`_far_date_as_number` rewrites
them to ``{ "$date" : { "$numberLong" : "<ms>" } }``, as libbson 2 and ``json_util`` write them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

import bsonjs
import pyarrow as pa
import pyarrow.compute as pc

_VALUE_KEY_LEN = len('"v" : ')
# Quotes inside strings are escaped, so this matches only a `$date` key with a string value: a
# date, or a sub-document keyed `$date` that Extended JSON cannot tell from one (README's limit).
_FAR_DATE = re.compile(r'"\$date" : "(\d{5,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{3}))?Z"')


def element(type_byte: bytes, value_bytes: bytes) -> bytes:
    """One BSON element named ``v``: what :func:`to_json_texts` takes."""
    return type_byte + b"v\x00" + value_bytes


def render_document(body: bytes) -> str:
    """Relaxed Extended JSON of the document whose elements are ``body``."""
    doc = (len(body) + 5).to_bytes(4, "little") + body + b"\x00"
    try:
        text = bsonjs.dumps(doc, mode=bsonjs.RELAXED)
    except ValueError:
        # libbson refuses invalid UTF-8; MongoDB validates UTF-8 on write, so this means
        # corrupt input that must not be published half-converted.
        raise ValueError("libbson could not render the values as Extended JSON") from None
    if _FAR_DATE.search(text):
        text = _FAR_DATE.sub(_far_date_as_number, text)
    return text


def _far_date_as_number(match: re.Match[str]) -> str:
    year, month, day, hour, minute, second = map(int, match.groups()[:6])
    ms = int(match.group(7) or 0)
    seconds = _days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
    return f'"$date" : {{ "$numberLong" : "{seconds * 1000 + ms}" }}'


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's exact algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _separator() -> tuple[bytes, str]:
    nonce = secrets.token_hex(16)
    sep = b"\x02s\x00" + (len(nonce) + 1).to_bytes(4, "little") + nonce.encode() + b"\x00"
    return sep, f', "s" : "{nonce}", '


def to_json_array(elements: Sequence[bytes], header: bytes = b"") -> pa.Array:
    """:func:`to_json_texts` as an Arrow string array, split in Arrow (no Python strings)."""
    if not elements:
        return pa.array([], pa.string())
    sep, sep_text = _separator()
    text = render_document(header + (sep + header).join(elements))
    # text is '{ "v" : J0, "s" : "N", "v" : J1, ... }'
    whole = pa.array([text[2 + _VALUE_KEY_LEN : -2]], pa.string())
    parts = pc.list_flatten(pc.split_pattern(whole, sep_text + '"v" : '))
    if len(parts) != len(elements):
        raise ValueError("Extended JSON split mismatch")
    return parts


def to_json_texts(elements: Sequence[bytes], header: bytes = b"") -> list[str]:
    """Relaxed Extended JSON text of each element's value, in order.

    ``header`` (type byte and ``v`` key) is put before every element when the elements are
    bare values of one type.
    """
    if not elements:
        return []
    sep, sep_text = _separator()
    text = render_document(header + (sep + header).join(elements))
    # text is '{ "v" : J0, "s" : "N", "v" : J1, ... }'
    parts = text[2:-2].split(sep_text)
    if len(parts) != len(elements):
        raise ValueError("Extended JSON split mismatch")
    return [p[_VALUE_KEY_LEN:] for p in parts]
