"""The TCP server: accepts connections, frames messages, and hands commands to the `Sandbox`.

One thread per connection, as drivers keep few connections open. A malformed message gets an
error reply (or, when even its length is nonsense, a closed connection); it never stops the server.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from mongodb_sandbox import wire
from mongodb_sandbox.change_streams import MAX_EVENT_BYTES
from mongodb_sandbox.commands import MAX_MESSAGE_SIZE, Connection, Sandbox, encode_reply
from mongodb_sandbox.errors import CommandError, ErrorCode
from mongodb_sandbox.faults import CloseConnection
from shared.errors import ConfigError

logger = logging.getLogger(__name__)

SET_NAME = "sandbox"
# Headroom over maxMessageSizeBytes for the command envelope around a full batch of documents.
_MAX_INCOMING = MAX_MESSAGE_SIZE + 16 * 1024 * 1024


class SandboxServer:
    """A MongoDB-compatible sandbox listening on TCP (a single-member replica set "sandbox").

    `oplog_size` keeps only the last N change events (None: unlimited); `max_event_bytes` is the
    size above which a change event is "too large" (16 MiB like MongoDB; tests may lower it);
    `split_large_events=False` answers as a server before 6.0.9 does, which has no
    `$changeStreamSplitLargeEvent` stage (40324 Unrecognized pipeline stage name).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        oplog_size: int | None = None,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
        split_large_events: bool = True,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._oplog_size = oplog_size
        self._max_event_bytes = max_event_bytes
        self._split_large_events = split_large_events
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._connection_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self.port = 0
        self.sandbox: Sandbox | None = None

    @property
    def uri(self) -> str:
        """A connection string for PyMongo (direct connection to the set's only member)."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def replica_set_uri(self) -> str:
        """A connection string with replica-set discovery (`replicaSet=sandbox`)."""
        return f"mongodb://{self.host}:{self.port}/?replicaSet={SET_NAME}"

    def start(self) -> SandboxServer:
        """Bind, start accepting in a background thread, and return once listening."""
        listener = socket.create_server((self.host, self._requested_port), backlog=128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self.sandbox = Sandbox(
            address=f"{self.host}:{self.port}",
            set_name=SET_NAME,
            oplog_size=self._oplog_size,
            max_event_bytes=self._max_event_bytes,
            split_large_events=self._split_large_events,
        )
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"sandbox-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and wake any waiting change stream."""
        if self._listener is None:
            return
        assert self.sandbox is not None
        self.sandbox.stopping.set()
        with self.sandbox.condition:
            self.sandbox.condition.notify_all()
        # close() alone does not wake a thread blocked in accept(); shutdown() does.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._listener = None
        self.drop_connections()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test hooks ------------------------------------------------------------------------------

    def fail_command(
        self,
        commands: str | Iterable[str],
        *,
        error_code: int | None = None,
        times: int | None = 1,
        close_connection: bool = False,
        error_labels: Iterable[str] | None = None,
    ) -> None:
        """Make the next `times` matching commands fail (None: until `clear_faults`)."""
        names = [commands] if isinstance(commands, str) else list(commands)
        self._state().faults.fail_command(
            names,
            error_code=error_code,
            times=times,
            close_connection=close_connection,
            error_labels=error_labels,
        )

    def clear_faults(self) -> None:
        self._state().faults.set(None)
        self._state().faults.configure_after_checkout("off", {})

    def drop_connections(self) -> None:
        """Close every client connection now, as a network failure would."""
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()

    def _state(self) -> Sandbox:
        if self.sandbox is None:
            raise RuntimeError("the sandbox server is not started")
        return self.sandbox

    # -- connections -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by stop()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._clients_lock:
                self._clients.add(client)
            threading.Thread(
                target=self._serve, args=(client,), name="sandbox-connection", daemon=True
            ).start()

    def _serve(self, client: socket.socket) -> None:
        connection = Connection(next(self._connection_ids))
        try:
            while True:
                message = self._read_message(client)
                if message is None:
                    return
                reply = self._respond(connection, *message)
                if reply is not None:
                    client.sendall(reply)
        except (CloseConnection, OSError):
            pass
        finally:
            with self._clients_lock:
                self._clients.discard(client)
            client.close()

    def _respond(
        self, connection: Connection, request_id: int, op_code: int, payload: memoryview
    ) -> bytes | None:
        sandbox = self._state()
        try:
            request = wire.parse(request_id, op_code, payload)
        except wire.ProtocolError as error:
            request = wire.Request(request_id, wire.OP_MSG)
            reply: dict[str, Any] = CommandError(
                ErrorCode.INVALID_BSON, f"malformed message: {error}"
            ).reply()
        else:
            reply = sandbox.handle(request.body, connection)
            if request.more_to_come:
                return None  # unacknowledged write: the client reads no reply
        try:
            encoded = encode_reply(reply)
        except Exception as error:  # a reply that cannot be encoded must not kill the connection
            logger.exception("cannot encode the reply to %s", next(iter(request.body), "?"))
            encoded = encode_reply(
                CommandError(ErrorCode.INTERNAL_ERROR, f"cannot encode reply: {error}").reply()
            )
        return wire.frame_reply(request, encoded, next(self._request_ids))

    def _read_message(self, client: socket.socket) -> tuple[int, int, memoryview] | None:
        header = _read_exactly(client, wire.HEADER.size)
        if header is None:
            return None
        length, request_id, _, op_code = wire.HEADER.unpack(header)
        if not wire.HEADER.size <= length <= _MAX_INCOMING:
            logger.warning("closing a connection that sent a message of %d bytes", length)
            return None
        payload = _read_exactly(client, length - wire.HEADER.size)
        if payload is None:
            return None
        return request_id, op_code, memoryview(payload)


def _read_exactly(client: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = client.recv_into(view[received:])
        if count == 0:
            return None
        received += count
    return buffer


def serve_forever(port: int, oplog_size: int | None = None) -> None:
    """Run a sandbox on 127.0.0.1:`port` in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    server = SandboxServer(port=port, oplog_size=oplog_size)
    try:
        server.start()
    except OSError as error:  # the port is taken, or privileged
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError("--port", f"cannot listen on {server.host}:{port}: {reason}") from None
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"MongoDB sandbox listening on {server.uri}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
