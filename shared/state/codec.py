"""Rules every state backend shares: names, keys, value size and the JSON form of a value.

Both backends enforce the strictest backend's limits (Azure Table Storage's), so a record that
works against the local SQLite file also works in Azure.
"""

from __future__ import annotations

import json
import re

from shared.errors import MirrorError
from shared.state.base import JsonObject

_KIND = re.compile(r"[a-z][a-z0-9_]{0,62}")

# Table Storage RowKey forbids these characters (and control characters); "%" is the escape.
_ROW_KEY_UNSAFE = re.compile(r"[%/\\#?\x00-\x1f\x7f-\x9f]")
_ROW_KEY_ESCAPE = re.compile(r"%([0-9A-F]{2})")
MAX_ROW_KEY_BYTES = 1024

# An entity is limited to 1 MiB; this leaves room for keys, property names and the chunk count.
MAX_VALUE_BYTES = 900_000


class CorruptStateError(MirrorError):
    """A stored record is not a JSON object: state was edited or damaged outside the engine."""


def record_name(kind: str, key: str) -> str:
    return f"state record {kind}/{key!r}"


def check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise MirrorError(
            f"state kind {kind!r} must be 1-63 of a-z, 0-9 and _, starting with a letter"
        )


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise MirrorError(f"state key {key!r} must be a non-empty string")
    row_key = encode_row_key(key)
    try:
        # Which encoding the service counts is not documented; satisfy both.
        size = max(len(row_key.encode("utf-8")), len(row_key.encode("utf-16-le")))
    except UnicodeEncodeError:
        raise MirrorError(f"state key {key!r} contains unpaired surrogates") from None
    if size > MAX_ROW_KEY_BYTES:
        raise MirrorError(f"state key {key[:40]!r}... is {size} bytes escaped; the limit is 1 KiB")


def encode_row_key(key: str) -> str:
    """Escape ``key`` reversibly into a valid Table Storage RowKey."""
    return _ROW_KEY_UNSAFE.sub(lambda match: f"%{ord(match[0]):02X}", key)


def decode_row_key(row_key: str) -> str:
    return _ROW_KEY_ESCAPE.sub(lambda match: chr(int(match[1], 16)), row_key)


def dump_value(kind: str, key: str, value: JsonObject) -> str:
    """The canonical JSON text of ``value``; MirrorError if it is not storable."""
    if not isinstance(value, dict):
        raise MirrorError(
            f"{record_name(kind, key)}: value must be a dict, not {type(value).__name__}"
        )
    try:
        text = json.dumps(
            value, sort_keys=True, allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as error:
        # NaN/Infinity would otherwise be written as invalid JSON that other readers reject.
        raise MirrorError(f"{record_name(kind, key)}: value is not valid JSON: {error}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise MirrorError(
            f"{record_name(kind, key)}: value is {size} bytes as JSON; "
            f"the limit is {MAX_VALUE_BYTES} bytes"
        )
    return text


def corrupt_record(kind: str, key: str, where: str, problem: str) -> CorruptStateError:
    return CorruptStateError(f"{record_name(kind, key)} in {where} is corrupt: {problem}")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def load_value(kind: str, key: str, stored: str | bytes, where: str) -> JsonObject:
    """Parse a stored value; CorruptStateError (never "absent") if it is not a JSON object."""
    try:
        text = stored.decode("utf-8") if isinstance(stored, bytes) else stored
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise corrupt_record(kind, key, where, str(error)) from error
    if not isinstance(value, dict):
        raise corrupt_record(
            kind, key, where, f"it holds a JSON {type(value).__name__}, not an object"
        )
    return value
