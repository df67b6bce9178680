"""Connecting to MongoDB with the options every reader here relies on."""

from __future__ import annotations

import re
from typing import Any

from bson.codec_options import DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, PyMongoError, ServerSelectionTimeoutError

from shared.errors import ConfigError, MirrorError
from shared.redaction import redact

APP_NAME = "mongo-fabric-mirror"
MAX_MESSAGE_CHARS = 300
# Noise in PyMongo's messages: the timeouts behind every server's error, the topology dump after
# a server-selection timeout, the reply document after a command error.
_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")
_SERVER_SEPARATOR = re.compile(r",(?=\S+:\d+: )")
_TAILS = (", Timeout: ", ", full error: ")


def connect(uri: str) -> MongoClient[RawBSONDocument]:
    """A client that has proven it can reach the server (fail fast on a wrong URI or network).

    Server selection waits 10 s unless the URI sets ``serverSelectionTimeoutMS`` itself.
    """
    options: dict[str, Any] = {}
    if "serverselectiontimeoutms" not in uri.lower():
        options["serverSelectionTimeoutMS"] = 10_000
    try:
        client: MongoClient[RawBSONDocument] = MongoClient(
            uri,
            appname=APP_NAME,
            document_class=RawBSONDocument,
            tz_aware=True,
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
            retryReads=True,
            **options,
        )
    except (ConfigurationError, ValueError, TypeError) as error:
        raise ConfigError("MONGODB_URI", _without_uri(str(error), uri)) from None
    try:
        client.admin.command("ping")
    except PyMongoError as error:
        client.close()
        raise MirrorError(f"cannot reach MongoDB at {redact(uri)}: {_brief(error)}") from None
    return client


def describe_mongo_error(error: PyMongoError) -> str:
    """One short line for a driver error: its kind and the cause, no topology or reply dump."""
    return f"{type(error).__name__}: {_brief(error)}"


def _brief(error: PyMongoError) -> str:
    text = str(error)
    for tail in _TAILS:
        text = text.split(tail, 1)[0]
    text = _TIMEOUTS.sub("", text)
    if isinstance(error, ServerSelectionTimeoutError):
        text = _SERVER_SEPARATOR.sub("; ", text)
    text = redact(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _without_uri(message: str, uri: str) -> str:
    return message.replace(uri, redact(uri))
