"""Connecting to MongoDB with the options every reader here relies on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from bson.codec_options import DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, PyMongoError
from pymongo.server_description import ServerDescription
from pymongo.server_type import SERVER_TYPE
from pymongo.uri_parser import split_options

from shared.errors import ConfigError, MirrorError
from shared.redaction import redact
from shared.source.retry import describe

APP_NAME = "mongo-fabric-mirror"


class ServerPin:
    """Keeps the commands of one server-side cursor on the router (mongos) that opened it.

    A sharded cluster's routers each keep the cursors they opened in their own memory: a
    getMore or killCursors sent through another router fails with CursorNotFound (43) (the
    find/getMore/killCursors commands spec sends them to the cursor's server; SERVER-88060 is
    the same failure, closed "Works as Designed"). PyMongo's own cursors are pinned to their
    address, but a cursor driven by hand through ``Database.command`` is not: each command
    selects a server afresh. Run those commands inside ``pinned(pin)``: the first selection
    picks one router and every later one keeps to it.

    Why a server selector: ``server_selector`` is PyMongo's public hook for narrowing server
    selection, so one client (one pool, its credentials, TLS and ``mongodb+srv://`` discovery)
    serves every cursor. The alternatives are worse here: ``Database.cursor_command`` returns a
    cursor that decodes each batch and hides the postBatchResumeToken a change stream needs
    (see ``shared.source.change_stream.ChangeCursor``), and a second client connected directly
    to one router would have to rebuild the user's connection string. Only routers are pinned:
    a replica set's commands go to its primary whatever this says, and after a failover the
    cursor is gone with the old primary anyway, so nothing changes there.
    """

    def __init__(self) -> None:
        self.address: tuple[str, int | None] | None = None  # as ServerDescription.address

    def select(self, servers: list[ServerDescription]) -> list[ServerDescription]:
        if self.address is not None:
            # The cursor's router only; while it is unreachable nothing else will do, and the
            # command waits for it up to the server selection timeout like any other.
            return [server for server in servers if server.address == self.address]
        routers = [server for server in servers if server.server_type == SERVER_TYPE.Mongos]
        if not routers:
            return servers  # not a sharded cluster: the driver's own selection is right
        # The nearest router, as the driver's latency window prefers.
        chosen = min(routers, key=lambda server: server.round_trip_time or float("inf"))
        self.address = chosen.address
        return [chosen]


_PINNED: ContextVar[ServerPin | None] = ContextVar("pinned_server", default=None)


@contextmanager
def pinned(pin: ServerPin) -> Iterator[None]:
    """Server selection for the commands run in this block keeps to ``pin``'s router, on a
    client made by ``connect`` (in whichever thread runs the block)."""
    token = _PINNED.set(pin)
    try:
        yield
    finally:
        _PINNED.reset(token)


def pinned_selection(servers: list[ServerDescription]) -> list[ServerDescription]:
    """The ``server_selector`` of clients made by ``connect``: no change outside ``pinned``."""
    pin = _PINNED.get()
    return servers if pin is None else pin.select(servers)


def connect(uri: str) -> MongoClient[RawBSONDocument]:
    """A client that has proven it can reach the server (fail fast on a wrong URI or network).

    Server selection waits 10 s unless the URI sets ``serverSelectionTimeoutMS`` itself.
    """
    check_uri_options(uri)
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
            server_selector=pinned_selection,
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


_OPTION_SEPARATORS = re.compile(r"[&;]")
_SHORTEST_MASKED_VALUE = 3  # shorter values ("1", "0") would mask unrelated text in a message


def check_uri_options(uri: str) -> None:
    """ConfigError naming MONGODB_URI and the first option of ``uri`` PyMongo would not use.

    ``MongoClient`` only warns (a UserWarning) about an unknown option or a bad value and then
    ignores it, so a typo like ``?tls=maybe`` or ``?bogusOption=1`` would connect without the
    option the user asked for. The connection string spec lets drivers either warn or fail
    here ("Connection String Spec", invalid options); a mirror that runs unattended fails.
    Each option is checked alone so that the error names it (PyMongo's message does not).
    """
    _, _, query = uri.partition("?")
    for part in filter(None, _OPTION_SEPARATORS.split(query)):
        name, _, value = part.partition("=")
        try:
            split_options(part, validate=True, warn=False)
        except ConfigurationError as error:  # unknown option (InvalidURI: no key=value pair)
            unknown = str(error).startswith("Unknown option")
            problem = "not a MongoDB connection-string option" if unknown else str(error)
            raise ConfigError("MONGODB_URI", _option_problem(name, problem, query)) from None
        except (ValueError, TypeError) as error:  # a known option with a value it cannot take
            message = str(error)
            if len(value) >= _SHORTEST_MASKED_VALUE:
                message = message.replace(value, "…")
            raise ConfigError("MONGODB_URI", _option_problem(name, message, query)) from None


def _option_problem(name: str, problem: str, query: str) -> str:
    if "@" in query:
        # Text after "?" holding "@" is most likely a password with an unescaped "?" (the user
        # info ends at the last "@"): never echo it, say how to fix it instead.
        return (
            "an option after '?' is not valid (not named: the options hold '@', so they may "
            "hold password text; percent-encode '?', '@', ':' and '/' in a user name or password)"
        )
    return f"option {name!r}: {problem}; the driver would ignore it: fix or remove it"


def _without_uri(message: str, uri: str) -> str:
    return message.replace(uri, redact(uri))
