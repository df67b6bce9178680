"""Turn validated settings into the stores and publisher the pipeline steps work with."""

from __future__ import annotations

import logging

from shared.config import Settings
from shared.landing_zone.publisher import Publisher
from shared.landing_zone.stores import open_landing_zone
from shared.landing_zone.stores.base import LandingZoneStore
from shared.state import open_state_store
from shared.state.base import StateStore

log = logging.getLogger(__name__)


def open_landing_zone_store(settings: Settings) -> LandingZoneStore:
    store = open_landing_zone(settings.require("LANDING_ZONE"), settings.auth.credential())
    log.info("landing zone: %s", store.description)
    return store


def open_state(settings: Settings) -> StateStore:
    state = open_state_store(settings.require("STATE_STORE"), settings.auth.credential())
    log.info("state store: %s", state.description)
    return state


def open_publisher(settings: Settings) -> Publisher:
    return Publisher(open_landing_zone_store(settings), open_state(settings))
