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
from mongodb_sandbox.cursors import CURSOR_TIMEOUT_SECONDS, SESSION_TIMEOUT_SECONDS
from mongodb_sandbox.errors import CommandError, ErrorCode
from mongodb_sandbox.faults import CloseConnection
from mongodb_sandbox.oplog import DEFAULT_NOOP_INTERVAL_SECONDS
from shared.errors import ConfigError

logger = logging.getLogger(__name__)

SET_NAME = "sandbox"
# Headroom over maxMessageSizeBytes for the command envelope around a full batch of documents.
_MAX_INCOMING = MAX_MESSAGE_SIZE + 16 * 1024 * 1024


class SandboxServer:
    """A MongoDB-compatible sandbox listening on TCP (a single-member replica set "sandbox").

    `oplog_size` keeps only the last N change events (None: unlimited); `max_event_bytes` is the
    size above which a change event is "too large" (16 MiB like MongoDB; tests may lower it).
    `routers` N > 0 makes it a sharded cluster's stand-in instead: N routers (mongos) on ports of
    their own (consecutive from `port`, or free ones for port 0) in front of one shard, sharing
    its data and oplog; each router keeps the cursors it opened, as a real mongos does.
    The idle timeouts of cursors and sessions and the interval of the primary's no-op writes
    default to a real server's (see cursors.py and oplog.py).
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
        cursor_timeout_seconds: float = CURSOR_TIMEOUT_SECONDS,
        session_timeout_seconds: float = SESSION_TIMEOUT_SECONDS,
        noop_interval_seconds: float = DEFAULT_NOOP_INTERVAL_SECONDS,
        routers: int = 0,
        split_large_events: bool = True,
    ) -> None:
        if routers < 0:
            raise ValueError("routers must be 0 (a replica set) or a positive number")
        self.host = host
        self._requested_port = port
        self._oplog_size = oplog_size
        self._max_event_bytes = max_event_bytes
        self._timeouts = {
            "cursor_timeout_seconds": cursor_timeout_seconds,
            "session_timeout_seconds": session_timeout_seconds,
            "noop_interval_seconds": noop_interval_seconds,
        }
        self.routers = routers
        self._listeners: list[socket.socket] = []
        self._accept_threads: list[threading.Thread] = []
        self._served: list[Sandbox] = []
        self._split_large_events = split_large_events
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._connection_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self.port = 0
        self.ports: list[int] = []
        self.sandbox: Sandbox | None = None

    @property
    def uri(self) -> str:
        """A connection string for PyMongo: a direct connection to the set's only member, or
        every router of a sharded stand-in (no directConnection, no replicaSet), as a sharded
        cluster's connection string lists its mongos."""
        if self.routers:
            hosts = ",".join(f"{self.host}:{port}" for port in self.ports)
            return f"mongodb://{hosts}/"
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def replica_set_uri(self) -> str:
        """A connection string with replica-set discovery (`replicaSet=sandbox`)."""
        return f"mongodb://{self.host}:{self.port}/?replicaSet={SET_NAME}"

    def start(self) -> SandboxServer:
        """Bind, start accepting in background threads, and return once listening.

        OSError (a port taken or privileged) names the address that could not be bound.
        """
        wanted = [
            self._requested_port + index if self._requested_port else 0
            for index in range(max(1, self.routers))
        ]
        for port in wanted:
            try:
                self._listeners.append(socket.create_server((self.host, port), backlog=128))
            except OSError as error:
                for listener in self._listeners:
                    listener.close()
                self._listeners = []
                error.filename = f"{self.host}:{port}"
                raise
        self.ports = [listener.getsockname()[1] for listener in self._listeners]
        self.port = self.ports[0]
        state = Sandbox(
            address=f"{self.host}:{self.port}",
            set_name=SET_NAME,
            oplog_size=self._oplog_size,
            max_event_bytes=self._max_event_bytes,
            **self._timeouts,
            split_large_events=self._split_large_events,
        )
        if self.routers:
            # Cursor ids numbered apart per router (a real mongos draws random 64-bit ids).
            routers = [
                state.router(f"{self.host}:{port}", first_cursor_id=(index + 1) << 40)
                for index, port in enumerate(self.ports)
            ]
        else:
            routers = [state]
        self.sandbox = routers[0]  # the shared state, through the first router
        self._served = routers
        for listener, served in zip(self._listeners, routers, strict=True):
            thread = threading.Thread(
                target=self._accept_loop,
                args=(listener, served),
                name=f"sandbox-accept-{listener.getsockname()[1]}",
                daemon=True,
            )
            thread.start()
            self._accept_threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and wake any waiting change stream."""
        if not self._listeners:
            return
        assert self.sandbox is not None
        self.sandbox.stopping.set()
        with self.sandbox.condition:
            self.sandbox.condition.notify_all()
        for listener in self._listeners:
            # close() alone does not wake a thread blocked in accept(); shutdown() does.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        self._listeners = []
        self.drop_connections()
        for thread in self._accept_threads:
            thread.join(timeout=5)
        self._accept_threads = []

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

    def expire_idle_cursors(self) -> int:
        """Kill every cursor no getMore is running on, as the server's reaper does once they
        have been idle for their timeout; returns how many died."""
        self._state()
        return sum(served.cursors.expire_idle() for served in self._served)

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

    def _accept_loop(self, listener: socket.socket, state: Sandbox) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by stop()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._clients_lock:
                self._clients.add(client)
            threading.Thread(
                target=self._serve, args=(client, state), name="sandbox-connection", daemon=True
            ).start()

    def _serve(self, client: socket.socket, state: Sandbox) -> None:
        connection = Connection(next(self._connection_ids))
        try:
            while True:
                message = self._read_message(client)
                if message is None:
                    return
                reply = self._respond(state, connection, *message)
                if reply is not None:
                    client.sendall(reply)
        except (CloseConnection, OSError):
            pass
        finally:
            with self._clients_lock:
                self._clients.discard(client)
            client.close()

    def _respond(
        self,
        sandbox: Sandbox,
        connection: Connection,
        request_id: int,
        op_code: int,
        payload: memoryview,
    ) -> bytes | None:
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


def serve_forever(port: int, oplog_size: int | None = None, routers: int = 0) -> None:
    """Run a sandbox on 127.0.0.1:`port` in the foreground until SIGINT or SIGTERM (with
    `routers`, a sharded cluster's stand-in on that many ports from `port`)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    server = SandboxServer(port=port, oplog_size=oplog_size, routers=routers)
    try:
        server.start()
    except OSError as error:  # the port is taken, or privileged
        reason = os.strerror(error.errno) if error.errno else str(error)
        where = error.filename or f"{server.host}:{port}"
        raise ConfigError("--port", f"cannot listen on {where}: {reason}") from None
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        plural = "" if routers == 1 else "s"
        shape = f" (a sharded cluster, {routers} router{plural})" if routers else ""
        print(f"MongoDB sandbox{shape} listening on {server.uri}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
