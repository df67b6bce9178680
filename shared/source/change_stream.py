"""Change-stream positions: where a table's stream starts, stored as type-exact JSON."""

from __future__ import annotations

from typing import Any

from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from shared.errors import MirrorError

_EXACT = json_util.CANONICAL_JSON_OPTIONS


def current_position(collection: Collection[RawBSONDocument]) -> str:
    """A resume token for "now" on ``collection``, taken by opening (and closing) a stream.

    The server answers the opening aggregate with a ``postBatchResumeToken`` for the present, so
    every change after this call is replayable from the returned token.
    """
    with collection.watch(full_document="updateLookup") as stream:
        token = stream.resume_token
    if token is None:
        raise MirrorError(f"{collection.full_name}: the server gave no resume token")
    return token_to_json(token)


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
