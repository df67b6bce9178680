"""Turn validated settings into the stores and publisher the pipeline steps work with."""

from __future__ import annotations

import logging
import threading
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.collection import Collection

from shared import telemetry
from shared.azure_auth import checked_credential as prove_credential
from shared.config import Settings
from shared.errors import ConfigError
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.stores import open_landing_zone, parse_landing_zone
from shared.landing_zone.stores.base import LandingZoneStore
from shared.landing_zone.stores.local import LocalStore
from shared.landing_zone.stores.retrying import RetryingStore
from shared.logs import quiet_sdk_logs
from shared.source.client import connect
from shared.source.collections import SourceCollection, select_collections
from shared.state import open_state_store, parse_state_location
from shared.state.base import StateStore
from shared.state.retrying import RetryingStateStore
from shared.storage_retry import StorageRetrier

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)
STORAGE_SCOPE = "https://storage.azure.com/.default"


def open_landing_zone_store(
    settings: Settings, credential: TokenCredential | None = None, *, must_exist: bool = False
) -> LandingZoneStore:
    """The landing zone, checked as far as can be without writing to it.

    A local folder must be a folder (or not exist yet, unless ``must_exist``: to read it) and
    be writable when it will be written, so a wrong path fails here and not mid-snapshot.
    """
    location = settings.require("LANDING_ZONE")
    if credential is None and _landing_zone_needs_token(location):
        credential = checked_credential(settings)
    store = open_landing_zone(location, credential)
    if isinstance(store, LocalStore):
        store.check_usable(writing=not must_exist)
    log.info("landing zone: %s", store.description)
    return RetryingStore(store, _storage_budget(settings))


def open_state(
    settings: Settings, credential: TokenCredential | None = None, *, must_exist: bool = False
) -> StateStore:
    """The state store; with ``must_exist`` (commands that only read it) a SQLite file that is
    not there is a configuration error rather than a new, empty state that reports nothing."""
    location = settings.require("STATE_STORE")
    parsed = parse_state_location(location)
    if must_exist and parsed.path is not None and not parsed.path.exists():
        raise ConfigError(
            "STATE_STORE",
            f"{parsed.path} does not exist: run this where `run` ran, or pass --state",
        )
    if credential is None and _state_needs_token(location):
        credential = checked_credential(settings)
    budget = _storage_budget(settings)
    # Opening a table creates it if missing: a request like any other, retried the same way.
    opening = StorageRetrier(f"opening {parsed.description}", budget)
    state = opening.call(lambda: open_state_store(location, credential))
    log.info("state store: %s", state.description)
    return RetryingStateStore(state, budget)


def _storage_budget(settings: Settings) -> int:
    return settings.integer("STORAGE_RETRY_SECONDS")


def open_publisher(settings: Settings) -> Publisher:
    """Both stores, sharing one proven credential when either of them needs one."""
    needs_token = _landing_zone_needs_token(settings.require("LANDING_ZONE")) or (
        _state_needs_token(settings.require("STATE_STORE"))
    )
    credential = checked_credential(settings) if needs_token else None
    return Publisher(
        open_landing_zone_store(settings, credential), open_state(settings, credential)
    )


def _landing_zone_needs_token(location: str) -> bool:
    return parse_landing_zone(location).needs_token


def _state_needs_token(location: str) -> bool:
    return parse_state_location(location).needs_token


def checked_credential(settings: Settings) -> TokenCredential:
    """The configured Azure credential, proven to work by taking one storage token now.

    Failing here, before anything is written, beats failing on the first upload.
    """
    return prove_credential(settings.auth, STORAGE_SCOPE)


@dataclass
class MirrorContext:
    """Everything one process needs to run pipeline steps; open once per process."""

    settings: Settings
    publisher: Publisher
    mongo: MongoClient[RawBSONDocument]

    @property
    def state(self) -> StateStore:
        return self.publisher.state

    def collection(self, database: str, name: str) -> Collection[RawBSONDocument]:
        return self.mongo[database][name]

    def describe_source(self) -> None:
        """Tell the publisher the server's version for ``_partnerEvents.json``, once per process:
        ``buildInfo``'s ``version`` (MongoDB manual, buildInfo command)."""
        if self.publisher.partner.source_version is None:
            info = self.mongo.admin.command("buildInfo")
            self.publisher.describe_source(str(info["version"]))

    def close(self) -> None:
        self.mongo.close()
        self.publisher.state.close()


def open_context(settings: Settings, *, select_sources: bool = False) -> MirrorContext:
    """Connect to MongoDB, then open the stores.

    With ``select_sources``, the database and the collection selection are validated against
    the server first, so a wrong MONGODB_DATABASE or collection name writes nothing anywhere.
    """
    quiet_sdk_logs(settings.log_level)
    telemetry.enable(settings)
    mongo = connect(settings.require("MONGODB_URI"))
    try:
        if select_sources:
            selected_sources(mongo, settings)
        return MirrorContext(settings, open_publisher(settings), mongo)
    except BaseException:
        mongo.close()
        raise


def selected_sources(
    mongo: MongoClient[RawBSONDocument],
    settings: Settings,
    mirrored: AbstractSet[str] = frozenset(),
) -> list[SourceCollection]:
    """The collections MONGODB_DATABASE and MONGODB_COLLECTIONS select, checked on the server;
    ``mirrored`` (collections mirrored before) may have been dropped since."""
    database = mongo[settings.require("MONGODB_DATABASE")]
    return select_collections(database, settings.collections(), mirrored)


class ContextCache:
    """The context a long-lived process (a Functions worker) opens on first use and reuses across
    invocations, so MongoDB and storage connections stay pooled.

    Its owner (function_app.py) makes one at import; invocations may run on several threads, so
    only one of them opens it. ``close`` drops it: the next ``get`` opens a fresh one (tests
    change settings between cases and close it in between).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: MirrorContext | None = None

    def get(self, settings: Settings) -> MirrorContext:
        with self._lock:
            if self._context is None:
                self._context = open_context(settings)
            return self._context

    @property
    def opened(self) -> MirrorContext | None:
        """The context if one was opened (and not closed since), without opening one."""
        return self._context

    def close(self) -> None:
        with self._lock:
            context, self._context = self._context, None
        if context is not None:
            context.close()
