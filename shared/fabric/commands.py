"""``mongo-fabric-mirror fabric create|start|stop|status``: set up and watch the mirrored database.

Registered into the main parser by ``add_fabric_parser``; each action parses, calls one
operation of ``shared.fabric.mirroring`` and prints what an operator needs next (the
``LANDING_ZONE`` to configure, or the status as JSON).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from shared.config import Settings
from shared.errors import ConfigError

# Fabric's item display names are at most 256 characters; Fabric checks the rest of its rules.
MAX_NAME_LENGTH = 256
_ITEM_SETTINGS = ("FABRIC_WORKSPACE_ID", "FABRIC_ITEM_ID", "FABRIC_API_URL", "AZURE_AUTH")


def add_fabric_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_settings: Callable[..., None],
) -> None:
    """Add ``fabric`` and its actions; ``add_settings(parser, *names)`` adds setting flags."""
    fabric = commands.add_parser(
        "fabric", help="create, start, stop or check the Fabric mirrored database (open mirroring)"
    )
    actions = fabric.add_subparsers(dest="fabric_action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="create an open-mirroring database, start it and print its LANDING_ZONE",
    )
    create.set_defaults(command=_create)
    create.add_argument("--name", help="the mirrored database's display name")
    add_settings(create, "FABRIC_WORKSPACE_ID", "FABRIC_API_URL", "AZURE_AUTH")

    for name, command, help_text in (
        ("start", _start, "start mirroring and print the LANDING_ZONE"),
        ("stop", _stop, "stop mirroring (the landing zone keeps its files)"),
        ("status", _status, "print Fabric's mirroring status and per-table state as JSON"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.set_defaults(command=command)
        add_settings(action, *_ITEM_SETTINGS)


def _create(args: argparse.Namespace, settings: Settings) -> int:
    from shared.fabric.mirroring import (
        create_mirrored_database,
        open_fabric_client,
        start_mirroring,
    )

    name = (args.name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ConfigError(
            "--name", f"is required: the display name, 1 to {MAX_NAME_LENGTH} printable characters"
        )
    workspace_id = settings.require("FABRIC_WORKSPACE_ID")
    with open_fabric_client(settings) as client:
        database = create_mirrored_database(client, workspace_id, name)
        start_mirroring(client, workspace_id, database.item_id)
    print(f"mirrored database {name!r} created and mirroring started")
    _print_settings(workspace_id, database.item_id, database.landing_zone)
    return 0


def _start(args: argparse.Namespace, settings: Settings) -> int:
    from shared.fabric.mirroring import get_mirrored_database, open_fabric_client, start_mirroring

    workspace_id, item_id = _item(settings)
    with open_fabric_client(settings) as client:
        start_mirroring(client, workspace_id, item_id)
        database = get_mirrored_database(client, workspace_id, item_id)
    print(f"mirroring started for {database.display_name or item_id!r}")
    _print_settings(workspace_id, item_id, database.landing_zone)
    return 0


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    from shared.fabric.mirroring import open_fabric_client, stop_mirroring

    workspace_id, item_id = _item(settings)
    with open_fabric_client(settings) as client:
        stop_mirroring(client, workspace_id, item_id)
    print(f"mirroring stopped for item {item_id} in workspace {workspace_id}")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from shared.fabric.mirroring import (
        flatten_table_status,
        get_mirrored_database,
        mirroring_status,
        open_fabric_client,
        tables_mirroring_status,
    )

    workspace_id, item_id = _item(settings)
    with open_fabric_client(settings) as client:
        database = get_mirrored_database(client, workspace_id, item_id)
        report: dict[str, Any] = {
            "workspaceId": workspace_id,
            "itemId": item_id,
            "displayName": database.display_name,
            "landingZone": database.landing_zone,
            "mirroring": mirroring_status(client, workspace_id, item_id),
            "tables": [
                flatten_table_status(entry)
                for entry in tables_mirroring_status(client, workspace_id, item_id)
            ],
        }
    print(json.dumps(report, indent=2))
    return 0


def _item(settings: Settings) -> tuple[str, str]:
    return settings.require("FABRIC_WORKSPACE_ID"), settings.require("FABRIC_ITEM_ID")


def _print_settings(workspace_id: str, item_id: str, landing_zone: str) -> None:
    """The app settings that point this tool at the database, ready to paste."""
    print(f"LANDING_ZONE={landing_zone}")
    print(f"FABRIC_WORKSPACE_ID={workspace_id}")
    print(f"FABRIC_ITEM_ID={item_id}")
