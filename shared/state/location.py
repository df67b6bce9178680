"""Where state lives, parsed from the STATE_STORE setting without touching network or disk.

Accepted forms (what makes an Azure Storage URL or connection string valid, and how each is
authenticated, is :mod:`shared.storage_location`'s, shared with LANDING_ZONE and QUEUE_STORAGE):
- a SQLite file: ``./state.db``, ``/abs/state.sqlite`` (suffix .db, .sqlite or .sqlite3), or
  ``sqlite:///abs/path`` (any name);
- an Azure Table Storage connection string, optionally with ``;TableName=<name>``
  (``UseDevelopmentStorage=true`` means Azurite on its default port);
- an account URL ``https://<account>.table.core.windows.net[/<table>]`` (any cloud's suffix),
  authenticated with the caller's token credential;
- Azurite's path-style URL ``http://127.0.0.1:<port>/devstoreaccount1[/<table>]`` (also
  ``localhost`` and ``[::1]``), authenticated with the emulator's published development key.
The table defaults to ``mirrorstate``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.errors import ConfigError
from shared.storage_location import (
    config_error,
    is_connection_string,
    parse_connection_string,
    parse_storage_url,
)

SETTING = "STATE_STORE"
DEFAULT_TABLE_NAME = "mirrorstate"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_OWN_NAMES = ("TableName",)
"""Connection-string names of this setting, taken out before the string reaches the SDK."""

_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")


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
            # Absolute: the description is recorded in table folders' _mirror-binding.json and
            # read from other folders later, where a relative path would name another file.
            assert self.path is not None
            return f"SQLite file {self.path.absolute()}"
        return f"Azure Table Storage table {self.table_name} at {self.endpoint}"

    @property
    def needs_token(self) -> bool:
        """Reached with a token credential: an Azure URL, not a file, key or emulator."""
        return self.kind == "table" and self.connection_string is None


def _problem(problem: str) -> ConfigError:
    return config_error(SETTING, problem)


def parse_state_location(location: str) -> StateLocation:
    text = location.strip()
    if not text:
        raise _problem("is empty; give a SQLite file path or an Azure Table Storage location")
    if text.lower().startswith("sqlite:"):
        return _parse_sqlite_url(text)
    if is_connection_string(text, _OWN_NAMES):
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
    url = parse_storage_url(SETTING, text, ("table",))
    if len(url.path) > 1:
        raise _problem(f"{url.safe_text}: a table account URL is {url.account_url}[/<table>]")
    return StateLocation(
        "table",
        endpoint=url.account_url,
        table_name=_table_name(url.path[0]) if url.path else DEFAULT_TABLE_NAME,
        connection_string=url.connection_string,
    )


def _parse_connection_string(text: str) -> StateLocation:
    parsed = parse_connection_string(SETTING, text, "table", _OWN_NAMES)
    return StateLocation(
        "table",
        endpoint=parsed.endpoint,
        table_name=_table_name(parsed.extras.get("tablename", DEFAULT_TABLE_NAME)),
        connection_string=parsed.sdk_text,
    )
