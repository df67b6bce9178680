"""Resume tokens as the state stores them: type-exact JSON, ordered like stream positions."""

from __future__ import annotations

from typing import Any

from bson import json_util

from shared.errors import MirrorError

_EXACT = json_util.CANONICAL_JSON_OPTIONS


def token_to_json(token: Any) -> str:
    return json_util.dumps(token, json_options=_EXACT)


def token_from_json(text: str) -> dict[str, Any]:
    try:
        token = json_util.loads(text, json_options=_EXACT)
    except ValueError as error:
        raise MirrorError(f"stored resume token is not valid JSON: {error}") from None
    if not isinstance(token, dict) or "_data" not in token:
        raise MirrorError("stored resume token has no _data field")
    return token


def token_order(token_json: str) -> str:
    """A sort key for a stored token. A resume token's ``_data`` is a hex KeyString whose order
    is the order of the stream positions it encodes, so tokens compare as their ``_data``."""
    return str(token_from_json(token_json)["_data"])
