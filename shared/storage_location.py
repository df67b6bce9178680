"""Azure Storage locations: the one parser of connection strings and account URLs behind the
LANDING_ZONE, STATE_STORE and QUEUE_STORAGE settings. Pure: no network, no disk.

The settings' own forms (a folder, a SQLite file, a table or container name) live with each
setting; every rule about *where an Azure Storage account is and how to authenticate to it*
lives here, so the settings cannot disagree:

Connection strings (``Name=value;...``, as the Azure SDK's ``parse_connection_str`` reads them)
    Names are case-insensitive, each given at most once, with a non-empty value. Only Azure
    Storage's names and the setting's own extra names (``Container``/``Path``, ``TableName``) are
    accepted: a misspelt name is an error, not silently ignored. The SDK gets the string without
    the extra names. ``AccountKey`` (with ``AccountName``) or ``SharedAccessSignature`` is required.
    ``UseDevelopmentStorage=true`` (alone) means Azurite on its default ports with its published
    development key.
URLs
    ``https://<account>.<blob|dfs|queue|table>.core.windows.net`` (also the China and US Government
    clouds' suffixes and ``<account>.zNN.<service>.storage.azure.net`` DNS-zone endpoints), and the
    OneLake hosts ``[<region>-]onelake.<dfs|blob>.fabric.microsoft.com``, reached with a token
    credential; ``abfss://<filesystem>@<host>/<path>`` is the DFS spelling of the same.
    ``http://`` only for Azurite: a loopback host (127.0.0.1, localhost or [::1], all alike) with
    an explicit port and the ``devstoreaccount1`` path, reached with the published development key.
    No query (SAS token), fragment or user info: secrets belong in a connection string or a
    credential, never in a URL. Plain http to any other host is refused, in connection strings too.

Every error is a :class:`ConfigError` naming the setting, with keys, SAS tokens and passwords
masked.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast, get_args
from urllib.parse import unquote, urlsplit

from shared.errors import ConfigError
from shared.redaction import redact, redact_url

Service = Literal["blob", "dfs", "queue", "table"]
_SERVICES: tuple[Service, ...] = get_args(Service)
ConnectionService = Literal["blob", "queue", "table"]
"""Services a connection string names an endpoint for (DFS is reached through its URL only)."""

# Azurite's well-known development account: published in Microsoft's docs, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_PORTS: Mapping[ConnectionService, int] = {"blob": 10000, "queue": 10001, "table": 10002}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""As ``urlsplit(...).hostname`` spells them: ``[::1]`` arrives as ``::1``."""

_ACCOUNT = r"[a-z0-9]{3,24}"  # a storage account name
_ACCOUNT_NAME = re.compile(_ACCOUNT)
_ACCOUNT_HOSTS = (
    re.compile(
        rf"{_ACCOUNT}\.(blob|dfs|queue|table)"
        r"\.core\.(?:windows\.net|chinacloudapi\.cn|usgovcloudapi\.net)"
    ),
    re.compile(rf"{_ACCOUNT}\.z[0-9]{{2}}\.(blob|dfs|queue|table)\.storage\.azure\.net"),
)
_ONELAKE_HOST = re.compile(r"(?:[a-z0-9-]+-)?onelake\.(dfs|blob)\.fabric\.microsoft\.com")

_STORAGE_NAMES = {
    name.lower(): name
    for name in (
        "DefaultEndpointsProtocol",
        "AccountName",
        "AccountKey",
        "SharedAccessSignature",
        "EndpointSuffix",
        "UseDevelopmentStorage",
        *(
            f"{service}{secondary}Endpoint"
            for service in ("Blob", "Queue", "Table", "File")
            for secondary in ("", "Secondary")
        ),
    )
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_LONGEST_ECHOED_NAME = 32  # Azure Storage's longest name, DefaultEndpointsProtocol, has 24
_NAME_VALUE_START = re.compile(r"\s*[A-Za-z][A-Za-z0-9]*\s*=")


def config_error(setting: str, problem: str) -> ConfigError:
    """The error for a bad storage setting, with anything secret in ``problem`` masked."""
    return ConfigError(setting, redact(problem))


def azurite_connection_string(endpoints: Mapping[ConnectionService, str]) -> str:
    """An SDK connection string for Azurite at ``endpoints``, with the published key."""
    named = "".join(f"{service.capitalize()}Endpoint={url};" for service, url in endpoints.items())
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"{named}"
    )


def is_onelake_host(host: str) -> bool:
    """OneLake's workspaces exist already: they are never created by us."""
    return bool(_ONELAKE_HOST.fullmatch(host.lower()))


# --- connection strings ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionString:
    """A validated storage connection string, for one service."""

    endpoint: str
    """The service's primary endpoint, without query or trailing slash: fit for a message."""
    extras: Mapping[str, str]
    """The setting's own names (lower-case) and their values, e.g. ``{"container": "lz"}``."""
    sdk_text: str = field(repr=False)
    """What the Azure SDK's ``from_connection_string`` gets: without the extras. A secret."""


