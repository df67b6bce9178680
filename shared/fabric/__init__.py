"""Fabric REST API: create and run the open-mirroring database, read Fabric's own status."""

from shared.fabric.client import FabricAccessError, FabricClient, FabricError
from shared.fabric.mirroring import (
    MirroredDatabase,
    create_mirrored_database,
    fabric_table_status,
    get_mirrored_database,
    landing_zone_url,
    mirroring_status,
    start_mirroring,
    stop_mirroring,
    tables_mirroring_status,
)

__all__ = [
    "FabricAccessError",
    "FabricClient",
    "FabricError",
    "MirroredDatabase",
    "create_mirrored_database",
    "fabric_table_status",
    "get_mirrored_database",
    "landing_zone_url",
    "mirroring_status",
    "start_mirroring",
    "stop_mirroring",
    "tables_mirroring_status",
]
