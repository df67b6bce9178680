"""A landing zone reached through the Blob API: Azure Storage, Azurite, OneLake blob endpoint."""

from __future__ import annotations

import contextlib
import threading

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobPrefix, BlobServiceClient, ContainerClient

from shared.landing_zone.stores._common import (
    SDK_OPTIONS,
    azure_errors,
    clean_path,
    is_folder_marker,
    join,
    relative,
    require_credential,
)
from shared.landing_zone.stores.base import StoredFile
from shared.landing_zone.stores.location import LandingZoneLocation


class BlobStore:
    """Blobs named ``<base_path>/<path>`` in one container; folders are name prefixes.

    Publishing relies on Put Blob / Put Block List being atomic: a blob is visible only once
    committed, and ``If-None-Match: *`` on that commit refuses to replace an existing one.
    """

    def __init__(
        self, container: ContainerClient, base_path: str, *, create_container: bool
    ) -> None:
        self._container = container
        self._base = clean_path(base_path, folder=True)
        self._container_ready = not create_container
        self._lock = threading.Lock()

    @classmethod
    def from_location(
        cls, location: LandingZoneLocation, credential: TokenCredential | None
    ) -> BlobStore:
        assert location.container is not None
        if location.connection_string:  # also Azurite's URL form, with the emulator's public key
            service = BlobServiceClient.from_connection_string(
                location.connection_string, **SDK_OPTIONS
            )
        else:
            service = BlobServiceClient(
                location.account_url or "", credential=require_credential(credential), **SDK_OPTIONS
            )
        return cls(
            service.get_container_client(location.container),
            location.base_path,
            create_container=not location.is_onelake,
        )

    @property
    def description(self) -> str:
        # The URL may carry a SAS from a connection string: drop the query.
        return f"blob container {join(self._container.url.split('?')[0], self._base)}"

    def _name(self, path: str, *, folder: bool = False) -> str:
        return join(self._base, clean_path(path, folder=folder))

    def _prepare_container(self) -> None:
        with self._lock:
            if not self._container_ready:
                with contextlib.suppress(ResourceExistsError):
                    self._container.create_container()
                self._container_ready = True

    def _upload(self, path: str, data: bytes, *, overwrite: bool) -> None:
        self._prepare_container()
        with azure_errors(path):
            self._container.upload_blob(self._name(path), data, overwrite=overwrite)

    def write(self, path: str, data: bytes) -> None:
        self._upload(path, data, overwrite=True)

    def write_new(self, path: str, data: bytes) -> None:
        self._upload(path, data, overwrite=False)

    def read(self, path: str) -> bytes:
        with azure_errors(path):
            return self._container.download_blob(self._name(path)).readall()

    def size(self, path: str) -> int | None:
        try:
            properties = self._container.get_blob_client(self._name(path)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return None if is_folder_marker(properties.metadata) else int(properties.size)

    def _children(self, folder: str) -> tuple[list[StoredFile], list[str]]:
        prefix = self._name(folder, folder=True)
        files: list[StoredFile] = []
        folders: set[str] = set()
        for item in self._container.walk_blobs(
            name_starts_with=f"{prefix}/" if prefix else None, include=["metadata"], delimiter="/"
        ):
            name = relative(self._base, item.name.rstrip("/"))
            # Hierarchical-namespace accounts (OneLake) also list each directory as a marker blob.
            if isinstance(item, BlobPrefix) or is_folder_marker(item.metadata):
                folders.add(name)
            else:
                files.append(StoredFile(name, int(item.size), str(item.etag)))
        return sorted(files, key=lambda file: file.path), sorted(folders)

    def list_files(self, folder: str) -> list[StoredFile]:
        with contextlib.suppress(ResourceNotFoundError):
            return self._children(folder)[0]
        return []

    def list_folders(self, folder: str) -> list[str]:
        with contextlib.suppress(ResourceNotFoundError):
            return self._children(folder)[1]
        return []

    def rename_new(self, source: str, target: str) -> None:
        # Blob has no rename. A conditional Put Blob of the source's bytes is atomic and refuses
        # to overwrite; a server-side copy would need source authorisation for Entra tokens and
        # can finish asynchronously, so it buys nothing for files of a few hundred MB at most.
        self._upload(target, self.read(source), overwrite=False)
        self.delete(source)

    def delete(self, path: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(self._name(path))

    def delete_unchanged(self, file: StoredFile) -> bool:
        try:
            self._container.delete_blob(
                self._name(file.path),
                etag=file.version,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

    def delete_empty_folder(self, folder: str) -> None:
        prefix = self._name(folder, folder=True)
        # In a flat namespace a folder is only a prefix, gone with its last blob; a hierarchical
        # one lists it as a marker blob and refuses to delete it while it holds anything.
        if not clean_path(folder, folder=True) or not self._is_folder(prefix):
            return
        try:
            self._container.delete_blob(prefix)
        except ResourceNotFoundError:
            return
        except HttpResponseError as error:
            if error.status_code != 409:
                raise

    def delete_folder(self, folder: str) -> None:
        prefix = self._name(folder, folder=True)
        try:
            names = [
                blob.name
                for blob in self._container.list_blobs(
                    name_starts_with=f"{prefix}/" if prefix else None
                )
            ]
        except ResourceNotFoundError:
            return
        # Deepest first, then the folder's own marker: a hierarchical namespace refuses to
        # delete a non-empty directory. The root itself stays (on OneLake it is protected).
        names.sort(reverse=True)
        if clean_path(folder, folder=True) and self._is_folder(prefix):
            names.append(prefix)
        for name in names:
            with contextlib.suppress(ResourceNotFoundError):
                self._container.delete_blob(name)

    def _is_folder(self, name: str) -> bool:
        try:
            properties = self._container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return False
        return is_folder_marker(properties.metadata)
