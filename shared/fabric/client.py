"""A small client for the Fabric REST API (``https://api.fabric.microsoft.com/v1``).

Built on azure-core's pipeline, so the bearer token, retries and TLS are the SDK's, not ours.
Fabric's conventions are handled here, once, for every call:

1. Throttling: 429 (and 5xx) are retried by azure-core's ``RetryPolicy`` a bounded number of
   times, waiting what ``Retry-After`` asks. When the retries run out the last answer is an
   ordinary error (step 4).
2. Long-running operations: 202 Accepted carries ``x-ms-operation-id`` (and ``Location``) and
   ``Retry-After``. We poll ``GET /operations/{id}`` at that interval until ``Succeeded`` or
   ``Failed``, within a deadline, then ``GET /operations/{id}/result`` for the created resource.
3. Access: 401/403 means the identity lacks its workspace role, or the tenant does not let
   service principals call Fabric. One line says what to grant.
4. Any other error: one line with Fabric's ``errorCode`` and message.

Every error is a ``MirrorError``: the CLI prints it as one line and exits 1.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.core.rest import HttpRequest, HttpResponse

from shared.errors import MirrorError
from shared.redaction import redact

logger = logging.getLogger(__name__)

FABRIC_SCOPE = "https://api.fabric.microsoft.com/.default"
# Bounded retries of throttled or failed requests (each waits Retry-After, or backs off).
RETRIES = 5
# A long-running operation is given this long before we stop waiting (it may still finish).
OPERATION_DEADLINE_SECONDS = 600
MAX_OPERATION_POLLS = 200
# Poll interval when a 202 or an operation state carries no Retry-After.
DEFAULT_POLL_SECONDS = 5.0

OPERATION_SUCCEEDED = "Succeeded"
OPERATION_FAILED = "Failed"

ACCESS_ADVICE = (
    "the identity needs the Contributor role (or higher) on the Fabric workspace; a service "
    "principal or managed identity also needs a Fabric admin to enable the tenant setting "
    "'Service principals can use Fabric APIs' for it"
)


class FabricError(MirrorError):
    """Fabric answered with an error, or an operation failed or did not finish in time."""


class FabricAccessError(FabricError):
    """401/403: the identity may not do this in the workspace."""


class FabricClient:
    """JSON calls to one Fabric REST API base URL with one credential."""

    def __init__(
        self,
        api_url: str,
        credential: TokenCredential,
        *,
        transport: HttpTransport | None = None,
    ) -> None:
        """``transport`` is for tests (a CA to trust, recorded sleeps); by default a verifying
        ``RequestsTransport``."""
        self._api = api_url.rstrip("/")
        self._transport = transport or RequestsTransport(connection_timeout=20, read_timeout=120)
        self._client: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
            self._api,
            policies=[
                HeadersPolicy({"Accept": "application/json"}),
                UserAgentPolicy(sdk_moniker="mongo-fabric-mirror"),
                RetryPolicy(retry_total=RETRIES, retry_status=RETRIES),
                # After the retry policy, so every attempt carries a fresh token.
                BearerTokenCredentialPolicy(credential, FABRIC_SCOPE),
            ],
            transport=self._transport,
        )

    def __enter__(self) -> FabricClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """The JSON answer (None if empty) of ``method {api}/{path}``, waiting out a 202.

        ``what`` names the action in error messages ("start mirroring of item X in workspace Y").
        """
        response = self._send(method, f"{self._api}/{path}", body=body, params=params)
        if response.status_code == 202:
            return self._wait_for_operation(response, what)
        _check(response, what)
        return _json(response, what)

    def _send(
        self, method: str, url: str, *, body: Any = None, params: dict[str, str] | None = None
    ) -> HttpResponse:
        return self._client.send_request(HttpRequest(method, url, json=body, params=params))

    def _wait_for_operation(self, accepted: HttpResponse, what: str) -> Any:
        state_url = self._operation_url(accepted, what)
        delay = _retry_after(accepted)
        waited = 0.0
        for _ in range(MAX_OPERATION_POLLS):
            self._transport.sleep(delay)
            waited += delay
            response = self._send("GET", state_url)
            _check(response, what)
            state = _json(response, what) or {}
            status = state.get("status")
            logger.debug("%s: operation %s", what, status)
            if status == OPERATION_SUCCEEDED:
                result = self._send("GET", f"{state_url}/result")
                _check(result, what)
                return _json(result, what)
            if status == OPERATION_FAILED:
                raise FabricError(f"{what} failed: {describe_error(state.get('error'))}")
            if waited >= OPERATION_DEADLINE_SECONDS:
                break
            delay = _retry_after(response)
        raise FabricError(
            f"{what} did not finish within {OPERATION_DEADLINE_SECONDS} s "
            f"(operation {state_url}); it may still complete: check the workspace"
        )

    def _operation_url(self, accepted: HttpResponse, what: str) -> str:
        operation_id = accepted.headers.get("x-ms-operation-id")
        if operation_id:
            return f"{self._api}/operations/{quote(operation_id, safe='')}"
        # Without an id, follow Location, but never send our token to another host.
        location = accepted.headers.get("Location", "")
        if urlsplit(location)[:2] == urlsplit(self._api)[:2]:
            return location.split("?")[0].rstrip("/")
        raise FabricError(f"{what}: Fabric accepted the request but gave no operation to follow")


def _check(response: HttpResponse, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    error = _error_body(response)
    code = error.get("errorCode") or ""
    if status in (401, 403):
        raise FabricAccessError(
            f"{what}: Fabric refused it (HTTP {status} {code}); {ACCESS_ADVICE}"
        )
    if status == 404:
        raise FabricError(f"{what}: not found (HTTP 404 {code}); check the workspace and item ids")
    raise FabricError(f"{what}: HTTP {status} {describe_error(error)}")


def _error_body(response: HttpResponse) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def describe_error(error: Any) -> str:
    """``errorCode: message`` of a Fabric error object, on one line."""
    if not isinstance(error, dict):
        return "no details"
    text = f"{error.get('errorCode') or 'error'}: {error.get('message') or 'no message'}"
    return redact(" ".join(str(text).split()))


def _json(response: HttpResponse, what: str) -> Any:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        raise FabricError(
            f"{what}: Fabric answered HTTP {response.status_code} without JSON"
        ) from None


def _retry_after(response: HttpResponse) -> float:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else DEFAULT_POLL_SECONDS
    except ValueError:
        return DEFAULT_POLL_SECONDS