def is_connection_string(text: str, extra_names: Collection[str] = ()) -> bool:
    """Whether ``text`` is meant as a connection string: ``Name=...`` with one name we know.

    A known name is required so that a folder called ``a=b`` is still a folder.
    """
    if not _NAME_VALUE_START.match(text):
        return False
    known = _STORAGE_NAMES.keys() | {name.lower() for name in extra_names}
    names = {part.partition("=")[0].strip().lower() for part in text.split(";") if "=" in part}
    return bool(names & known)


def parse_connection_string(
    setting: str, text: str, service: ConnectionService, extra_names: Collection[str] = ()
) -> ConnectionString:
    extras_wanted = {name.lower(): name for name in extra_names}
    values: dict[str, str] = {}
    storage_parts: list[str] = []
    parts = [part.strip() for part in text.split(";") if part.strip()]
    for number, part in enumerate(parts, start=1):
        name, equals, value = (piece.strip() for piece in part.partition("="))
        # Never echo the part itself: a malformed part may well be a pasted key.
        if not equals or not value or not _NAME.fullmatch(name):
            raise config_error(setting, f"connection string part {number} is not Name=value")
        key = name.lower()
        if key in values:
            raise config_error(setting, f"connection string sets {name} twice")
        if key not in _STORAGE_NAMES and key not in extras_wanted:
            own = " or ".join(extras_wanted.values())
            # A long "name" is more likely a pasted key than a misspelling: not echoed.
            shown = repr(name) if len(name) <= _LONGEST_ECHOED_NAME else f"in part {number}"
            raise config_error(
                setting,
                f"connection string name {shown} is neither an Azure Storage one"
                + (f" nor {own}" if own else ""),
            )
        values[key] = value
        if key not in extras_wanted:
            storage_parts.append(f"{name}={value}")
    extras = {key: values.pop(key) for key in extras_wanted if key in values}
    if "usedevelopmentstorage" in values:
        return _development_storage(setting, values, service, extras)
    for key, url in values.items():
        if key.endswith("endpoint"):
            _check_endpoint(setting, _STORAGE_NAMES[key], url)
    endpoint = values.get(f"{service}endpoint") or _derived_endpoint(setting, values, service)
    if "accountkey" in values and "accountname" not in values:
        raise config_error(setting, "the connection string has an AccountKey but no AccountName")
    if "accountkey" not in values and "sharedaccesssignature" not in values:
        raise config_error(
            setting, "the connection string has neither AccountKey nor SharedAccessSignature"
        )
    return ConnectionString(
        endpoint=endpoint.split("?")[0].rstrip("/"),
        extras=extras,
        sdk_text=";".join(storage_parts) + ";",
    )


def _development_storage(
    setting: str, values: Mapping[str, str], service: ConnectionService, extras: dict[str, str]
) -> ConnectionString:
    if values["usedevelopmentstorage"].lower() != "true" or len(values) > 1:
        raise config_error(
            setting, "UseDevelopmentStorage=true stands alone: no other Azure Storage names"
        )
    endpoints = {
        name: f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}" for name, port in AZURITE_PORTS.items()
    }
    return ConnectionString(endpoints[service], extras, azurite_connection_string(endpoints))


def _derived_endpoint(setting: str, values: Mapping[str, str], service: str) -> str:
    account = values.get("accountname")
    if account is None:
        raise config_error(
            setting,
            f"the connection string has neither {service.capitalize()}Endpoint nor AccountName",
        )
    if not _ACCOUNT_NAME.fullmatch(account.lower()):
        raise config_error(setting, "AccountName must be 3-24 lower-case letters and digits")
    protocol = values.get("defaultendpointsprotocol", "https").lower()
    suffix = values.get("endpointsuffix", "core.windows.net")
    endpoint = f"{protocol}://{account}.{service}.{suffix}"
    _check_endpoint(setting, "the endpoint from DefaultEndpointsProtocol and AccountName", endpoint)
    return endpoint


def _check_endpoint(setting: str, name: str, url: str) -> None:
    """An endpoint named in a connection string: a URL, plain http only to a loopback host.

    Its query may hold the SAS (the SDK accepts that), so it is never echoed.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise config_error(setting, f"{name} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise config_error(setting, f"{name} must be an https:// URL")
    if "@" in parts.netloc:
        raise config_error(setting, f"{name} must not carry user info")
    if parts.scheme.lower() == "http" and host not in LOOPBACK_HOSTS:
        raise config_error(
            setting,
            f"{name}: plain http is only accepted for a local emulator on a loopback address "
            "(127.0.0.1, localhost or [::1])",
        )


# --- URLs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageUrl:
    """A validated storage URL, split into its account and the path below it."""

    service: Service
    account_url: str
    """``https://<host>[:<port>]``, or for Azurite ``http://<loopback>:<port>/devstoreaccount1``."""
    path: tuple[str, ...]
    """Decoded path segments below the account (container or table, then folders)."""
    safe_text: str
    """The URL as given, fit for a message."""
    onelake: bool = False
    connection_string: str | None = field(default=None, repr=False)
    """Azurite's, with the published key; ``None``: authenticate with a token credential."""

    @property
    def is_emulator(self) -> bool:
        return self.connection_string is not None


