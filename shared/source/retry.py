"""Riding out transient MongoDB faults: which errors are worth another try, and for how long.

A failover, a node shutting down or a dropped connection ends an operation with an error that the
next attempt usually does not meet. The driver retries a read at most once, and never a
``getMore``; a partition that reads for an hour needs more. A `Retrier` retries transient errors
with exponential, jittered pauses until the fault has lasted MONGODB_RETRY_SECONDS without any
progress, then fails with one line (the budget itself is `shared.retry.RetryBudget`). Every
MongoDB error leaves here as that one line: with raw BSON documents as the driver's document
class, ``str()`` of a server error dumps the reply's bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import TypeVar

from pymongo.errors import (
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from shared.config import Settings
from shared.errors import MirrorError
from shared.redaction import redact
from shared.retry import RetryBudget, one_line

T = TypeVar("T")

_APPENDICES = (", full error: ", ", Timeout: ")  # where pymongo starts dumping replies/topology
# The timeouts PyMongo appends to every server's error, and the separator between the servers of a
# server-selection timeout.
_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")
_SERVER_SEPARATOR = re.compile(r",(?=\S+:\d+: )")


class ErrorCode(IntEnum):
    """MongoDB server error codes after which the same read can succeed (error_codes.yml)."""

    HOST_UNREACHABLE = 6
    HOST_NOT_FOUND = 7
    CURSOR_NOT_FOUND = 43  # the cursor died with its node or timed out; a new read resumes
    STALE_SHARD_VERSION = 63
    NETWORK_TIMEOUT = 89
    SHUTDOWN_IN_PROGRESS = 91
    FAILED_TO_SATISFY_READ_PREFERENCE = 133
    READ_CONCERN_MAJORITY_NOT_AVAILABLE_YET = 134
    STALE_EPOCH = 150
    PRIMARY_STEPPED_DOWN = 189
    RETRY_CHANGE_STREAM = 234
    EXCEEDED_TIME_LIMIT = 262
    SOCKET_EXCEPTION = 9001
    NOT_WRITABLE_PRIMARY = 10107
    INTERRUPTED_AT_SHUTDOWN = 11600
    INTERRUPTED_DUE_TO_REPL_STATE_CHANGE = 11602
    STALE_CONFIG = 13388
    NOT_PRIMARY_NO_SECONDARY_OK = 13435
    NOT_PRIMARY_OR_SECONDARY = 13436


TRANSIENT_CODES = frozenset(ErrorCode)
# Labels the server (or the driver) puts on errors it knows a retry can get past.
TRANSIENT_LABELS = ("RetryableReadError", "ResumableChangeStreamError")


def is_transient(error: PyMongoError) -> bool:
    """Network errors, NotPrimary and shutdown errors, and errors labelled retryable."""
    if isinstance(error, ConnectionFailure):  # closed connections, timeouts, NotPrimaryError
        return True
    if any(error.has_error_label(label) for label in TRANSIENT_LABELS):
        return True
    return isinstance(error, OperationFailure) and error.code in TRANSIENT_CODES


def describe(error: PyMongoError) -> str:
    """One line naming the error: ``ShutdownInProgress (91): <server message>``."""
    # A server's error reply (OperationFailure, NotPrimaryError) is read from its fields; the
    # driver's own text appends the whole reply, and with a timeout the whole topology too.
    details = getattr(error, "details", None)
    code = details.get("code") if isinstance(details, Mapping) else None
    if isinstance(code, int) and isinstance(details, Mapping):
        name = details.get("codeName") or _code_name(code)
        text = f"{name} ({code}): {details.get('errmsg') or _summary(error)}"
    elif isinstance(error, OperationFailure) and error.code is not None:
        text = f"{_code_name(error.code)} ({error.code}): {_summary(error)}"
    else:
        text = f"{type(error).__name__}: {_summary(error)}"
    return redact(one_line(text))


def _summary(error: PyMongoError) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    for appendix in _APPENDICES:
        text = text.split(appendix, 1)[0]
    text = _TIMEOUTS.sub("", text)
    if isinstance(error, ServerSelectionTimeoutError):
        text = _SERVER_SEPARATOR.sub("; ", text)
    return text


def _code_name(code: int | None) -> str:
    try:
        return ErrorCode(code).name if code is not None else "OperationFailure"
    except ValueError:
        return "OperationFailure"


class Retrier(RetryBudget):
    """Retries one step's MongoDB operations; the budget restarts whenever the step progresses.

    ``what`` names the step in messages ("db.orders partition 3"). A `budget_seconds` of 0
    turns retrying off.
    """

    def __init__(self, what: str, budget_seconds: float) -> None:
        super().__init__(what, budget_seconds, "MONGODB_RETRY_SECONDS")

    @classmethod
    def for_settings(cls, settings: Settings, what: str) -> Retrier:
        return cls(what, settings.integer("MONGODB_RETRY_SECONDS"))

    def call(self, operation: Callable[[], T]) -> T:
        """``operation()``, retried through transient errors."""
        while True:
            try:
                result = operation()
            except PyMongoError as error:
                self.recover(error)
            else:
                self.progressed()
                return result

    def recover(self, error: PyMongoError) -> None:
        """Pause before the next attempt, or raise a one-line MirrorError when ``error`` is not
        transient or has outlasted the budget."""
        if not is_transient(error):
            raise MirrorError(f"{self.what}: {describe(error)}") from None
        self.pause(describe(error))
