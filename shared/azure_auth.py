"""Proving the configured Azure credential works before anything is written, in one line if not.

Without ``az login`` (or a service principal, or a managed identity) DefaultAzureCredential
tries nine credentials, logs a thirteen-line WARNING listing them all and raises an error with
the same list. A person needs one line: that AZURE_AUTH found no credential, and what to do.
The list stays one setting away: with LOG_LEVEL=DEBUG azure.identity logs it as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from shared.errors import ConfigError
from shared.redaction import redact
from shared.retry import one_line

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import ClientAuthenticationError

    from shared.config import AzureAuth

IDENTITY_LOGGER = "azure.identity"  # the package's loggers (its chained credential's among them)
_QUIET = threading.Lock()  # the logger's level is process-wide: one check changes it at a time

ADVICE = {
    "default": "sign in with `az login` (or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
    "AZURE_CLIENT_SECRET for a service principal, or AZURE_AUTH=managed-identity on Azure)",
    "service-principal": "check AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET",
    "managed-identity": "assign a managed identity to this app or VM (AZURE_CLIENT_ID names a "
    "user-assigned one), or use AZURE_AUTH=default after `az login`",
}


# What a credential chain's error says when no credential of it gave a token (azure.identity's
# chained.py: "<class> failed to retrieve a token from the included credentials.").
CHAIN_FAILED = "failed to retrieve a token from the included credentials"


def checked_credential(auth: AzureAuth, scope: str) -> TokenCredential:
    """``auth``'s credential, proven by taking one token for ``scope`` now; a ConfigError naming
    AZURE_AUTH when it cannot."""
    from azure.core.exceptions import ClientAuthenticationError

    credential = auth.credential()
    try:
        with quiet_credential_chain():
            credential.get_token(scope)
    except ClientAuthenticationError as error:
        raise credential_error(auth.mode, error) from None
    return credential


def credential_error(mode: str, error: ClientAuthenticationError) -> ConfigError:
    """One line for a credential that gave no token: the mode, the reason when it is not the
    chain's list of everything tried, and what to do."""
    reason = getattr(error, "message", None) or str(error)
    if mode == "default" and CHAIN_FAILED in reason:
        # The reason is the list of every credential the chain tried: said in a few words.
        problem = "no usable Azure credential (mode default: DefaultAzureCredential found none)"
    else:  # one credential's own refusal (an Entra AADSTS code says why): kept
        problem = f"no usable Azure credential for mode {mode}: {redact(one_line(reason))}"
    advice = ADVICE.get(mode, ADVICE["default"])
    return ConfigError("AZURE_AUTH", f"{problem}; {advice}; LOG_LEVEL=DEBUG shows what was tried")


@contextmanager
def quiet_credential_chain() -> Iterator[None]:
    """azure.identity's own warnings held back (below ERROR) for the block, unless DEBUG logging
    is on: a failed check raises one line of its own, and the SDK's list of every credential it
    tried would come before it."""
    logger = logging.getLogger(IDENTITY_LOGGER)
    with _QUIET:
        level = logger.level
        if logger.getEffectiveLevel() > logging.DEBUG:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)