def parse_storage_url(setting: str, text: str, services: tuple[Service, ...]) -> StorageUrl:
    """``text`` as a URL of one of ``services`` (Azurite serves blob, queue and table)."""
    safe = redact_url(text)
    try:
        parts = urlsplit(text.strip())
        scheme = parts.scheme.lower()
        if scheme == "abfss" and "dfs" in services:
            # abfss://<filesystem>@<host>/<path> is https://<host>/<filesystem>/<path>.
            filesystem, at, netloc = parts.netloc.rpartition("@")
            if not at or not filesystem:
                raise config_error(setting, f"{safe}: expected abfss://<filesystem>@<host>/<path>")
            scheme = "https"
            parts = parts._replace(scheme=scheme, netloc=netloc, path=f"/{filesystem}{parts.path}")
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        raise config_error(setting, f"{safe} is not a valid URL") from None
    if not scheme:
        raise config_error(setting, f"{safe!r} is neither a URL nor a storage connection string")
    if scheme not in ("http", "https"):
        raise config_error(setting, f"{safe}: unsupported URL scheme {scheme!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise config_error(
            setting,
            f"{safe}: a URL must not carry a query string (SAS token), fragment or user info; "
            "authenticate with a credential, or use a connection string",
        )
    segments = tuple(unquote(segment) for segment in parts.path.split("/") if segment)
    if any(segment in (".", "..") or "/" in segment for segment in segments):
        raise config_error(setting, f"{safe}: the path must not contain '.', '..' or '%2F'")
    netloc = _netloc(host, port)
    if scheme == "http" or host in LOOPBACK_HOSTS:
        return _emulator_url(setting, safe, scheme, host, port, segments, services)
    if onelake := _ONELAKE_HOST.fullmatch(host):
        service = cast(Service, onelake.group(1))  # the pattern admits only dfs or blob
        if service in services:
            return StorageUrl(service, f"https://{netloc}", segments, safe, onelake=True)
    for pattern in _ACCOUNT_HOSTS:
        if (account := pattern.fullmatch(host)) and account.group(1) in services:
            service = cast(Service, account.group(1))  # the pattern admits only services
            return StorageUrl(service, f"https://{netloc}", segments, safe)
    raise config_error(setting, f"{safe}: not {_describe(services)}")


def _emulator_url(
    setting: str,
    safe: str,
    scheme: str,
    host: str,
    port: int | None,
    segments: tuple[str, ...],
    services: tuple[Service, ...],
) -> StorageUrl:
    form = f"http://127.0.0.1:<port>/{AZURITE_ACCOUNT}/..."
    if host not in LOOPBACK_HOSTS:
        raise config_error(
            setting,
            f"{safe}: plain http is only accepted for a local emulator on a loopback address "
            "(127.0.0.1, localhost or [::1])",
        )
    if scheme != "http" or port is None:
        raise config_error(
            setting, f"{safe}: a local emulator on a loopback address is reached as {form}"
        )
    if not segments or segments[0] != AZURITE_ACCOUNT:
        raise config_error(
            setting,
            f"{safe}: an emulator URL is {form}; use a connection string for other accounts",
        )
    served = [service for service in AZURITE_PORTS if service in services]
    if not served:
        raise config_error(setting, f"{safe}: not {_describe(services)}")
    account_url = f"http://{_netloc(host, port)}/{AZURITE_ACCOUNT}"
    return StorageUrl(
        served[0],
        account_url,
        segments[1:],
        safe,
        connection_string=azurite_connection_string({served[0]: account_url}),
    )


def _netloc(host: str, port: int | None) -> str:
    bracketed = f"[{host}]" if ":" in host else host  # an IPv6 address
    return bracketed if port is None else f"{bracketed}:{port}"


def _describe(services: tuple[Service, ...]) -> str:
    kinds = "/".join(service for service in _SERVICES if service in services)
    onelake = {"dfs", "blob"} & set(services)
    return (
        f"{'a OneLake, ' if onelake else 'an '}Azure Storage {kinds} account or local emulator "
        f"address: https://<account>.{kinds.split('/')[0]}.core.windows.net/... or "
        f"http://127.0.0.1:<port>/{AZURITE_ACCOUNT}/..."
    )
