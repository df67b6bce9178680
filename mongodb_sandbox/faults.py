"""Fault injection modelled on MongoDB's `failCommand` fail point.

Tests configure it with the same admin command they would send to a real test-enabled server
(`{configureFailPoint: "failCommand", mode: {times: n}, data: {failCommands: [...], ...}}`), or
through `SandboxServer.fail_command`. Supported data fields: errorCode, errorLabels,
closeConnection, blockConnection/blockTimeMS and appName.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mongodb_sandbox.errors import CommandError, ErrorCode

# Commands the real fail point refuses to fail, so drivers can always connect and reset it.
EXEMPT = frozenset({"hello", "isMaster", "ismaster", "configureFailPoint"})
_WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})
# Codes MongoDB labels RetryableWriteError on writes and ResumableChangeStreamError on getMore.
RETRYABLE_CODES = frozenset(
    {
        ErrorCode.HOST_UNREACHABLE,
        ErrorCode.HOST_NOT_FOUND,
        ErrorCode.STALE_SHARD_VERSION,
        ErrorCode.NETWORK_TIMEOUT,
        ErrorCode.SHUTDOWN_IN_PROGRESS,
        ErrorCode.FAILED_TO_SATISFY_READ_PREFERENCE,
        ErrorCode.STALE_EPOCH,
        ErrorCode.PRIMARY_STEPPED_DOWN,
        ErrorCode.RETRY_CHANGE_STREAM,
        ErrorCode.EXCEEDED_TIME_LIMIT,
        ErrorCode.SOCKET_EXCEPTION,
        ErrorCode.NOT_WRITABLE_PRIMARY,
        ErrorCode.INTERRUPTED_AT_SHUTDOWN,
        ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
        ErrorCode.NOT_PRIMARY_NO_SECONDARY_OK,
        ErrorCode.NOT_PRIMARY_OR_SECONDARY,
    }
)


class CloseConnection(Exception):
    """Raised to make the server drop the client's connection without answering."""


@dataclass
class FailCommand:
    commands: frozenset[str]
    remaining: int | None
    error_code: int | None = None
    error_labels: tuple[str, ...] | None = None
    close_connection: bool = False
    block_ms: int = 0
    app_name: str | None = None


class FaultInjector:
    """Holds the active `failCommand` configuration and applies it to incoming commands."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: FailCommand | None = None
        self._after_checkout: FailCommand | None = None

    def configure(self, mode: Any, data: Mapping[str, Any]) -> None:
        """Apply a `configureFailPoint` request (mode "alwaysOn", "off" or {times: n})."""
        if mode == "off":
            self.set(None)
            return
        remaining = _times(mode)
        commands = data.get("failCommands")
        if not isinstance(commands, list) or not commands:
            raise CommandError(ErrorCode.BAD_VALUE, "data.failCommands must be a non-empty array")
        labels = data.get("errorLabels")
        self.set(
            FailCommand(
                commands=frozenset(commands),
                remaining=remaining,
                error_code=data.get("errorCode"),
                error_labels=tuple(labels) if labels is not None else None,
                close_connection=bool(data.get("closeConnection", False)),
                block_ms=int(data.get("blockTimeMS", 0)) if data.get("blockConnection") else 0,
                app_name=data.get("appName"),
            )
        )

    def configure_after_checkout(self, mode: Any, data: Mapping[str, Any]) -> None:
        """Apply `failGetMoreAfterCursorCheckout` (mode as for failCommand; data.errorCode).

        The server's fail point fails a getMore once its cursor is checked out, so the error
        is known to come from a change stream's getMore and gets ResumableChangeStreamError
        when its code is resumable (error_labels.cpp) — unlike failCommand, which fails the
        command before any cursor is found.
        """
        if mode == "off":
            with self._lock:
                self._after_checkout = None
            return
        remaining = _times(mode)
        code = data.get("errorCode")
        if not isinstance(code, int):
            raise CommandError(ErrorCode.BAD_VALUE, "data.errorCode must be an integer")
        with self._lock:
            self._after_checkout = FailCommand(
                commands=frozenset({"getMore"}), remaining=remaining, error_code=code
            )

    def check_checked_out(self, change_stream: bool) -> None:
        """Raise the `failGetMoreAfterCursorCheckout` error for a getMore whose cursor is out."""
        with self._lock:
            fail = self._after_checkout
            if fail is None:
                return
            if fail.remaining is not None:
                fail.remaining -= 1
                if fail.remaining <= 0:
                    self._after_checkout = None
        assert fail.error_code is not None
        resumable = change_stream and fail.error_code in RETRYABLE_CODES
        raise CommandError(
            fail.error_code,
            "Failing command via 'failGetMoreAfterCursorCheckout' failpoint",
            ("ResumableChangeStreamError",) if resumable else (),
        )

    def set(self, fail: FailCommand | None) -> None:
        with self._lock:
            self._active = fail

    def fail_command(
        self,
        commands: Iterable[str],
        *,
        error_code: int | None = None,
        times: int | None = 1,
        close_connection: bool = False,
        error_labels: Iterable[str] | None = None,
    ) -> None:
        self.set(
            FailCommand(
                commands=frozenset(commands),
                remaining=times,
                error_code=error_code,
                error_labels=tuple(error_labels) if error_labels is not None else None,
                close_connection=close_connection,
            )
        )

    def _take(self, command: str, app_name: str | None) -> FailCommand | None:
        with self._lock:
            fail = self._active
            if fail is None or command not in fail.commands or command in EXEMPT:
                return None
            if fail.app_name is not None and fail.app_name != app_name:
                return None
            if fail.remaining is not None:
                fail.remaining -= 1
                if fail.remaining <= 0:
                    self._active = None
            return fail

    def check(self, command: str, app_name: str | None) -> None:
        """Raise the configured failure if this command should fail now."""
        fail = self._take(command, app_name)
        if fail is None:
            return
        if fail.block_ms:
            time.sleep(fail.block_ms / 1000)
        if fail.close_connection:
            raise CloseConnection
        if fail.error_code is None:
            return
        labels = fail.error_labels
        if labels is None:
            labels = ()
            # No ResumableChangeStreamError here for a getMore: error_labels.cpp gives it only
            # when the failed command is known to be a change stream's (its cursor checked
            # out), and failCommand fails the getMore before that. The driver's spec test
            # "change stream does not resume if error does not contain
            # ResumableChangeStreamError" rests on this; failGetMoreAfterCursorCheckout
            # (configure_after_checkout) is the fault that gets the label.
            if fail.error_code in RETRYABLE_CODES and command in _WRITES:
                labels = ("RetryableWriteError",)
        raise CommandError(
            fail.error_code, "Failing command via 'failCommand' failpoint", tuple(labels)
        )


def _times(mode: Any) -> int | None:
    """How many commands a fail point set to ``mode`` fails: None for "alwaysOn" (the server's
    fail points share these modes; "off" is each caller's)."""
    if mode == "alwaysOn":
        return None
    if isinstance(mode, Mapping) and isinstance(mode.get("times"), int):
        return int(mode["times"])
    raise CommandError(ErrorCode.BAD_VALUE, "mode must be 'alwaysOn', 'off' or {times: <int>}")
