"""Where state lives, parsed from the STATE_STORE setting without touching network or disk.

Accepted forms:
- a SQLite file: ``./state.db``, ``/abs/state.sqlite`` (suffix .db, .sqlite or .sqlite3), or
  ``sqlite:///abs/path`` (any name);
- an Azure Table Storage connection string, optionally with ``;TableName=<name>``
  (``UseDevelopmentStorage=true`` means Azurite on its default port);
- an account URL ``https://<account>.table.core.windows.net[/<table>]`` (any cloud's suffix),
  authenticated with the caller's token credential;
- Azurite's path-style URL ``http://127.0.0.1:<port>/devstoreaccount1[/<table>]`` (loopback only),
  authenticated with the emulator's published development key.
The table defaults to ``mirrorstate``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.redaction import redact

SETTING = "STATE_STORE"
DEFAULT_TABLE_NAME = "mirrorstate"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

# Azurite's well-known development account: published in Microsoft's docs, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_AZURITE_DEFAULT_ENDPOINT = f"http://127.0.0.1:10002/{AZURITE_ACCOUNT}"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")
_ACCOUNT_HOST = re.compile(r"[a-z0-9]{3,24}\.table\.[a-z0-9.-]+")
_CONNECTION_STRING_START = re.compile(r"[A-Za-z]+=")


@dataclass(frozen=True)
class StateLocation:
    """A parsed STATE_STORE. Its repr and description never contain a key or SAS."""

    kind: Literal["sqlite", "table"]
    path: Path | None = None
    endpoint: str | None = None
    table_name: str | None = None
    # Set for connection strings (and Azurite); None means "authenticate with a token credential".
    connection_string: str | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        if self.kind == "sqlite":
            return f"SQLite file {self.path}"
        return f"Azure Table Storage table {self.table_name} at {self.endpoint}"


def _problem(problem: str) -> ConfigError:
    return ConfigError(SETTING, redact(problem))


def parse_state_location(location: str) -> StateLocation:
    text = location.strip()
    if not text:
        raise _problem("is empty; give a SQLite file path or an Azure Table Storage location")
    if text.lower().startswith("sqlite:"):
        return _parse_sqlite_url(text)
    if _CONNECTION_STRING_START.match(text):
        return _parse_connection_string(text)
    if "://" in text:
        return _parse_url(text)
    if text.lower().endswith(SQLITE_SUFFIXES):
        return StateLocation("sqlite", path=Path(text).expanduser())
    raise _problem(
        f"{text!r} is not a SQLite file (ending {', '.join(SQLITE_SUFFIXES)}), a sqlite:/// URL, "
        "an Azure Table Storage connection string or a table account URL"
    )


def _parse_sqlite_url(text: str) -> StateLocation:
    if not text.lower().startswith("sqlite:///") or len(text) == len("sqlite:///"):
        raise _problem(f"{text!r}: a SQLite URL is sqlite:///<absolute path>")
    return StateLocation("sqlite", path=Path(text[len("sqlite://") :]))


def _table_name(name: str) -> str:
    if not _TABLE_NAME.fullmatch(name):
        raise _problem(
            f"table name {name!r} must be 3-63 letters and digits, starting with a letter"
        )
    return name


def _parse_url(text: str) -> StateLocation:
    try:
        url = urlsplit(text)
        host = url.hostname or ""
        port = url.port
    except ValueError as error:
        raise _problem(f"{text!r} is not a valid URL: {error}") from None
    if url.query or url.fragment or url.username or url.password:
        raise _problem(
            "the table URL must not carry a query, SAS token or user info; use a connection "
            "string or a credential instead"
        )
    segments = [segment for segment in url.path.split("/") if segment]
    if url.scheme == "https":
        if not _ACCOUNT_HOST.fullmatch(host) or len(segments) > 1:
            raise _problem(f"{text!r}: expected https://<account>.table.core.windows.net[/<table>]")
        endpoint = f"https://{url.netloc}"
        return StateLocation("table", endpoint=endpoint, table_name=_table_from_path(segments))
    if url.scheme == "http":
        if host not in _LOOPBACK_HOSTS or port is None:
            raise _problem(f"{text!r}: plain http is only for Azurite on a loopback address")
        if not segments or segments[0] != AZURITE_ACCOUNT or len(segments) > 2:
            raise _problem(
                f"{text!r}: expected http://127.0.0.1:<port>/{AZURITE_ACCOUNT}[/<table>]"
            )
        return _azurite(f"http://{url.netloc}/{AZURITE_ACCOUNT}", _table_from_path(segments[1:]))
    raise _problem(f"{text!r}: unsupported URL scheme {url.scheme!r}")


def _table_from_path(segments: list[str]) -> str:
    return _table_name(segments[0]) if segments else DEFAULT_TABLE_NAME


def _azurite(endpoint: str, table_name: str) -> StateLocation:
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"TableEndpoint={endpoint};"
    )
    return StateLocation(
        "table", endpoint=endpoint, table_name=table_name, connection_string=connection_string
    )


def _parse_connection_string(text: str) -> StateLocation:
    settings: dict[str, str] = {}
    kept: list[str] = []
    for segment in filter(None, (part.strip() for part in text.split(";"))):
        name, equals, value = segment.partition("=")
        name = name.strip().lower()
        if not equals or not name or not value:
            raise _problem(f"connection string segment {segment!r} is not Name=value")
        if name in settings:
            raise _problem(f"connection string sets {name!r} twice")
        settings[name] = value.strip()
        if name != "tablename":
            kept.append(segment)
    table_name = _table_name(settings.pop("tablename", DEFAULT_TABLE_NAME))
    if settings == {"usedevelopmentstorage": "true"}:
        return _azurite(_AZURITE_DEFAULT_ENDPOINT, table_name)
    if "accountkey" not in settings and "sharedaccesssignature" not in settings:
        raise _problem("the connection string has neither AccountKey nor SharedAccessSignature")
    endpoint = settings.get("tableendpoint")
    if endpoint is None:
        if "accountname" not in settings:
            raise _problem("the connection string has neither TableEndpoint nor AccountName")
        protocol = settings.get("defaultendpointsprotocol", "https")
        suffix = settings.get("endpointsuffix", "core.windows.net")
        endpoint = f"{protocol}://{settings['accountname']}.table.{suffix}"
    return StateLocation(
        "table",
        endpoint=endpoint.split("?")[0].rstrip("/"),
        table_name=table_name,
        connection_string=";".join(kept),
    )
