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
from enum import Enum
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
# Every Azure Storage answer carries it ("Common REST API response headers", Storage services).
REQUEST_ID_HEADER = "x-ms-request-id"


def is_transient(error: BaseException) -> bool:
    """Connections that failed or dropped (answer lost or cut short), and transient statuses."""
    # IncompleteReadError: a body cut short is a dropped connection although it had a 200 status.
    if isinstance(error, ServiceRequestError | ServiceResponseError | IncompleteReadError):
        return True
    if isinstance(error, ConnectionError):  # a reset met outside the SDK's own error mapping
        return True
    return isinstance(error, HttpResponseError) and error.status_code in TRANSIENT_STATUSES


def describe(error: BaseException) -> str:
    """One line naming an Azure error, as ``shared.source.retry.describe`` does MongoDB's:
    ``HttpResponseError (AuthorizationFailure, HTTP 403): <message>; request id <id>``.

    The service's message, never its XML or JSON reply: the SDK's ``str()`` of an error is its
    message, then ``RequestId:``/``Time:``/``ErrorCode:`` lines, then the whole body. The
    ``x-ms-request-id`` is what Azure support asks for. Keys and SAS signatures are masked.
    """
    code = getattr(error, "error_code", None)
    if isinstance(code, Enum):  # the SDKs' StorageErrorCode/TableErrorCode: the service's text
        code = code.value
    status = getattr(error, "status_code", None)
    labels = [str(code)] if code else []
    if status:
        labels.append(f"HTTP {status}")
    detail = f" ({', '.join(labels)})" if labels else ""
    message = getattr(error, "message", None) or str(error)
    reason = one_line(str(message)).rstrip(".") or str(getattr(error, "reason", None) or "")
    response = getattr(error, "response", None)
    request_id = response.headers.get(REQUEST_ID_HEADER) if response is not None else None
    request = f"; request id {request_id}" if request_id else ""
    return redact(one_line(f"{type(error).__name__}{detail}: {reason}{request}"))


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
