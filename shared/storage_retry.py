"""Riding out transient Azure Storage faults: which errors are worth another try, and their names.

A dropped connection, a lost answer, throttling or a server error usually passes; the Azure SDK
retries some of these itself, but never a request the service may have acted on when the SDK
cannot tell whether it did (a Table insert), and never for long. A `StorageRetrier` retries one
store operation with the budget policy of `shared.retry` for STORAGE_RETRY_SECONDS, then fails
with one line. Errors that are not transient (a conflict, a missing file, a refused credential)
leave unchanged: the stores' callers act on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from azure.core.exceptions import (
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.redaction import redact
from shared.retry import RetryBudget, one_line

T = TypeVar("T")

SETTING = "STORAGE_RETRY_SECONDS"
# Request timeout, throttling, and the server errors after which the same request can succeed.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(error: BaseException) -> bool:
    """Connections that failed or dropped (answer lost or cut short), and transient statuses."""
    # IncompleteReadError: a body cut short is a dropped connection although it had a 200 status.
    if isinstance(error, ServiceRequestError | ServiceResponseError | IncompleteReadError):
        return True
    if isinstance(error, ConnectionError):  # a reset met outside the SDK's own error mapping
        return True
    return isinstance(error, HttpResponseError) and error.status_code in TRANSIENT_STATUSES


def describe(error: BaseException) -> str:
    """One line naming a storage error: ``ResourceNotFoundError (ContainerNotFound): <reason>``.

    The service's reason rather than its XML reply; keys and SAS signatures are masked.
    """
    reason = getattr(error, "reason", None) or str(error)
    code = getattr(error, "error_code", None) or getattr(error, "status_code", None)
    detail = f" ({code})" if code else ""
    return redact(one_line(f"{type(error).__name__}{detail}: {reason}"))


class StorageRetrier(RetryBudget):
    """Retries one store operation through transient errors for ``budget_seconds``.

    One retrier per call: `retrying` then tells an attempt that an earlier attempt of the same
    call failed transiently, so its effect may have landed without an answer.
    """

    def __init__(self, what: str, budget_seconds: float) -> None:
        super().__init__(what, budget_seconds, SETTING)

    def call(self, operation: Callable[[], T]) -> T:
        """``operation()``, retried through transient errors; other errors propagate."""
        while True:
            try:
                return operation()
            except Exception as error:
                if not is_transient(error):
                    raise
                self.pause(describe(error))
