"""The command-line front door: ``mongo-fabric-mirror <command>``.

Each command parses flags, loads settings, calls one pipeline function and maps the result to an
exit code. A user mistake prints one clear line (exit 2); nothing here prints a traceback for it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError
from pymongo.errors import PyMongoError

from shared.config import SPECS, Settings, load_settings
from shared.errors import ConfigError, MirrorError
from shared.landing_zone.stores.base import LandingZoneStore
from shared.redaction import redact
from shared.source.retry import describe

if TYPE_CHECKING:
    from shared.pipeline.local_snapshot import SnapshotSummary

Command = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        overrides = {name: getattr(args, name.lower(), None) for name in SPECS}
        settings = load_settings(os.environ, overrides)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        command: Command = args.command
        return command(args, settings)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except MirrorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except PyMongoError as error:  # outages, permissions: one line, no traceback, no raw BSON
        print(f"error: {describe(error)}", file=sys.stderr)
        return 1
    except AzureError as error:
        print(f"error: {type(error).__name__}: {redact(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.demo import run_demo
    from shared.pipeline.wiring import open_landing_zone_store

    _print_summary(run_demo(settings, sys.stderr))
    return _print_inspection(open_landing_zone_store(settings), None)


def _inspect(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.wiring import open_landing_zone_store

    return _print_inspection(open_landing_zone_store(settings), args.table)


def _print_inspection(store: LandingZoneStore, table: str | None) -> int:
    from shared.pipeline.inspect import format_report, inspect_landing_zone

    reports = inspect_landing_zone(store, table)
    if not reports:
        print(f"no tables in {store.description}")
    for report in reports:
        print(format_report(report))
    return 0 if all(report.conforms for report in reports) else 1


def _snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.local_snapshot import run_local_snapshot

    _print_summary(run_local_snapshot(settings))
    return 0


def _print_summary(summary: SnapshotSummary) -> None:
    rate = summary.documents / summary.seconds if summary.seconds else 0.0
    for plan in summary.tables:
        print(f"{plan.table}: {plan.phase}, {len(plan.ranges)} partitions")
    print(
        f"snapshot published {summary.documents:,} documents in {summary.files:,} files, "
        f"{summary.seconds:.1f}s ({rate:,.0f} docs/s), peak worker memory "
        f"{summary.peak_worker_mb:,.0f} MB"
    )


def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from shared.sandbox import serve_forever

    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", "must be between 0 and 65535")
    if args.oplog_size is not None and args.oplog_size < 1:
        raise ConfigError("--oplog-size", "must be a positive number of events")
    serve_forever(args.port, args.oplog_size)
    return 0


def _add_settings(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        spec = SPECS[name]
        default = f" (default {spec.default})" if spec.default else ""
        parser.add_argument(
            spec.flag,
            *spec.aliases,
            dest=name.lower(),
            metavar=name,
            help=f"{spec.help}{default} [env {name}]",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mongo-fabric-mirror",
        description="Mirror MongoDB collections into a Fabric open-mirroring landing zone.",
    )
    parser.add_argument(
        "--log-level", dest="log_level", metavar="LEVEL", help=SPECS["LOG_LEVEL"].help
    )
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="snapshot an embedded MongoDB sandbox of sample orders, then inspect"
    )
    demo.set_defaults(
        command=_demo, landing_zone="demo-landing-zone", state_store=".mirror-state/demo.db"
    )
    _add_settings(demo, "LANDING_ZONE", "STATE_STORE")

    inspect = commands.add_parser(
        "inspect", help="check a landing zone against the Fabric contract and replay its tables"
    )
    inspect.set_defaults(command=_inspect)
    inspect.add_argument("--table", help="only this table (<table> or <schema>.<table>)")
    _add_settings(inspect, "LANDING_ZONE", "AZURE_AUTH")

    snapshot = commands.add_parser(
        "snapshot", help="initial sync: publish every selected collection, resumably"
    )
    snapshot.set_defaults(command=_snapshot)
    _add_settings(
        snapshot,
        "MONGODB_URI",
        "MONGODB_DATABASE",
        "MONGODB_COLLECTIONS",
        "LANDING_ZONE",
        "STATE_STORE",
        "SNAPSHOT_PARTITIONS",
        "SNAPSHOT_WORKERS",
        "MONGODB_RETRY_SECONDS",
        "FILE_ROWS",
        "FILE_BYTES",
        "AZURE_AUTH",
    )

    sandbox = commands.add_parser(
        "sandbox", help="run the MongoDB wire-protocol sandbox (for trying and testing only)"
    )
    sandbox.set_defaults(command=_sandbox)
    sandbox.add_argument("--port", type=int, default=27017, help="TCP port (default 27017)")
    sandbox.add_argument(
        "--oplog-size", type=int, default=None, help="keep only the last N change events"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
