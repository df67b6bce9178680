"""A landing zone reached through the ADLS Gen2 (DFS) API: OneLake, or any ADLS Gen2 account.

This is the path Microsoft documents for open mirroring: stage under a ``_`` name, then publish
with the DFS rename, which is atomic and takes ``If-None-Match: *`` for the destination.

About OneLake and the SDK's rename: Microsoft's open-mirroring Python sample found that
``rename_file`` did not work against OneLake and sends a raw ``PUT <target>?mode=legacy`` with
``x-ms-rename-source: /<workspace>/<item>/Files/...``. The sample's clients put
``<workspace>/<item>/Files`` into the *account URL*, so the SDK, which builds the rename source as
``/<file system>/<path>``, dropped those segments. We address OneLake as the service documents it:
file system = workspace, path = ``<item>/Files/LandingZone/...``, and send the sample's request
(plus the destination condition) through the SDK's own authenticated, retrying pipeline;
tests/landing_zone/stores assert that request on the wire.

OneLake accepts the ADLS Gen2 headers but may ignore some: it "ignores the banned headers,
returns them in a new x-ms-rejected-headers response header, and permits the rest of the call"
(Microsoft Learn, "OneLake and Azure Data Lake Storage (ADLS) Gen2 API parity",
https://learn.microsoft.com/fabric/onelake/onelake-api-parity). A conditional request whose
condition was ignored has been carried out unconditionally: every conditional request here
checks that header, and a condition ignored once stops every later conditional write of this
store (ConditionIgnored) rather than risk replacing published files.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.pipeline import PipelineResponse
from azure.storage.filedatalake import DataLakeServiceClient, FileSystemClient

from shared.errors import MirrorError
from shared.landing_zone.stores._common import (
    SDK_OPTIONS,
    azure_errors,
    clean_path,
    is_folder_marker,
    join,
    parent,
    relative,
    require_credential,
    staging_path,
)
from shared.landing_zone.stores.base import StoredFile
from shared.landing_zone.stores.location import LandingZoneLocation

# Destination condition for a create or rename that must never replace an existing path.
_IF_ABSENT: dict[str, Any] = {"match_condition": MatchConditions.IfMissing}
REJECTED_HEADERS = "x-ms-rejected-headers"
T = TypeVar("T")


class ConditionIgnored(MirrorError):
    """The service carried out a conditional request without its condition."""


class _RejectedHeaders:
    """A ``raw_response_hook``: the header names the responses to one call list as ignored."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __call__(self, response: PipelineResponse) -> None:
        value = response.http_response.headers.get(REJECTED_HEADERS) or ""
        self.names |= {name.strip().lower() for name in value.split(",") if name.strip()}


