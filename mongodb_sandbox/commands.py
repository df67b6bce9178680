"""Command dispatch: MongoDB command documents in, reply documents out.

`Sandbox` owns the state (store, oplog, cursors, fault injector) and answers each command the
way a MongoDB 7.0 replica-set primary would, within what the sandbox supports. One re-entrant
lock, shared with the oplog's condition variable, serialises every read and write of the state;
cursor batches are built outside it from already-materialised results.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import random
import string
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from mongodb_sandbox import (
    aggregation,
    change_streams,
    deltas,
    ordering,
    query,
    storage,
    transactions,
    update_pipeline,
)
from mongodb_sandbox.cursors import (
    CURSOR_TIMEOUT_SECONDS,
    SESSION_TIMEOUT_SECONDS,
    CursorRegistry,
    ListCursor,
    cursor_reply,
)
from mongodb_sandbox.errors import CommandError, ErrorCode, unsupported
from mongodb_sandbox.faults import CloseConnection, FaultInjector
from mongodb_sandbox.oplog import DEFAULT_NOOP_INTERVAL_SECONDS, Oplog

logger = logging.getLogger(__name__)

MAX_WIRE_VERSION = 21  # MongoDB 7.0
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
MAX_WRITE_BATCH_SIZE = 100_000
VERSION = "7.0.0"
_ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
# Databases every replica set reports, whatever the sandbox holds.
_BUILTIN_DATABASES = ("admin", "config", "local")


@dataclass
class Connection:
    """What the server knows about one client connection."""

    connection_id: int
    app_name: str | None = None


Handler = Callable[["Sandbox", str, dict[str, Any], Connection], dict[str, Any]]
_HANDLERS: dict[str, Handler] = {}


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            _HANDLERS[name] = handler
        return handler

    return register


class Sandbox:
    """The whole server state, independent of sockets."""

    def __init__(
        self,
        *,
        address: str,
        set_name: str,
        oplog_size: int | None,
        max_event_bytes: int = change_streams.MAX_EVENT_BYTES,
        cursor_timeout_seconds: float = CURSOR_TIMEOUT_SECONDS,
        session_timeout_seconds: float = SESSION_TIMEOUT_SECONDS,
        noop_interval_seconds: float = DEFAULT_NOOP_INTERVAL_SECONDS,
        split_large_events: bool = True,
    ) -> None:
        self.address = address
        self.set_name = set_name
        self.max_event_bytes = max_event_bytes
        self.split_large_events = split_large_events
        self.condition = threading.Condition(threading.RLock())
        self.store = storage.Store()
        self.oplog = Oplog(self.condition, oplog_size, noop_interval_seconds=noop_interval_seconds)
        self.oplog.uuid_of = self._collection_uuid
        self.store.on_create = self._log_create
        self.cursors = CursorRegistry(
            cursor_timeout_seconds=cursor_timeout_seconds,
            session_timeout_seconds=session_timeout_seconds,
        )
        self.faults = FaultInjector()
        self.stopping = threading.Event()
        self.process_id = ObjectId()
        self.election_id = ObjectId.from_datetime(
            datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
        )
        self.started = time.monotonic()
        self.transactions = transactions.Transactions(self)
        # Set on the view of the server a transaction's statement runs against.
        self.transaction: transactions.Transaction | None = None
        self.is_router = False

    def router(self, address: str, first_cursor_id: int) -> Sandbox:
        """A router (mongos) at ``address`` in front of this state, as one shard behind it.

        Everything is shared (data, oplog, lock, faults) but the cursors: a mongos keeps the
        cursors it opened in its own memory, so a getMore through another router fails with
        CursorNotFound (SERVER-88060, "Works as Designed"; the driver specs send a cursor's
        getMore and killCursors to the server that opened it). A shallow copy, so state added
        to `Sandbox` later is shared too.
        """
        router = copy.copy(self)
        router.address = address
        router.is_router = True
        router.cursors = self.cursors.another(first_cursor_id)
        router.process_id = ObjectId()
        return router

    def handle(self, body: dict[str, Any], connection: Connection) -> dict[str, Any]:
        """Answer one command; failures become `{ok: 0}` replies (CloseConnection propagates)."""
        try:
            if not body:
                raise CommandError(ErrorCode.COMMAND_NOT_FOUND, "no command given")
            name = next(iter(body))
            db = body.get("$db", "admin")
            if not isinstance(db, str):
                raise CommandError(ErrorCode.INVALID_NAMESPACE, "$db must be a string")
            handler = _HANDLERS.get(name)
            if handler is None:
                raise CommandError(ErrorCode.COMMAND_NOT_FOUND, f"no such command: '{name}'")
            self.faults.check(name, connection.app_name)
            session = _session_id(body)
            if session is not None:
                self.cursors.session_used(session)
            if transactions.in_transaction(body) or name in transactions.ENDS:
                reply = self.transactions.run(handler, name, db, body, connection)
            else:
                reply = handler(self, db, body, connection)
            opened = reply.get("cursor", {}).get("id") if name != "getMore" else None
            if opened and session is not None:
                self.cursors.bind_session(int(opened), session)
        except CommandError as error:
            reply = error.reply()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            # A malformed command must not take the server down: answer like MongoDB would.
            reply = CommandError(
                ErrorCode.BAD_VALUE, f"malformed command: {type(error).__name__}: {error}"
            ).reply()
        except CloseConnection:
            raise
        except Exception as error:
            # A sandbox bug answers this one command with an error and keeps serving the rest.
            logger.exception("internal error in command %r", next(iter(body), None))
            reply = CommandError(
                ErrorCode.INTERNAL_ERROR, f"sandbox internal error: {type(error).__name__}"
            ).reply()
        cluster_time = self.oplog.clock.current()
        reply["$clusterTime"] = {
            "clusterTime": cluster_time,
            "signature": {"hash": Binary(b"\x00" * 20), "keyId": Int64(0)},
        }
        reply["operationTime"] = cluster_time
        return reply

    def _collection_uuid(self, db: str, name: str) -> Any:
        collection = self.store.get(db, name)
        return collection.uuid if collection is not None and collection.kind != "view" else None

    def _log_create(self, collection: storage.Collection) -> None:
        # The `create` change event (manual: "create Event", shown with showExpandedEvents):
        # a view's description is its definition, a collection's its _id index and options.
        if collection.kind == "view":
            description = {
                "viewOn": collection.options["viewOn"],
                "pipeline": collection.options["pipeline"],
            }
        else:
            description = {**collection.options, "idIndex": _ID_INDEX}
        self.oplog.append(
            "create", collection.db, collection.name, operation_description=description
        )

    # -- helpers shared by the write commands --------------------------------------------------

    def insert_document(self, collection: storage.Collection, raw: RawBSONDocument) -> None:
        if len(raw.raw) > MAX_BSON_OBJECT_SIZE:
            raise CommandError(
                ErrorCode.BSON_OBJECT_TOO_LARGE,
                f"object to insert too large. size in bytes: {len(raw.raw)}",
            )
        doc = storage.decode(raw)
        if "_id" not in doc:
            doc = {"_id": ObjectId(), **doc}
            raw = storage.encode(doc)
        if self.transaction is None:
            self.transactions.wait_for(collection.db, collection.name, doc["_id"])
        collection.insert(doc["_id"], raw)
        self.oplog.append(
            "insert",
            collection.db,
            collection.name,
            document_key={"_id": doc["_id"]},
            full_document=raw,
        )

    def modify(
        self, collection: storage.Collection, raw: RawBSONDocument, update: Any
    ) -> RawBSONDocument:
        """Apply an update or replacement to one stored document and log the change."""
        if self.transaction is None:
            current = self._after_transactions(collection, raw)
            if current is None:
                return raw  # deleted by the transaction it waited for
            raw = current
        old = storage.decode(raw)
        now = datetime.datetime.now(datetime.UTC)
        if update_pipeline.is_pipeline(update):
            new = update_pipeline.apply(old, update)
            operation = "update"
        elif query.is_update_document(update):
            new = query.apply_update(storage.decode(raw), update, inserting=False, now=now)
            operation = "update"
        else:
            new = {"_id": old["_id"], **{k: v for k, v in update.items() if k != "_id"}}
            if "_id" in update and ordering.sort_key(update["_id"]) != ordering.sort_key(
                old["_id"]
            ):
                raise _immutable_id()
            operation = "replace"
        if ordering.sort_key(new.get("_id")) != ordering.sort_key(old["_id"]):
            raise _immutable_id()
        new_raw = storage.encode(new)
        if new_raw.raw == raw.raw:
            return raw
        if len(new_raw.raw) > MAX_BSON_OBJECT_SIZE:
            raise CommandError(
                ErrorCode.BSON_OBJECT_TOO_LARGE,
                "Resulting document after update is larger than 16777216",
            )
        collection.replace(storage.id_key(old["_id"]), new_raw)
        fields: dict[str, Any] = {"document_key": {"_id": old["_id"]}}
        if keeps_images(collection):
            fields.update(pre_image=raw, post_image=new_raw)
        if operation == "update":
            if update_pipeline.is_pipeline(update):
                delta = deltas.compute_diff(old, new)
                if delta is None:
                    # pipeline_executor.cpp: a diff no smaller than the document is logged as a
                    # replacement, which change streams report as a replace event.
                    operation = "replace"
            else:
                delta = deltas.modifier_diff(old, new, update)
            if delta is not None:
                fields["update_description"] = deltas.describe(delta)
        if operation == "replace":
            fields["full_document"] = new_raw
        self.oplog.append(operation, collection.db, collection.name, **fields)
        return new_raw

    def _after_transactions(
        self, collection: storage.Collection, raw: RawBSONDocument
    ) -> RawBSONDocument | None:
        """The document once no open transaction holds it (a write outside transactions waits
        for them; see transactions.py), as it is then: None if they deleted it."""
        if not self.transactions.holding:
            return raw
        id_value = storage.decode(raw)["_id"]
        self.transactions.wait_for(collection.db, collection.name, id_value)
        return collection.get(storage.id_key(id_value))

    def upsert(
        self, collection: storage.Collection, filter_: Mapping[str, Any], update: Any
    ) -> RawBSONDocument:
        seed = query.upsert_seed(filter_)
        if update_pipeline.is_pipeline(update):
            # The filter's equality fields, then the pipeline (produce_document_for_upsert.cpp).
            doc = update_pipeline.apply(seed, update)
        elif query.is_update_document(update):
            now = datetime.datetime.now(datetime.UTC)
            doc = query.apply_update(seed, update, inserting=True, now=now)
        else:
            doc = {**({"_id": seed["_id"]} if "_id" in seed else {}), **update}
        if "_id" not in doc:
            doc = {"_id": ObjectId(), **doc}
        elif next(iter(doc)) != "_id":
            doc = {"_id": doc["_id"], **doc}
        raw = storage.encode(doc)
        self.insert_document(collection, raw)
        return raw

    def lookup(self, db: str, coll: str, id_value: Any) -> RawBSONDocument | None:
        collection = self.store.get(db, coll)
        return collection.get(ordering.sort_key(id_value)) if collection else None

    def read_source(
        self, db: str, name: str, pipeline: list[Mapping[str, Any]]
    ) -> list[RawBSONDocument]:
        """Run a pipeline over a collection or view, starting from an indexed selection."""
        collection = self.store.get(db, name)
        if collection is None:
            return aggregation.run([], pipeline)
        if collection.kind == "view":
            return self.read_source(
                db, collection.options["viewOn"], [*collection.options["pipeline"], *pipeline]
            )
        filter_: Mapping[str, Any] = {}
        sort: Mapping[str, Any] | None = None
        rest = list(pipeline)
        if rest and "$match" in rest[0]:
            filter_ = rest.pop(0)["$match"]
        if rest and "$sort" in rest[0]:
            sort = rest.pop(0)["$sort"]
        selected: list[Any] = collection.select(filter_, sort)
        return aggregation.run(selected, rest)


def _immutable_id() -> CommandError:
    return CommandError(
        ErrorCode.IMMUTABLE_FIELD,
        "Performing an update on the path '_id' would modify the immutable field '_id'",
    )


def update_description(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The `updateDescription` of the server's diff between two versions of a document (what a
    pipeline update logs; see deltas.py), its size limit aside."""
    return deltas.describe(deltas.full_diff(old, new))


