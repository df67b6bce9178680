"""Connecting to MongoDB with the options every reader here relies on."""

from __future__ import annotations

from typing import Any

from bson.codec_options import DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, PyMongoError

from shared.errors import ConfigError, MirrorError
from shared.redaction import redact
from shared.source.retry import describe

APP_NAME = "mongo-fabric-mirror"


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
        raise MirrorError(f"cannot reach MongoDB at {redact(uri)}: {describe(error)}") from None
    return client


def _without_uri(message: str, uri: str) -> str:
    return message.replace(uri, redact(uri))