class OneLakeStore:
    """Paths ``<base_path>/<path>`` in one DFS file system (a OneLake workspace)."""

    def __init__(
        self, file_system: FileSystemClient, base_path: str, *, create_file_system: bool
    ) -> None:
        self._fs = file_system
        self._base = clean_path(base_path, folder=True)
        self._fs_ready = not create_file_system
        self._lock = threading.Lock()
        self._condition_ignored: str | None = None  # why conditional requests are refused

    @classmethod
    def connect(
        cls,
        account_url: str,
        file_system: str,
        base_path: str,
        credential: TokenCredential,
        *,
        create_file_system: bool,
        **client_options: Any,
    ) -> OneLakeStore:
        """``client_options`` add to or override SDK_OPTIONS (tests: ``connection_verify``)."""
        service = DataLakeServiceClient(
            account_url, credential=credential, **{**SDK_OPTIONS, **client_options}
        )
        return cls(
            service.get_file_system_client(file_system),
            base_path,
            create_file_system=create_file_system,
        )

    @classmethod
    def from_location(
        cls, location: LandingZoneLocation, credential: TokenCredential | None
    ) -> OneLakeStore:
        assert location.account_url is not None and location.filesystem is not None
        return cls.connect(
            location.account_url,
            location.filesystem,
            location.base_path,
            require_credential(credential),
            create_file_system=not location.is_onelake,
        )

    @property
    def description(self) -> str:
        return f"DFS file system {join(self._fs.url.split('?')[0], self._base)}"

    def _full(self, path: str, *, folder: bool = False) -> str:
        return join(self._base, clean_path(path, folder=folder))

    def _prepare_file_system(self) -> None:
        with self._lock:
            if not self._fs_ready:
                with contextlib.suppress(ResourceExistsError):
                    self._fs.create_file_system()
                self._fs_ready = True

    def _conditional(self, header: str, what: str, call: Callable[..., T]) -> T:
        """``call(raw_response_hook=...)``, a request carrying ``header``; ConditionIgnored if the
        service says it ignored it (and from then on before any conditional request is sent)."""
        if self._condition_ignored is not None:
            raise ConditionIgnored(self._condition_ignored)
        rejected = _RejectedHeaders()
        result = call(raw_response_hook=rejected)
        if header.lower() in rejected.names:
            self._condition_ignored = (
                f"{self.description} carried out {what} without its {header} condition (it "
                f"answered {REJECTED_HEADERS}: {', '.join(sorted(rejected.names))}), so it cannot "
                "refuse to replace or remove a file that changed; the mirror stops publishing "
                "here rather than risk that again. This request may already have replaced a "
                "published file: check the table with `mongo-fabric-mirror inspect --table "
                "<table>` and resync it if it does not conform. Publish to a OneLake or ADLS "
                "Gen2 endpoint that honours conditional requests (OneLake documents ignoring "
                "only headers of actions it does not allow, such as ACLs and encryption scopes)."
            )
            raise ConditionIgnored(self._condition_ignored)
        return result

    def _rename(self, source: str, target: str, *, if_absent: bool) -> None:
        """DFS rename (``mode=legacy``, atomic), optionally refusing to replace ``target``."""
        # Not the public rename_file: it builds the source header as quote(unquote(path)), which
        # corrupts names containing "%" (MongoDB allows them). _rename_path is the SDK's own
        # wrapper of Path - Create with x-ms-rename-source; the wire tests pin its request.
        rename_source = f"/{quote(self._fs.file_system_name)}/{quote(self._full(source))}"
        client = self._fs.get_file_client(self._full(target))
        with azure_errors(source, target):
            if not if_absent:
                client._rename_path(rename_source)
                return
            self._conditional(
                "If-None-Match",
                f"the rename of {source} to {target}",
                lambda **hook: client._rename_path(rename_source, **_IF_ABSENT, **hook),
            )

    def _publish(self, path: str, data: bytes, *, if_absent: bool) -> None:
        # Create + append + flush leave a 0-byte, then partial, file behind them: do that under
        # a staging name so the final name only ever appears complete, by rename.
        self._prepare_file_system()
        staged = staging_path(clean_path(path))
        staging_client = self._fs.get_file_client(self._full(staged))
        if data:
            staging_client.upload_data(data, overwrite=True)
        else:
            # upload_data sends no request at all for empty data.
            staging_client.create_file()
        # A rename whose answer is lost raises here (the SDK does not retry it, see SDK_OPTIONS):
        # RetryingStore retries the whole write, whose rename then meets the file it published.
        try:
            self._rename(staged, path, if_absent=if_absent)
        except BaseException:
            self.delete(staged)
            raise

    def write(self, path: str, data: bytes) -> None:
        self._publish(path, data, if_absent=False)

    def write_new(self, path: str, data: bytes) -> None:
        if self._condition_ignored is not None:  # before anything is staged
            raise ConditionIgnored(self._condition_ignored)
        self._publish(path, data, if_absent=True)

    def read(self, path: str) -> bytes:
        with azure_errors(path):
            return self._fs.get_file_client(self._full(path)).download_file().readall()

    def size(self, path: str) -> int | None:
        try:
            properties = self._fs.get_file_client(self._full(path)).get_file_properties()
        except ResourceNotFoundError:
            return None
        return None if is_folder_marker(properties.metadata) else int(properties.size)

    def _children(self, folder: str) -> list[tuple[str, bool, int, str]]:
        """(path from the root, is a directory, size, ETag) of each entry directly in ``folder``."""
        prefix = self._full(folder, folder=True)
        try:
            return sorted(
                (
                    relative(self._base, item.name),
                    bool(item.is_directory),
                    item.content_length or 0,
                    str(item.etag),
                )
                for item in self._fs.get_paths(path=prefix or None, recursive=False)
            )
        except ResourceNotFoundError:
            return []

    def list_files(self, folder: str) -> list[StoredFile]:
        return [
            StoredFile(path, size, etag)
            for path, is_dir, size, etag in self._children(folder)
            if not is_dir
        ]

    def list_folders(self, folder: str) -> list[str]:
        return [path for path, is_dir, _, _ in self._children(folder) if is_dir]

    def rename_new(self, source: str, target: str) -> None:
        # The DFS rename fails if the destination's parent is missing; create it only when the
        # rename leaves the source's folder, and without replacing an existing one.
        target_folder = parent(clean_path(target))
        if target_folder != parent(clean_path(source)) and target_folder:
            directory = self._fs.get_directory_client(self._full(target_folder))
            with contextlib.suppress(ResourceExistsError):
                self._conditional(
                    "If-None-Match",
                    f"the creation of folder {target_folder}",
                    lambda **hook: directory.create_directory(**_IF_ABSENT, **hook),
                )
        self._rename(source, target, if_absent=True)

    def delete(self, path: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._fs.get_file_client(self._full(path)).delete_file()

    def delete_unchanged(self, file: StoredFile) -> bool:
        client = self._fs.get_file_client(self._full(file.path))
        try:
            self._conditional(
                "If-Match",
                f"the deletion of {file.path} (unless changed)",
                lambda **hook: client.delete_file(
                    etag=file.version, match_condition=MatchConditions.IfNotModified, **hook
                ),
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

    def delete_empty_folder(self, folder: str) -> None:
        if not clean_path(folder, folder=True) or self._children(folder):
            return
        # The SDK deletes directories recursively only, so emptiness is checked by the listing
        # just above: two calls, where a file written in between would go with the folder.
        with contextlib.suppress(ResourceNotFoundError):
            self._fs.get_directory_client(self._full(folder, folder=True)).delete_directory()

    def delete_folder(self, folder: str) -> None:
        if clean_path(folder, folder=True):
            with contextlib.suppress(ResourceNotFoundError):
                self._fs.get_directory_client(self._full(folder, folder=True)).delete_directory()
            return
        # The root (OneLake's LandingZone) stays: empty it entry by entry.
        for path, is_dir, _, _ in self._children(""):
            if is_dir:
                self.delete_folder(path)
            else:
                self.delete(path)