def _collection_name(body: Mapping[str, Any]) -> str:
    name = next(iter(body.values()))
    if not isinstance(name, str):
        raise CommandError(ErrorCode.INVALID_NAMESPACE, "collection name must be a string")
    return name


def _write_error(index: int, error: CommandError, raw: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index, "code": int(error.code), "errmsg": error.message}
    if error.code == ErrorCode.DUPLICATE_KEY and raw is not None:
        entry["keyPattern"] = {"_id": 1}
        entry["keyValue"] = {"_id": storage.decode(raw).get("_id")}
    return entry


def _write_reply(n: int, errors: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {"n": n, **extra}
    if errors:
        reply["writeErrors"] = errors
    reply["ok"] = 1.0
    return reply


def _raw_documents(items: Any) -> list[RawBSONDocument]:
    """Documents from an OP_MSG sequence (already raw) or embedded in the command body."""
    if not isinstance(items, list):
        raise CommandError(ErrorCode.BAD_VALUE, "documents must be an array")
    return [d if isinstance(d, RawBSONDocument) else storage.encode(d) for d in items]


# -- handshake and server information ---------------------------------------------------------


@command("hello", "isMaster", "ismaster")
def _hello(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    if "topologyVersion" in body and "maxAwaitTimeMS" in body:
        # Awaitable hello (the driver's streaming monitor): answer when the wait expires, as
        # the topology of a single-member set never changes.
        sandbox.stopping.wait(int(body["maxAwaitTimeMS"]) / 1000)
    client = body.get("client")
    if isinstance(client, Mapping):
        application = client.get("application")
        if isinstance(application, Mapping):
            connection.app_name = application.get("name")
    last_write = sandbox.oplog.clock.current()
    name = next(iter(body))
    reply: dict[str, Any] = {
        "topologyVersion": {"processId": sandbox.process_id, "counter": Int64(0)},
        "isWritablePrimary" if name == "hello" else "ismaster": True,
    }
    if sandbox.is_router:
        # A mongos names itself with msg "isdbgrid" and reports no replica set (hello manual,
        # "Sharded Instances"; the server's src/mongo/s/commands/cluster_hello_cmd.cpp, which
        # has no readOnly either); the SDAM spec reads exactly that as server type Mongos.
        reply["msg"] = "isdbgrid"
    else:
        reply |= {
            "hosts": [sandbox.address],
            "setName": sandbox.set_name,
            "setVersion": 1,
            "secondary": False,
            "primary": sandbox.address,
            "me": sandbox.address,
            "electionId": sandbox.election_id,
            "lastWrite": {
                "opTime": {"ts": last_write, "t": Int64(1)},
                "lastWriteDate": datetime.datetime.now(datetime.UTC).replace(microsecond=0),
            },
        }
    reply |= {
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
        "maxWriteBatchSize": MAX_WRITE_BATCH_SIZE,
        "localTime": datetime.datetime.now(datetime.UTC),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": connection.connection_id,
        "minWireVersion": 0,
        "maxWireVersion": MAX_WIRE_VERSION,
        "readOnly": False,
        "ok": 1.0,
    }
    if sandbox.is_router:
        del reply["readOnly"]  # a mongod's field (see above)
    if body.get("helloOk"):
        reply["helloOk"] = True
    return reply


@command("ping", "refreshSessions")
def _ok(sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection) -> dict[str, Any]:
    return {"ok": 1.0}


@command("endSessions", "killSessions")
def _end_sessions(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    # Ending a session aborts its open transaction (the manual, "Server Sessions") and kills its
    # cursors (DOCS-13976).
    sessions = next(iter(body.values()))
    specs = sessions if isinstance(sessions, list) else []
    sandbox.transactions.end_sessions(specs)
    ended = [_session_id({"lsid": spec}) for spec in specs]
    sandbox.cursors.end_sessions(session for session in ended if session is not None)
    return {"ok": 1.0}


def _session_id(body: Mapping[str, Any]) -> bytes | None:
    """The session a command names (its lsid's UUID bytes), if any."""
    lsid = body.get("lsid")
    identity = lsid.get("id") if isinstance(lsid, Mapping) else None
    return bytes(identity) if isinstance(identity, bytes) else None


@command(*transactions.ENDS)
def _transaction_end(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    # Sandbox.handle hands these to Transactions.run; registered so they are known commands.
    raise CommandError(ErrorCode.INVALID_OPTIONS, f"{next(iter(body))} needs a transaction")


@command("buildInfo", "buildinfo")
def _build_info(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    return {
        "version": VERSION,
        "versionArray": [7, 0, 0, 0],
        "gitVersion": "sandbox",
        "bits": 64,
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "storageEngines": ["sandbox"],
        "modules": [],
        "ok": 1.0,
    }


def _admin_only(name: str, db: str) -> None:
    if db != "admin":
        raise CommandError(
            ErrorCode.UNAUTHORIZED, f"{name} may only be run against the admin database."
        )


def _server_parameters() -> dict[str, Any]:
    """The server parameters the sandbox reports, as a test-enabled mongod 7.0 holds them.

    `enableTestCommands` is true because the sandbox answers the test-only command drivers'
    own suites need (`configureFailPoint` with `failCommand`), like a server started with
    `--setParameter enableTestCommands=1`; their harnesses read it to decide what to run.
    """
    return {
        "authenticationMechanisms": [],
        "enableTestCommands": True,
        "featureCompatibilityVersion": {"version": "7.0"},
        "logLevel": 0,
        "maxAwaitTimeMSForChangeStreams": change_streams.DEFAULT_AWAIT_MS,
        "transactionLifetimeLimitSeconds": 60,
    }


@command("getParameter")
def _get_parameter(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    # The shapes of mongod's `getParameter` (src/mongo/db/commands/parameters.cpp): `"*"` (or
    # `{allParameters: true}`) answers every parameter, otherwise each field of the command
    # that names a parameter; naming none is "no option found to get" (72 InvalidOptions).
    _admin_only("getParameter", db)
    selector = body["getParameter"]
    parameters = _server_parameters()
    every = selector == "*" or (isinstance(selector, Mapping) and selector.get("allParameters"))
    reply = {k: v for k, v in parameters.items() if every or k in body}
    if not reply:
        raise CommandError(ErrorCode.INVALID_OPTIONS, "no option found to get")
    return {**reply, "ok": 1.0}


@command("getCmdLineOpts")
def _get_cmd_line_opts(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    # mongod's reply: the command line as given (`argv`) and as parsed into the YAML config
    # tree (`parsed`), with setParameter values as the strings they were given as. The
    # sandbox answers as `mongod --replSet <name> --bind_ip <host> --port <port>` started
    # with test commands enabled (see `_server_parameters`).
    _admin_only("getCmdLineOpts", db)
    host, _, port = sandbox.address.rpartition(":")
    return {
        "argv": [
            "mongod",
            "--replSet",
            sandbox.set_name,
            "--bind_ip",
            host,
            "--port",
            port,
            "--setParameter",
            "enableTestCommands=1",
        ],
        "parsed": {
            "net": {"bindIp": host, "port": int(port)},
            "replication": {"replSet": sandbox.set_name},
            "setParameter": {"enableTestCommands": "1"},
        },
        "ok": 1.0,
    }


@command("hostInfo")
def _host_info(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    return {
        "system": {"hostname": sandbox.address, "numCores": os.cpu_count() or 1},
        "os": {"type": "sandbox"},
        "extra": {},
        "ok": 1.0,
    }


@command("serverStatus")
def _server_status(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "host": sandbox.address,
        "version": VERSION,
        "process": "mongos" if sandbox.is_router else "mongod",
        "uptime": time.monotonic() - sandbox.started,
        "ok": 1.0,
    }
    if not sandbox.is_router:  # a mongos has no replication section
        reply["repl"] = {"setName": sandbox.set_name, "isWritablePrimary": True}
    return reply


@command("configureFailPoint")
def _configure_fail_point(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    if db != "admin":
        raise CommandError(
            ErrorCode.UNAUTHORIZED, "configureFailPoint may only be run against the admin database."
        )
    if body["configureFailPoint"] == "failGetMoreAfterCursorCheckout":
        sandbox.faults.configure_after_checkout(body.get("mode"), body.get("data", {}))
        return {"count": 0, "ok": 1.0}
    if body["configureFailPoint"] != "failCommand":
        raise unsupported(f"fail point {body['configureFailPoint']!r}")
    sandbox.faults.configure(body.get("mode"), body.get("data", {}))
    return {"count": 0, "ok": 1.0}


# -- writes ------------------------------------------------------------------------------------


@command("insert")
def _insert(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    documents = _raw_documents(body.get("documents", []))
    ordered = body.get("ordered", True)
    errors: list[dict[str, Any]] = []
    inserted = 0
    with sandbox.condition:
        collection = sandbox.store.writable(db, _collection_name(body))
        for index, raw in enumerate(documents):
            try:
                sandbox.insert_document(collection, raw)
                inserted += 1
            except CommandError as error:
                errors.append(_write_error(index, error, raw))
                if ordered:
                    break
    return _write_reply(inserted, errors)


@command("update")
def _update(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    ordered = body.get("ordered", True)
    errors: list[dict[str, Any]] = []
    upserted: list[dict[str, Any]] = []
    matched = modified = 0
    with sandbox.condition:
        collection = sandbox.store.writable(db, _collection_name(body))
        for index, spec in enumerate(body.get("updates", [])):
            try:
                if spec.get("arrayFilters"):
                    raise unsupported("arrayFilters")
                filter_ = spec.get("q", {})
                update = spec["u"]
                if (
                    spec.get("multi")
                    and not update_pipeline.is_pipeline(update)
                    and not query.is_update_document(update)
                ):
                    raise CommandError(
                        ErrorCode.FAILED_TO_PARSE,
                        "multi update is not supported for replacement-style update",
                    )
                targets = collection.select(filter_, None)
                if not spec.get("multi"):
                    targets = targets[:1]
                for raw in targets:
                    matched += 1
                    if sandbox.modify(collection, raw, update) is not raw:
                        modified += 1
                if not targets and spec.get("upsert"):
                    raw = sandbox.upsert(collection, filter_, update)
                    upserted.append({"index": index, "_id": storage.decode(raw)["_id"]})
            except CommandError as error:
                errors.append(_write_error(index, error))
                if ordered:
                    break
    extra: dict[str, Any] = {"nModified": modified}
    if upserted:
        extra["upserted"] = upserted
    return _write_reply(matched + len(upserted), errors, **extra)


@command("delete")
def _delete(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    ordered = body.get("ordered", True)
    errors: list[dict[str, Any]] = []
    deleted = 0
    with sandbox.condition:
        collection = sandbox.store.writable(db, _collection_name(body))
        for index, spec in enumerate(body.get("deletes", [])):
            try:
                targets = collection.select(spec.get("q", {}), None)
                if spec.get("limit"):
                    targets = targets[:1]
                for raw in targets:
                    _delete_one(sandbox, collection, raw)
                    deleted += 1
            except CommandError as error:
                errors.append(_write_error(index, error))
                if ordered:
                    break
    return _write_reply(deleted, errors)


def _delete_one(sandbox: Sandbox, collection: storage.Collection, raw: RawBSONDocument) -> None:
    if sandbox.transaction is None and sandbox._after_transactions(collection, raw) is None:
        return  # deleted by the transaction it waited for
    id_value = storage.decode(raw)["_id"]
    collection.delete(storage.id_key(id_value))
    images = {"pre_image": raw} if keeps_images(collection) else {}
    sandbox.oplog.append(
        "delete", collection.db, collection.name, document_key={"_id": id_value}, **images
    )


def keeps_images(collection: storage.Collection) -> bool:
    """Whether the collection records pre- and post-images for change streams."""
    option = collection.options.get("changeStreamPreAndPostImages")
    return isinstance(option, Mapping) and bool(option.get("enabled"))


@command("findAndModify", "findandmodify")
def _find_and_modify(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    filter_ = body.get("query") or {}
    last_error: dict[str, Any] = {"n": 0}
    value: RawBSONDocument | None = None
    with sandbox.condition:
        collection = sandbox.store.writable(db, _collection_name(body))
        targets = collection.select(filter_, body.get("sort"))[:1]
        if body.get("remove"):
            if targets:
                _delete_one(sandbox, collection, targets[0])
                value = targets[0]
                last_error["n"] = 1
        elif "update" in body:
            if targets:
                new_raw = sandbox.modify(collection, targets[0], body["update"])
                value = new_raw if body.get("new") else targets[0]
                last_error.update(n=1, updatedExisting=True)
            elif body.get("upsert"):
                new_raw = sandbox.upsert(collection, filter_, body["update"])
                value = new_raw if body.get("new") else None
                last_error.update(
                    n=1, updatedExisting=False, upserted=storage.decode(new_raw)["_id"]
                )
        else:
            raise CommandError(
                ErrorCode.FAILED_TO_PARSE, "Either an update or remove=true must be specified"
            )
    if value is not None and body.get("fields"):
        value = storage.encode(query.project(storage.decode(value), body["fields"]))
    return {"lastErrorObject": last_error, "value": value, "ok": 1.0}


# -- reads -------------------------------------------------------------------------------------


@command("find")
def _find(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    name = _collection_name(body)
    filter_ = body.get("filter") or {}
    sort = body.get("sort") or None
    skip = int(body.get("skip") or 0)
    limit = int(body.get("limit") or 0)
    query.validate(filter_)
    with sandbox.condition:
        collection = sandbox.store.get(db, name)
        if collection is not None and collection.kind == "view":
            stages: list[Mapping[str, Any]] = [{"$match": filter_}]
            if sort:
                stages.append({"$sort": sort})
            documents = sandbox.read_source(db, name, stages)
        elif collection is not None:
            documents = collection.select(filter_, sort, _index_bounds(body))
        else:
            documents = []
    documents = documents[skip:]
    if limit:
        documents = documents[: abs(limit)]
    if body.get("projection"):
        projection = body["projection"]
        documents = [
            storage.encode(query.project(storage.decode(d), projection)) for d in documents
        ]
    cursor = ListCursor(f"{db}.{name}", documents)
    batch_size = body.get("batchSize")
    if body.get("singleBatch") or limit < 0:
        batch_size = len(documents)
    reply = cursor_reply(sandbox.cursors, cursor, batch_size)
    if body.get("singleBatch") or limit < 0:
        sandbox.cursors.kill(int(reply["cursor"]["id"]))
        reply["cursor"]["id"] = Int64(0)
    return reply


def _index_bounds(body: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """A find's ``min``/``max`` on the `_id` index (the only index here); MongoDB needs a hint."""
    if body.get("min") is None and body.get("max") is None:
        return None
    if body.get("hint") is None:
        raise CommandError(
            ErrorCode.MIN_MAX_WITHOUT_HINT,
            "When using min()/max() a hint of which index to use must be provided",
        )
    bounds = []
    for name in ("min", "max"):
        bound = body.get(name)
        if bound is not None and list(bound) != ["_id"]:
            raise CommandError(
                ErrorCode.MIN_MAX_NOT_ON_INDEX,
                f"{name}() must name only _id, the only index in the sandbox",
            )
        bounds.append(query.MISSING if bound is None else bound["_id"])
    return bounds[0], bounds[1]


@command("getMore")
def _get_more(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    cursor_id = int(body["getMore"])
    cursor = sandbox.cursors.get(cursor_id)
    try:
        is_stream = isinstance(cursor, change_streams.ChangeStreamCursor)
        sandbox.faults.check_checked_out(change_stream=is_stream)
        return cursor_reply(
            sandbox.cursors, cursor, body.get("batchSize"), body.get("maxTimeMS"), cursor_id
        )
    except CommandError:
        sandbox.cursors.kill(cursor_id)
        raise
    finally:
        sandbox.cursors.release(cursor_id)


@command("killCursors")
def _kill_cursors(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    killed: list[Any] = []
    not_found: list[Any] = []
    for cursor_id in body.get("cursors", []):
        (killed if sandbox.cursors.kill(int(cursor_id)) else not_found).append(cursor_id)
    return {
        "cursorsKilled": killed,
        "cursorsNotFound": not_found,
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    }


@command("count")
def _count(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    name = _collection_name(body)
    filter_ = body.get("query") or {}
    with sandbox.condition:
        collection = sandbox.store.get(db, name)
        if collection is None:
            total = 0
        elif not filter_ and collection.kind != "view":
            total = len(collection)
        else:
            total = len(sandbox.read_source(db, name, [{"$match": filter_}]))
    total = max(total - int(body.get("skip") or 0), 0)
    limit = abs(int(body.get("limit") or 0))
    return {"n": min(total, limit) if limit else total, "ok": 1.0}


@command("distinct")
def _distinct(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    name = _collection_name(body)
    key = body["key"]
    with sandbox.condition:
        documents = sandbox.read_source(db, name, [{"$match": body.get("query") or {}}])
    values: dict[ordering.SortKey, Any] = {}
    for doc in documents:
        for value in query.resolve(storage.decode(doc), key.split(".")):
            for item in value if isinstance(value, list) else [value]:
                values.setdefault(ordering.sort_key(item), item)
    return {"values": [values[k] for k in sorted(values)], "ok": 1.0}


@command("aggregate")
def _aggregate(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    pipeline = body.get("pipeline")
    if not isinstance(pipeline, list):
        raise CommandError(
            ErrorCode.TYPE_MISMATCH, "'pipeline' option must be specified as an array"
        )
    if "cursor" not in body and not body.get("explain"):
        raise CommandError(ErrorCode.FAILED_TO_PARSE, "The 'cursor' option is required")
    if body.get("explain"):
        raise unsupported("explain")
    batch_size = body.get("cursor", {}).get("batchSize")
    target = body["aggregate"]
    if pipeline and isinstance(pipeline[0], Mapping) and "$changeStream" in pipeline[0]:
        level = (body.get("readConcern") or {}).get("level")
        if level is not None and level != "majority":
            # A change stream reads majority-committed changes only; a readConcern asked for
            # explicitly must be "majority" (document_source_change_stream.h,
            # supportsReadConcern / onlySingleReadConcernSupported).
            raise CommandError(
                ErrorCode.INVALID_OPTIONS,
                "Aggregation stage $changeStream cannot run with a readConcern other than "
                f"'majority'. Current readConcern: {level}",
            )
        return _open_change_stream(sandbox, db, target, pipeline, batch_size)
    if not isinstance(target, str):
        raise unsupported("collection-less aggregation")
    if any(isinstance(s, Mapping) and ("$out" in s or "$merge" in s) for s in pipeline):
        raise unsupported("$out and $merge")
    with sandbox.condition:
        documents = sandbox.read_source(db, target, pipeline)
    return cursor_reply(sandbox.cursors, ListCursor(f"{db}.{target}", documents), batch_size)


def _open_change_stream(
    sandbox: Sandbox, db: str, target: Any, pipeline: list[Any], batch_size: int | None
) -> dict[str, Any]:
    spec = pipeline[0]["$changeStream"]
    change_streams.validate_spec(spec)
    if isinstance(target, str):
        scope = change_streams.Scope(db, target)
        collection = sandbox.store.get(db, target)
        if collection is not None and collection.kind != "collection":
            raise CommandError(
                ErrorCode.COMMAND_NOT_SUPPORTED_ON_VIEW,
                f"Namespace {db}.{target} is a {collection.kind}: it has no change stream",
            )
    elif spec.get("allChangesForCluster"):
        if db != "admin":
            raise CommandError(
                ErrorCode.INVALID_NAMESPACE,
                "allChangesForCluster may only be set on the admin database",
            )
        scope = change_streams.Scope(None, None)
    elif db == "admin":
        raise CommandError(
            ErrorCode.INVALID_NAMESPACE, "a database change stream cannot watch the admin database"
        )
    else:
        scope = change_streams.Scope(db, None)
    namespace = f"{db}.{target}" if isinstance(target, str) else f"{db}.$cmd.aggregate"
    with sandbox.condition:
        cursor = change_streams.ChangeStreamCursor(
            namespace=namespace,
            scope=scope,
            spec=spec,
            stages=pipeline[1:],
            oplog=sandbox.oplog,
            lookup=sandbox.lookup,
            max_event_bytes=sandbox.max_event_bytes,
            split_large_events=sandbox.split_large_events,
        )
    return cursor_reply(sandbox.cursors, cursor, batch_size)


# -- catalogue ---------------------------------------------------------------------------------


@command("listDatabases")
def _list_databases(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    with sandbox.condition:
        sizes = {
            name: sum(c.data_size() for c in collections.values())
            for name, collections in sandbox.store.databases.items()
        }
    for name in _BUILTIN_DATABASES:
        sizes.setdefault(name, 0)
    entries: list[dict[str, Any]] = [
        {"name": name, "sizeOnDisk": size, "empty": False} for name, size in sorted(sizes.items())
    ]
    if body.get("filter"):
        entries = [e for e in entries if query.matches(e, body["filter"])]
    if body.get("nameOnly"):
        return {"databases": [{"name": e["name"]} for e in entries], "ok": 1.0}
    total = sum(e["sizeOnDisk"] for e in entries)
    return {"databases": entries, "totalSize": total, "totalSizeMb": total >> 20, "ok": 1.0}


def _collection_info(collection: storage.Collection) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": collection.name,
        "type": collection.kind,
        "options": collection.options,
        "info": {"readOnly": collection.kind == "view"},
    }
    if collection.kind != "view":
        info["info"]["uuid"] = collection.uuid
    if collection.kind == "collection":
        info["idIndex"] = _ID_INDEX
    return info


@command("listCollections")
def _list_collections(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    with sandbox.condition:
        entries = [_collection_info(c) for c in sandbox.store.databases.get(db, {}).values()]
    if body.get("filter"):
        entries = [e for e in entries if query.matches(e, body["filter"])]
    if body.get("nameOnly"):
        entries = [{"name": e["name"], "type": e["type"]} for e in entries]
    cursor = ListCursor(f"{db}.$cmd.listCollections", [storage.encode(e) for e in entries])
    return cursor_reply(sandbox.cursors, cursor, body.get("cursor", {}).get("batchSize"))


@command("listIndexes")
def _list_indexes(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    name = _collection_name(body)
    with sandbox.condition:
        collection = sandbox.store.get(db, name)
        if collection is None or collection.kind == "view":
            raise CommandError(ErrorCode.NAMESPACE_NOT_FOUND, f"ns does not exist: {db}.{name}")
        specs = [_ID_INDEX, *collection.indexes.values()]
    cursor = ListCursor(f"{db}.{name}", [storage.encode(s) for s in specs])
    return cursor_reply(sandbox.cursors, cursor, body.get("cursor", {}).get("batchSize"))


@command("createIndexes")
def _create_indexes(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    with sandbox.condition:
        created = sandbox.store.get(db, _collection_name(body)) is None
        collection = sandbox.store.writable(db, _collection_name(body))
        before = len(collection.indexes) + 1
        for spec in body.get("indexes", []):
            if spec.get("unique") and dict(spec["key"]) != {"_id": 1}:
                raise unsupported("unique secondary indexes")
            if spec["name"] != "_id_" and spec["name"] not in collection.indexes:
                collection.indexes[spec["name"]] = {"v": 2, **spec}
                # One createIndexes oplog entry per new index ("createIndexes Event").
                sandbox.oplog.append(
                    "createIndexes",
                    db,
                    collection.name,
                    operation_description={"indexes": [collection.indexes[spec["name"]]]},
                )
        after = len(collection.indexes) + 1
    return {
        "numIndexesBefore": before,
        "numIndexesAfter": after,
        "createdCollectionAutomatically": created,
        "ok": 1.0,
    }


@command("dropIndexes")
def _drop_indexes(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    name = _collection_name(body)
    with sandbox.condition:
        collection = sandbox.store.get(db, name)
        if collection is None:
            raise CommandError(ErrorCode.NAMESPACE_NOT_FOUND, f"ns not found {db}.{name}")
        before = len(collection.indexes) + 1
        target = body.get("index")
        if target == "*":
            names = list(collection.indexes)
        else:
            names = [n for n, s in collection.indexes.items() if target in (n, s.get("key"))]
            if not names:
                raise CommandError(
                    ErrorCode.INDEX_NOT_FOUND, f"index not found with name [{target}]"
                )
        for index_name in names:
            # One dropIndexes oplog entry per index dropped ("dropIndexes Event").
            spec = collection.indexes.pop(index_name)
            sandbox.oplog.append("dropIndexes", db, name, operation_description={"indexes": [spec]})
    return {"nIndexesWas": before, "ok": 1.0}


_CREATE_GENERIC_FIELDS = {
    "create",
    "$db",
    "lsid",
    "$clusterTime",
    "writeConcern",
    "$readPreference",
    "comment",
}


@command("create")
def _create(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    name = _collection_name(body)
    options = {k: v for k, v in body.items() if k not in _CREATE_GENERIC_FIELDS}
    kind = "collection"
    if "viewOn" in options:
        kind = "view"
        options.setdefault("pipeline", [])
    elif "timeseries" in options:
        kind = "timeseries"
        if "timeField" not in options["timeseries"]:
            raise CommandError(
                ErrorCode.MISSING_REQUIRED_FIELD,
                "BSON field 'timeseries.timeField' is missing but required",
            )
        options["timeseries"] = {
            "granularity": "seconds",
            "bucketMaxSpanSeconds": 3600,
            **options["timeseries"],
        }
    with sandbox.condition:
        sandbox.store.create(db, name, kind, options)
    return {"ok": 1.0}


@command("collMod")
def _coll_mod(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    # Only the option change streams read: changeStreamPreAndPostImages ({enabled: bool}), as
    # the manual's collMod page describes it. Others are refused rather than ignored.
    name = _collection_name(body)
    options = {k: v for k, v in body.items() if k not in _CREATE_GENERIC_FIELDS | {"collMod"}}
    unknown = set(options) - {"changeStreamPreAndPostImages"}
    if unknown:
        raise unsupported(f"collMod option(s) {sorted(unknown)}")
    with sandbox.condition:
        collection = sandbox.store.get(db, name)
        if collection is None:
            raise CommandError(ErrorCode.NAMESPACE_NOT_FOUND, f"ns does not exist: {db}.{name}")
        if collection.kind != "collection":
            raise CommandError(
                ErrorCode.INVALID_OPTIONS, "changeStreamPreAndPostImages is for collections only"
            )
        before = dict(collection.options)
        collection.options.update(options)
        # The `modify` change event ("modify Event"), shown with showExpandedEvents.
        sandbox.oplog.append(
            "modify",
            db,
            name,
            operation_description=options,
            state_before_change={"collectionOptions": before},
        )
    return {"ok": 1.0}


@command("drop")
def _drop(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    name = _collection_name(body)
    with sandbox.condition:
        dropped = sandbox.store.drop(db, name)
        if dropped is not None and dropped.kind != "view":
            sandbox.oplog.append("drop", db, name)
    # Since 7.0 dropping a missing collection succeeds.
    return {"ns": f"{db}.{name}", "nIndexesWas": 1, "ok": 1.0}


@command("dropDatabase")
def _drop_database(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    with sandbox.condition:
        collections = list(sandbox.store.databases.get(db, {}).values())
        for collection in collections:
            sandbox.store.drop(db, collection.name)
            if collection.kind != "view":
                sandbox.oplog.append("drop", db, collection.name)
        if collections:
            sandbox.oplog.append("dropDatabase", db, None)
    return {"dropped": db, "ok": 1.0}


def _split_namespace(namespace: Any) -> tuple[str, str]:
    if not isinstance(namespace, str) or "." not in namespace:
        raise CommandError(
            ErrorCode.INVALID_NAMESPACE, f"Invalid namespace specified '{namespace}'"
        )
    db, _, name = namespace.partition(".")
    return db, name


# The staging collection of a rename across databases: the server fills in each "%" with one of
# [0-9A-Za-z] (rename_collection.cpp, renameCollectionAcrossDatabases, model
# "tmp%%%%%.renameCollection"; makeUniqueCollectionName, formerly
# DatabaseImpl::makeUniqueCollectionNamespace).
RENAME_STAGING_MODEL = "tmp%%%%%.renameCollection"
_STAGING_CHARACTERS = string.digits + string.ascii_uppercase + string.ascii_lowercase


@command("renameCollection")
def _rename_collection(
    sandbox: Sandbox, db: str, body: dict[str, Any], connection: Connection
) -> dict[str, Any]:
    if db != "admin":
        raise CommandError(
            ErrorCode.UNAUTHORIZED, "renameCollection may only be run against the admin database."
        )
    source_db, source_name = _split_namespace(body["renameCollection"])
    target_db, target_name = _split_namespace(body.get("to"))
    drop_target = bool(body.get("dropTarget"))
    if (source_db, source_name) == (target_db, target_name):
        # The server's renameCollection command checks this before anything else.
        raise CommandError(ErrorCode.ILLEGAL_OPERATION, "Can't rename a collection to itself")
    with sandbox.condition:
        source = sandbox.store.get(source_db, source_name)
        if source is None:
            raise CommandError(ErrorCode.NAMESPACE_NOT_FOUND, "Source collection does not exist")
        if source.kind == "view":
            raise CommandError(ErrorCode.COMMAND_NOT_SUPPORTED_ON_VIEW, "cannot rename a view")
        target = sandbox.store.get(target_db, target_name)
        if target is not None:
            if target.kind == "view":
                raise CommandError(
                    ErrorCode.NAMESPACE_EXISTS,
                    f"a view already exists with that name: {target_db}.{target_name}",
                )
            if not drop_target:
                raise CommandError(ErrorCode.NAMESPACE_EXISTS, "target namespace exists")
        storage.validate_namespace(target_db, target_name)
        if source_db == target_db:
            _rename_within_database(sandbox, source, target_name)
        else:
            _rename_across_databases(sandbox, source, target_db, target_name)
    return {"ok": 1.0}


def _rename_within_database(sandbox: Sandbox, source: storage.Collection, name: str) -> None:
    """One ``rename`` event and nothing else, even when it replaces a collection: the server
    writes a single renameCollection oplog entry carrying the dropped target's UUID
    (rename_collection.cpp, renameCollectionAndDropTarget), and change streams emit no ``drop``
    for that target (SERVER-53478, open). The UUID only shows in the event's
    ``operationDescription`` with showExpandedEvents (manual: change-events/rename)."""
    replaced = sandbox.store.drop(source.db, name)
    old_name = source.name
    sandbox.store.rename(source, source.db, name)
    sandbox.oplog.append(
        "rename",
        source.db,
        old_name,
        to={"db": source.db, "coll": name},
        drop_target=None if replaced is None else replaced.uuid,
    )


def _rename_across_databases(
    sandbox: Sandbox, source: storage.Collection, db: str, name: str
) -> None:
    """A copy, as the server makes it (rename_collection.cpp, renameCollectionAcrossDatabases):
    create a staging collection in the target database, insert every document into it as
    ordinary, replicated inserts (database and cluster streams show them: SERVER-107688), rename
    it onto the target within that database (dropTarget semantics, one ``rename`` event), then
    drop the source (a ``drop`` in the source database). The staging collection's create and
    createIndexes only show with showExpandedEvents, which the sandbox never emits."""
    staging = sandbox.store.create(
        db, _staging_name(sandbox.store, db), source.kind, dict(source.options)
    )
    staging.indexes = {key: dict(spec) for key, spec in source.indexes.items()}
    for raw in source.documents():
        id_value = storage.decode(raw)["_id"]
        staging.insert(id_value, raw)
        sandbox.oplog.append(
            "insert", db, staging.name, document_key={"_id": id_value}, full_document=raw
        )
    _rename_within_database(sandbox, staging, name)
    sandbox.store.drop(source.db, source.name)
    sandbox.oplog.append("drop", source.db, source.name)


def _staging_name(store: storage.Store, db: str) -> str:
    while True:
        name = "".join(
            random.choice(_STAGING_CHARACTERS) if c == "%" else c for c in RENAME_STAGING_MODEL
        )
        if store.get(db, name) is None:
            return name


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """Encode a reply (which may embed stored RawBSONDocuments, copied as bytes)."""
    return bson.encode(reply, codec_options=storage.DECODE_OPTIONS)
