"""Log lines on stderr, each on a line of its own, in the CLI process and its workers alike."""

from __future__ import annotations

import logging
import sys

# Erase the whole terminal line and return to its start: a log line written while the progress
# display redraws its line in place replaces that line instead of running on after it.
CLEAR_LINE = "\x1b[2K\r"


def configure_logging(level: int, source: str = "%(name)s") -> None:
    """Send log records to stderr; ``source`` names who logged (a logger or a process)."""
    prefix = CLEAR_LINE if sys.stderr.isatty() else ""
    logging.basicConfig(
        level=level, format=f"{prefix}%(asctime)s %(levelname)s {source}: %(message)s"
    )
    quiet_sdk_logs(level)


# The Azure SDKs log every request and response, headers included, at INFO: thousands of lines
# for one snapshot, and in Functions a flood into Application Insights and its bill.
SDK_LOGGERS = ("azure", "azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def quiet_sdk_logs(level: int) -> None:
    """Keep the SDKs at WARNING unless the engine logs at DEBUG."""
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)
