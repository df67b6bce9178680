"""An in-process HTTP test double of the ADLS Gen2 (DFS) REST API, as OneLake serves it.

A test double, not an emulator: no DFS endpoint can run here (Azurite has none, OneLake is not
reachable). It serves exactly the requests ``azure-storage-file-datalake`` sends for the
landing-zone store, over TLS (the SDK refuses bearer tokens on plain http), with the service's
semantics that matter to us: conditional create/rename (``If-None-Match: *`` → 409
PathAlreadyExists), rename of a missing source (404 SourcePathNotFound) or into a missing parent
(404 RenameDestinationParentPathNotFound), append/flush (data invisible until flushed), ranged
reads, non-recursive listing, recursive delete. Every request is recorded for assertions, and
a response can be dropped after the work is done (a lost response, as a network can lose it).
A file system can be told to ignore some request headers as OneLake ignores the ones it does not
allow: the call goes ahead without them and the response lists them in
``x-ms-rejected-headers`` ("OneLake and ADLS Gen2 API parity", Microsoft Learn).

The SDK sends some operations to the blob endpoint (file system create, properties, download);
with an IP host both endpoints are this one server.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import re
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKEN = "fake-dfs-token"


class FakeCredential:
    """A TokenCredential whose token the fake server accepts."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        assert scopes == ("https://storage.azure.com/.default",), scopes
        now = int(datetime.datetime.now(datetime.UTC).timestamp())
        return AccessToken(TOKEN, now + 3600)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    """Decoded: ``/<file system>/<path>``."""
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names."""
    body_size: int


@dataclass
class _Entry:
    is_dir: bool
    data: bytes = b""
    pending: bytearray = field(default_factory=bytearray)
    etag: str = ""
    modified: str = ""


class _Error(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


class FakeDfs:
    """State: ``{file system: {path: entry}}``; one lock makes each request atomic."""

    def __init__(self, workdir: Path) -> None:
        self.requests: list[Recorded] = []
        self._drop_next: Callable[[Recorded], bool] | None = None
        self._ignored: dict[str, set[str]] = {}  # file system -> lower-case header names
        self._filesystems: dict[str, dict[str, _Entry]] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)
        self.ca_path = str(workdir / "fake-dfs.pem")
        context = _tls_context(workdir, self.ca_path)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def drop_next_response(self, matches: Callable[[Recorded], bool]) -> None:
        """Carry out the next matching request but hang up instead of answering it."""
        self._drop_next = matches

    def ignore_headers(self, file_system: str, *names: str) -> None:
        """Requests to ``file_system`` go ahead as if ``names`` were not sent, and their
        responses list the ones sent in ``x-ms-rejected-headers``."""
        with self._lock:
            self._ignored[file_system] = {name.lower() for name in names}

    def rejected(self, request: Recorded) -> list[str]:
        """The headers of ``request`` its file system ignores, as the response names them."""
        with self._lock:
            ignored = self._ignored.get(request.path.split("/")[1], set())
        names = sorted(name for name in request.headers if name in ignored)
        return ["-".join(part.capitalize() for part in name.split("-")) for name in names]

    def should_drop(self, request: Recorded) -> bool:
        with self._lock:
            if self._drop_next is not None and self._drop_next(request):
                self._drop_next = None
                return True
            return False

    def requests_for(self, file_system: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.split("/")[1] == file_system]

    # --- the service ---------------------------------------------------------------------

    def handle(
        self, recorded: Recorded, body: bytes, request: Recorded | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Serve ``request`` (``recorded`` less the headers ignored), record ``recorded``."""
        request = request or recorded
        with self._lock:
            self.requests.append(recorded)
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                raise _Error(401, "NoAuthenticationInformation")
            if "x-ms-version" not in request.headers:
                raise _Error(400, "MissingRequiredHeader")
            fs_name, _, path = request.path.lstrip("/").partition("/")
            query, method = request.query, request.method
            if not path:
                return self._file_system_op(method, fs_name, query)
            paths = self._filesystems.get(fs_name)
            if paths is None:
                raise _Error(404, "FilesystemNotFound")
            if method == "PUT" and "x-ms-rename-source" in request.headers:
                return self._rename(fs_name, paths, path, request)
            if method == "PUT" and query.get("resource") in ("file", "directory"):
                return self._create(paths, path, query["resource"] == "directory", request)
            if method == "PATCH" and query.get("action") == "append":
                entry = self._file(paths, path)
                if int(query["position"]) != len(entry.pending):
                    raise _Error(400, "InvalidFlushPosition")
                entry.pending += body
                return 202, {}, b""
            if method == "PATCH" and query.get("action") == "flush":
                entry = self._file(paths, path)
                if int(query["position"]) != len(entry.pending):
                    raise _Error(400, "InvalidFlushPosition")
                entry.data = bytes(entry.pending)
                self._touch(entry)
                return 200, self._entry_headers(entry), b""
            if method in ("GET", "HEAD") and path in paths:
                return self._read(paths[path], request, include_body=method == "GET")
            if method in ("GET", "HEAD"):
                raise _Error(404, "BlobNotFound")
            if method == "DELETE":
                # Path - Delete honours If-Match like every conditional DFS request.
                wanted = request.headers.get("if-match")
                if wanted and path in paths and paths[path].etag != wanted:
                    raise _Error(412, "ConditionNotMet")
                return self._delete(paths, path, query.get("recursive") == "true")
        raise _Error(400, f"UnsupportedOperation {method} {request.query}")

    def _file_system_op(
        self, method: str, fs_name: str, query: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "PUT" and query.get("restype") == "container":
            if fs_name in self._filesystems:
                raise _Error(409, "ContainerAlreadyExists")
            self._filesystems[fs_name] = {}
            return 201, {"ETag": self._new_etag()}, b""
        paths = self._filesystems.get(fs_name)
        if paths is None:
            raise _Error(404, "FilesystemNotFound")
        if method == "GET" and query.get("resource") == "filesystem":
            return self._list(paths, query)
        raise _Error(400, f"UnsupportedOperation {method} {query}")

    def _create(
        self, paths: dict[str, _Entry], path: str, is_dir: bool, request: Recorded
    ) -> tuple[int, dict[str, str], bytes]:
        existing = paths.get(path)
        if existing is not None and request.headers.get("if-none-match") == "*":
            raise _Error(409, "PathAlreadyExists")
        if existing is not None and existing.is_dir != is_dir:
            raise _Error(409, "PathConflict")
        self._make_parents(paths, path)
        entry = _Entry(is_dir=is_dir)
        self._touch(entry)
        paths[path] = entry
        return 201, self._entry_headers(entry), b""

    def _rename(
        self, fs_name: str, paths: dict[str, _Entry], target: str, request: Recorded
    ) -> tuple[int, dict[str, str], bytes]:
        if request.query.get("mode") != "legacy":
            raise _Error(400, "InvalidRenameMode")
        source_fs, _, source = (
            unquote(request.headers["x-ms-rename-source"]).lstrip("/").partition("/")
        )
        if source_fs != fs_name or source not in paths:
            raise _Error(404, "SourcePathNotFound")
        if request.headers.get("if-none-match") == "*" and target in paths:
            raise _Error(409, "PathAlreadyExists")
        target_parent = target.rpartition("/")[0]
        if target_parent and not (target_parent in paths and paths[target_parent].is_dir):
            raise _Error(404, "RenameDestinationParentPathNotFound")
        if target in paths and paths[target].is_dir:
            raise _Error(409, "DestinationPathIsBeingDeleted")
        for name in [source, *(p for p in paths if p.startswith(f"{source}/"))]:
            paths[target + name[len(source) :]] = paths.pop(name)
        return 201, {}, b""

    def _read(
        self, entry: _Entry, request: Recorded, *, include_body: bool
    ) -> tuple[int, dict[str, str], bytes]:
        headers = self._entry_headers(entry)
        headers["x-ms-blob-type"] = "BlockBlob"
        headers["x-ms-resource-type"] = "directory" if entry.is_dir else "file"
        if entry.is_dir:
            headers["x-ms-meta-hdi_isfolder"] = "true"
        data = entry.data
        status = 200
        wanted = request.headers.get("x-ms-range") or request.headers.get("range")
        if wanted and include_body:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
            assert match, wanted
            start = int(match.group(1))
            if start >= len(data):
                raise _Error(416, "InvalidRange")
            end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        headers["Content-Length"] = str(len(data))
        return status, headers, data if include_body else b""

    def _list(
        self, paths: dict[str, _Entry], query: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        folder = query.get("directory", "").strip("/")
        if folder and not (folder in paths and paths[folder].is_dir):
            raise _Error(404, "PathNotFound")
        recursive = query.get("recursive") == "true"
        prefix = f"{folder}/" if folder else ""
        listed = [
            {
                "name": name,
                "isDirectory": "true" if entry.is_dir else "false",
                "contentLength": str(len(entry.data)),
                "etag": entry.etag,
                "lastModified": entry.modified,
            }
            for name, entry in sorted(paths.items())
            if name.startswith(prefix) and (recursive or "/" not in name[len(prefix) :])
        ]
        body = json.dumps({"paths": listed}).encode()
        return 200, {"Content-Type": "application/json;charset=utf-8"}, body

    def _delete(
        self, paths: dict[str, _Entry], path: str, recursive: bool
    ) -> tuple[int, dict[str, str], bytes]:
        if path not in paths:
            raise _Error(404, "PathNotFound")
        children = [p for p in paths if p.startswith(f"{path}/")]
        if children and not recursive:
            raise _Error(409, "DirectoryNotEmpty")
        for name in [path, *children]:
            del paths[name]
        return 200, {}, b""

    def _file(self, paths: dict[str, _Entry], path: str) -> _Entry:
        entry = paths.get(path)
        if entry is None or entry.is_dir:
            raise _Error(404, "PathNotFound")
        return entry

    def _make_parents(self, paths: dict[str, _Entry], path: str) -> None:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder in paths and not paths[folder].is_dir:
                raise _Error(409, "PathConflict")
            if folder not in paths:
                paths[folder] = _Entry(is_dir=True)
                self._touch(paths[folder])

    def _new_etag(self) -> str:
        return f'"0x{next(self._etags):016X}"'

    def _touch(self, entry: _Entry) -> None:
        entry.etag = self._new_etag()
        entry.modified = formatdate(usegmt=True)

    @staticmethod
    def _entry_headers(entry: _Entry) -> dict[str, str]:
        return {"ETag": entry.etag, "Last-Modified": entry.modified}


def _handler(service: FakeDfs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: failures show up as assertion messages instead."""

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = urlsplit(self.path)
            request = Recorded(
                method=self.command,
                path=unquote(url.path),
                query={k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body_size=len(body),
            )
            rejected = service.rejected(request)
            # Recorded as sent; served as if the ignored headers were not there.
            served = request
            if rejected:
                kept = {
                    k: v for k, v in request.headers.items() if k not in map(str.lower, rejected)
                }
                served = replace(request, headers=kept)
            try:
                status, headers, payload = service.handle(request, body, served)
            except _Error as error:
                status, headers = error.status, {"x-ms-error-code": error.code}
                message = {"error": {"code": error.code, "message": error.code}}
                payload = b"" if self.command == "HEAD" else json.dumps(message).encode()
                headers["Content-Type"] = "application/json;charset=utf-8"
                headers["Content-Length"] = str(len(payload))
            if service.should_drop(request):
                self.close_connection = True
                return
            headers.setdefault("Content-Length", str(len(payload)))
            if rejected:
                headers["x-ms-rejected-headers"] = ",".join(rejected)
            headers["x-ms-request-id"] = "fake"
            headers["x-ms-version"] = request.headers.get("x-ms-version", "")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    return Handler


def _tls_context(workdir: Path, ca_path: str) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1, made now; clients trust it via ``ca_path``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-dfs")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    Path(ca_path).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path = workdir / "fake-dfs.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca_path, key_path)
    return context


@contextmanager
def running_fake_dfs() -> Iterator[FakeDfs]:
    with tempfile.TemporaryDirectory(prefix="fake-dfs-") as workdir:
        fake = FakeDfs(Path(workdir))
        fake.start()
        try:
            yield fake
        finally:
            fake.stop()
