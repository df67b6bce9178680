"""The command-line front door: ``mongo-fabric-mirror <command>``.

Each command parses flags, loads settings, calls one pipeline function and maps the result to an
exit code. A user mistake prints one clear line (exit 2); nothing here prints a traceback for it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError
from pymongo.errors import PyMongoError

from shared.config import SPECS, Settings, load_settings
from shared.errors import ConfigError, MirrorError
from shared.fabric.commands import add_fabric_parser
from shared.landing_zone.stores.base import LandingZoneStore
from shared.logs import configure_logging
from shared.redaction import redact
from shared.source.retry import describe
from shared.storage_retry import describe as describe_storage_error

if TYPE_CHECKING:
    from shared.pipeline.local_snapshot import SnapshotSummary

Command = Callable[[argparse.Namespace, Settings], int]
AGAINST_LANDING_ZONE = "landing-zone"  # verify --against: the landing zone's replay
AGAINST_DELTA = "delta"  # verify --against: the Delta tables


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        overrides = {name: getattr(args, name.lower(), None) for name in SPECS}
        settings = load_settings(os.environ, overrides)
        configure_logging(settings.log_level)
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
    except AzureError as error:  # the service's reason on one line, not its XML reply
        print(f"error: {describe_storage_error(error)}", file=sys.stderr)
        return 1
    except OSError as error:  # a disk full or a folder made read-only mid-run
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.demo import DEMO_QUERY, replicate_and_query, run_demo
    from shared.pipeline.verify import format_report
    from shared.pipeline.wiring import open_landing_zone_store

    sizes = {name: getattr(args, name) for name in ("orders", "seconds", "rate")}
    for name, value in sizes.items():
        if value is not None and value < (1 if name == "rate" else 0):
            raise ConfigError(f"--{name}", "must be a positive number")
    result = run_demo(
        settings, sys.stderr, **{name: value for name, value in sizes.items() if value is not None}
    )
    changes = sum(result.changes.values())
    print(
        f"demo: applied {changes:,} changes while mirroring; the mirror read {result.events:,} "
        f"change events in {result.live.windows + result.drain.windows:,} windows (an update "
        f"that changes nothing makes no event); {result.seconds:.0f}s in all"
    )
    print(format_report(result.verify))
    store = open_landing_zone_store(settings)
    inspected = _print_inspection(store, None)
    landing_zone = settings.require("LANDING_ZONE")
    print(
        f"the mirrored tables are in {store.description} (<database>.schema/<collection>/, "
        f"parquet files as Fabric reads them); state in {settings.require('STATE_STORE')}. "
        f"Look again: {_program()} inspect --landing-zone {shlex.quote(landing_zone)}"
    )
    replicated = replicate_and_query(store, args.tables)
    summary = replicated.summary
    print(
        f"replicate: applied {summary.files:,} files ({summary.rows:,} rows) to Delta tables "
        f"and moved them to _ProcessedFiles/, as Fabric's replicator would. DuckDB over the "
        f"Delta table {replicated.table}:\n  {DEMO_QUERY}"
    )
    print("  " + " | ".join(replicated.columns))
    for row in replicated.rows:
        print("  " + " | ".join(str(value) for value in row))
    print(
        f"Replicate again: {_program()} replicate --landing-zone {shlex.quote(landing_zone)} "
        f"--tables {shlex.quote(args.tables)} --once"
    )
    verified = result.verify.equal and inspected == 0
    return 0 if verified and not summary.failed and replicated.rows else 1


PROGRAM = "mongo-fabric-mirror"


def _program() -> str:
    """The command as a hint should print it, runnable from the current folder as shown: the
    console script beside this interpreter (``.venv/bin/mongo-fabric-mirror`` from the checkout,
    which works whether or not the venv is activated), else the bare name."""
    script = Path(sys.executable).with_name(PROGRAM)
    if not script.is_file():
        return PROGRAM
    shown = script.relative_to(Path.cwd()) if script.is_relative_to(Path.cwd()) else script
    return shlex.quote(str(shown))


def _inspect(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.wiring import open_landing_zone_store

    return _print_inspection(open_landing_zone_store(settings, must_exist=True), args.table)


def _print_inspection(store: LandingZoneStore, table: str | None) -> int:
    from shared.pipeline.inspect import format_report, inspect_landing_zone

    reports = inspect_landing_zone(store, table)
    if not reports:
        # Not a pass: an empty folder is most often a LANDING_ZONE that points one level off.
        raise MirrorError(
            f"no tables in {store.description}: nothing to inspect (LANDING_ZONE is the folder "
            "holding the <database>.schema folders)"
        )
    for report in reports:
        print(format_report(report))
    return 0 if all(report.conforms for report in reports) else 1


def _snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.local_snapshot import run_local_snapshot

    # A requested stop (systemctl stop, Ctrl-C) is a clean stop: exit 0, resumable.
    stop = _stop_on_signal("the files being published")
    _print_summary(run_local_snapshot(settings, stop=stop))
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.local_mirror import count, run_mirror

    summary = run_mirror(settings, once=args.once, stop=_stop_on_signal("the window in hand"))
    rebuilt = f"; rebuilt {', '.join(summary.rebuilt)}" if summary.rebuilt else ""
    if summary.snapshot_stopped:
        print(
            f"snapshot stopped by request for {', '.join(summary.snapshot_stopped)}: the next "
            "run resumes it after the last published _id",
            file=sys.stderr,
        )
    causes = "".join(f", {n:,} {cause}" for cause, n in summary.rereads.most_common())
    rereads = f"{summary.rereads.total():,} read again after a failure{causes}"
    print(
        f"mirrored {count(summary.events, 'change event')} in {count(summary.windows, 'window')} "
        f"({rereads}){rebuilt}"
    )
    return 0


def _stop_on_signal(work_in_hand: str) -> threading.Event:
    """An event SIGINT or SIGTERM sets: the command stops after ``work_in_hand``, never in it."""
    stop = threading.Event()

    def stop_after_work_in_hand(signum: int, frame: object) -> None:
        print(f"stopping after {work_in_hand}", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, stop_after_work_in_hand)
    signal.signal(signal.SIGTERM, stop_after_work_in_hand)
    return stop


def _print_summary(summary: SnapshotSummary) -> None:
    from shared.pipeline.plans import Phase

    rate = summary.documents / summary.seconds if summary.seconds else 0.0
    for plan in summary.tables:
        done = f"{len(plan.completed)} of " if plan.phase == Phase.SNAPSHOTTING else ""
        print(f"{plan.table}: {plan.phase}, {done}{len(plan.ranges)} partitions")
    if summary.stopped:
        print("snapshot stopped by request: run again to resume after the last published _id")
    print(
        f"snapshot published {summary.documents:,} documents in {summary.files:,} files, "
        f"{summary.seconds:.1f}s ({rate:,.0f} docs/s), peak worker memory "
        f"{summary.peak_worker_mb:,.0f} MB"
    )


def _status(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from shared.pipeline.status import collect_status, format_status
    from shared.pipeline.wiring import open_state

    state = open_state(settings, must_exist=True)
    try:
        report = collect_status(settings, state)
    finally:
        state.close()
    if args.json or not sys.stdout.isatty():
        print(json.dumps(report, indent=2))
    else:
        print(format_status(report))
    return 0


def _resync(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.rebuild import resync_table
    from shared.pipeline.wiring import open_publisher

    publisher = open_publisher(settings)
    try:
        table, count = resync_table(publisher, args.table)
    finally:
        publisher.state.close()
    print(
        f"{table.label}: folder and state dropped (rebuild #{count}); the first snapshot or run "
        "after Fabric dropped the old table mirrors it afresh"
    )
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from shared.pipeline.verify import format_report, verify_mirror
    from shared.pipeline.wiring import open_landing_zone_store
    from shared.source.client import connect

    if args.against == AGAINST_DELTA:
        return _verify_delta(args, settings)
    if args.tables is not None:
        raise ConfigError("--tables", f"is read only with --against {AGAINST_DELTA}")
    # A landing zone that is not there is a wrong LANDING_ZONE, as for inspect: not five tables
    # that "differ" for want of a folder, which reads like data loss.
    store = open_landing_zone_store(settings, must_exist=True)
    with connect(settings.require("MONGODB_URI")) as client:
        database = client[settings.require("MONGODB_DATABASE")]
        report = verify_mirror(store, database, settings.collections())
    print(format_report(report))
    return 0 if report.equal else 1


def _replicate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.delta_tables import parse_tables_to_write
    from shared.pipeline.wiring import open_landing_zone_store
    from shared.replicator.engine import DAY_SECONDS, Replicator, every_nth, never

    tables = parse_tables_to_write(args.tables)
    every = args.ready_to_delete_every
    if every is not None and every < 1:
        raise ConfigError("--ready-to-delete-every", "must be a positive number of files")
    replicator = Replicator(
        open_landing_zone_store(settings, must_exist=True),
        tables,
        retention_seconds=settings.integer("REPLICATOR_RETENTION_DAYS") * DAY_SECONDS,
        ready_to_delete=never if every is None else every_nth(every),
    )
    if args.once:
        summary = replicator.run_once()
    else:
        stop = _stop_on_signal("the pass in hand")
        summary = replicator.run(stop, settings.integer("REPLICATOR_INTERVAL_SECONDS"))
    for state in sorted(replicator.load_state().values(), key=lambda state: state.folder):
        error = f": {state.error}" if state.error else ""
        print(
            f"{state.table}: {state.status}, files applied up to {state.applied:,}, "
            f"{state.rows:,} rows{error}"
        )
    dropped = f"; dropped {', '.join(summary.dropped)}" if summary.dropped else ""
    print(
        f"replicate: applied {summary.files:,} files ({summary.rows:,} rows), moved "
        f"{summary.moved:,}, deleted {summary.deleted:,} after their retention{dropped}; "
        f"Delta tables in {tables.description} (<schema>/<table>)"
    )
    return 1 if summary.failed else 0


def _verify_delta(args: argparse.Namespace, settings: Settings) -> int:
    """``verify --against delta``: the source against the Delta tables users query."""
    from deltalake.exceptions import DeltaError

    from shared.delta_tables import DeltaTables, parse_tables_location, with_token
    from shared.pipeline.verify import format_report, verify_delta
    from shared.pipeline.wiring import checked_credential
    from shared.source.client import connect

    if args.tables is None:
        raise ConfigError(
            "--tables",
            f"is required with --against {AGAINST_DELTA}: the folder holding <schema>/<table> "
            "Delta tables (OneLake: .../<workspace>/<mirroredDatabase>/Tables)",
        )
    location, needs_token = parse_tables_location(args.tables)
    uri, database_name = settings.require("MONGODB_URI"), settings.require("MONGODB_DATABASE")
    credential = checked_credential(settings) if needs_token else None
    if credential is not None:
        location = with_token(location, credential)
    tables = DeltaTables(location, credential)
    tables.check_exists()
    try:
        with connect(uri) as client:
            report = verify_delta(tables, client[database_name], settings.collections())
    except DeltaError as error:  # delta-rs's reason (a refused token, a corrupt log) on one line
        raise MirrorError(f"reading the Delta tables in {tables.description}: {error}") from None
    print(format_report(report))
    return 0 if report.equal else 1


def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from mongodb_sandbox import serve_forever

    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", "must be between 0 and 65535")
    if args.oplog_size is not None and args.oplog_size < 1:
        raise ConfigError("--oplog-size", "must be a positive number of events")
    if args.routers is not None and args.routers < 1:
        raise ConfigError("--routers", "must be a positive number of routers")
    if args.routers is not None and args.port and args.port + args.routers - 1 > 65535:
        raise ConfigError("--routers", f"{args.routers} ports from {args.port} pass 65535")
    serve_forever(args.port, args.oplog_size, args.routers or 0)
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


def _add_log_level(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    """--log-level before or after the command. After it, no default: a subcommand's default
    would overwrite the value given before the command."""
    spec = SPECS["LOG_LEVEL"]
    parser.add_argument(
        spec.flag,
        dest="log_level",
        metavar="LOG_LEVEL",
        default=default,
        help=f"{spec.help} (default {spec.default}) [env LOG_LEVEL]",
    )


# What an initial sync reads; `run` takes these and the change-window settings.
SNAPSHOT_SETTINGS = (
    "MONGODB_URI",
    "MONGODB_DATABASE",
    "MONGODB_COLLECTIONS",
    "LANDING_ZONE",
    "STATE_STORE",
    "SNAPSHOT_PARTITIONS",
    "SNAPSHOT_WORKERS",
    "MONGODB_RETRY_SECONDS",
    "STORAGE_RETRY_SECONDS",
    "FILE_ROWS",
    "FILE_BYTES",
    "AZURE_AUTH",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Mirror MongoDB collections into a Fabric open-mirroring landing zone.",
    )
    _add_log_level(parser, default=None)
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="mirror an embedded MongoDB sandbox of sample orders live while a generator "
        "changes it, then drain, verify and inspect",
    )
    demo.set_defaults(
        command=_demo, landing_zone="demo-landing-zone", state_store=".mirror-state/demo.db"
    )
    _add_settings(demo, "LANDING_ZONE", "STATE_STORE")
    demo.add_argument(
        "--tables",
        default="demo-tables",
        help="where the demo's replicator writes the Delta tables (default demo-tables)",
    )
    # The demo's sizes, for tests and quick tries (hidden: its defaults, in demo.py, are the demo).
    demo.add_argument("--orders", type=int, help=argparse.SUPPRESS)
    demo.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    demo.add_argument("--rate", type=int, help=argparse.SUPPRESS)

    inspect = commands.add_parser(
        "inspect", help="check a landing zone against the Fabric contract and replay its tables"
    )
    inspect.set_defaults(command=_inspect)
    inspect.add_argument(
        "--table",
        help="only this table: <database>.<collection> or <collection>, with the collection's "
        "own name (a folder no collection maps to: its folder name)",
    )
    _add_settings(inspect, "LANDING_ZONE", "STORAGE_RETRY_SECONDS", "AZURE_AUTH")

    snapshot = commands.add_parser(
        "snapshot", help="initial sync: publish every selected collection, resumably"
    )
    snapshot.set_defaults(command=_snapshot)
    _add_settings(
        snapshot,
        *SNAPSHOT_SETTINGS,
    )

    run = commands.add_parser(
        "run",
        help="mirror continuously: snapshot what needs it, then stream changes until stopped",
    )
    run.set_defaults(command=_run)
    run.add_argument(
        "--once",
        action="store_true",
        help="exit 0 once every table is snapshotted and every change so far is published",
    )
    _add_settings(
        run,
        *SNAPSHOT_SETTINGS,
        "CHANGE_WINDOW_EVENTS",
        "CHANGE_WINDOW_BYTES",
        "CHANGE_WINDOW_SECONDS",
        "CHANGE_AWAIT_MS",
        "CHANGE_LEASE_SECONDS",
        "PROGRESS_SECONDS",
        "REPLICATOR_BACKLOG_FILES",
        "REPLICATOR_BACKLOG_CHECK_SECONDS",
    )

    status = commands.add_parser(
        "status",
        help="per table: phase, snapshot progress, changes, lag, files, rebuilds and errors",
    )
    status.set_defaults(command=_status)
    status.add_argument("--json", action="store_true", help="JSON even on a terminal")
    _add_settings(
        status,
        "STATE_STORE",
        "STORAGE_RETRY_SECONDS",
        "FABRIC_WORKSPACE_ID",
        "FABRIC_ITEM_ID",
        "AZURE_AUTH",
    )

    resync = commands.add_parser(
        "resync",
        help="rebuild one table: drop its folder and state so the next snapshot or run "
        "mirrors it afresh",
    )
    resync.set_defaults(command=_resync)
    resync.add_argument(
        "--table",
        required=True,
        help="<database>.<collection>, with the collection's own name (db._tmp, not its "
        "folder name db.%%5Ftmp)",
    )
    _add_settings(resync, "LANDING_ZONE", "STATE_STORE", "STORAGE_RETRY_SECONDS", "AZURE_AUTH")

    add_fabric_parser(commands, _add_settings)

    replicate = commands.add_parser(
        "replicate",
        help="a stand-in for Fabric's replicator: apply the landing zone's files to Delta "
        "tables, move applied files to _ProcessedFiles/, delete them after the retention",
    )
    replicate.set_defaults(command=_replicate)
    replicate.add_argument(
        "--tables",
        required=True,
        help="where the Delta tables go, one at <schema>/<table> (as OneLake's Tables/): "
        "a local folder, an Azurite URL or a storage connection string with ;Container=",
    )
    replicate.add_argument(
        "--once", action="store_true", help="one pass over every table, then exit"
    )
    replicate.add_argument(
        "--ready-to-delete-every",
        type=int,
        metavar="N",
        help="move every N-th file to _FilesReadyToDelete/ instead of _ProcessedFiles/ "
        "(Fabric uses both; default: _ProcessedFiles/ only)",
    )
    _add_settings(
        replicate,
        "LANDING_ZONE",
        "REPLICATOR_RETENTION_DAYS",
        "REPLICATOR_INTERVAL_SECONDS",
        "STORAGE_RETRY_SECONDS",
        "AZURE_AUTH",
    )

    verify = commands.add_parser(
        "verify",
        help="compare each mirrored table (replayed landing zone, or Delta table) with its "
        "collection now, value by value",
    )
    verify.set_defaults(command=_verify)
    verify.add_argument(
        "--against",
        choices=(AGAINST_LANDING_ZONE, AGAINST_DELTA),
        default=AGAINST_LANDING_ZONE,
        help="what to compare the source with: the landing zone replayed as Fabric would "
        f"(default, for local use), or the Delta tables users query ({AGAINST_DELTA}, with "
        "--tables)",
    )
    verify.add_argument(
        "--tables",
        metavar="LOCATION",
        help="with --against delta: the folder holding the <schema>/<table> Delta tables (a local "
        "folder, OneLake's https://onelake.dfs.fabric.microsoft.com/<workspace>/<mirroredDatabase>"
        "/Tables, a blob URL or a storage connection string with ;Container=)",
    )
    _add_settings(
        verify,
        "MONGODB_URI",
        "MONGODB_DATABASE",
        "MONGODB_COLLECTIONS",
        "LANDING_ZONE",
        "STORAGE_RETRY_SECONDS",
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
    sandbox.add_argument(
        "--routers",
        type=int,
        default=None,
        help="a sharded cluster's stand-in: N routers (mongos) on ports from --port, one URI",
    )
    for command in commands.choices.values():
        _add_log_level(command)  # every setting is a flag after the command too
    return parser


if __name__ == "__main__":
    sys.exit(main())
