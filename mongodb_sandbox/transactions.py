"""Multi-document transactions, as a replica-set primary runs them for a driver's session.

What is modelled (sources: the manual's "Transactions", "Production Considerations" and
"Drivers API" pages, the drivers' transactions specification, and the server's
``error_labels.cpp`` and ``write_ops_exec.cpp``):

- A transaction is the session's ``txnNumber`` started by a command carrying
  ``startTransaction: true, autocommit: false``; its later statements carry ``autocommit: false``
  and the same number; ``commitTransaction`` / ``abortTransaction`` run on ``admin``.
- Snapshot isolation. The transaction reads and writes a private copy of the data taken when it
  starts (``Store.snapshot``), so its reads see its own writes and nothing committed after it
  began; nobody else sees its writes until the commit applies them all at once, under the
  server lock, as one oplog batch sharing one cluster time (see ``Oplog.append_transaction``).
- Write conflicts (``WriteConflict``, 112, labelled ``TransientTransactionError``; the
  transaction is aborted): a transaction writing a document another open transaction has
  written, or one committed by anyone after this transaction began. A write outside any
  transaction to a document an open transaction has written waits until that transaction ends
  (the manual, "In-progress Transactions and Write Conflicts"), at most until the transaction
  outlives ``transactionLifetimeLimitSeconds`` (60 s), when it is aborted as the server's
  periodic reaper does.
- Errors: a statement of an unknown, aborted or expired transaction fails with
  ``NoSuchTransaction`` (251) and ``TransientTransactionError``; a commit retried after its
  success answers ok, an abort after a commit ``TransactionCommitted`` (256); an older
  ``txnNumber`` ``TransactionTooOld`` (225). A failed statement aborts the transaction
  (``write_ops_exec.cpp``: in a transaction a write error ends the batch and aborts it).
- A collection dropped, renamed or re-created under an open transaction that wrote it makes
  the commit fail with ``WriteConflict`` (a real server makes the DDL wait for the transaction
  instead; the outcome for the mirror, one of the two applied after the other, is the same).

Not modelled: prepared and distributed transactions, ``create``/``createIndexes`` inside a
transaction (refused with 263), and statements run while another is still running on the same
session.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bson.binary import Binary
from bson.int64 import Int64

from mongodb_sandbox import ordering, storage
from mongodb_sandbox.errors import CommandError, ErrorCode
from mongodb_sandbox.oplog import Entry

if TYPE_CHECKING:
    from mongodb_sandbox.commands import Connection, Handler, Sandbox

TRANSIENT = "TransientTransactionError"
# The server's transactionLifetimeLimitSeconds default.
LIFETIME_SECONDS = 60.0
# Without authentication a session's uid is the SHA-256 of the empty user name
# (logical_session_id_helpers.cpp, kNoAuthDigest); change events carry it in lsid.uid.
NO_AUTH_DIGEST = Binary(hashlib.sha256(b"").digest())
# Commands a transaction may run (the manual, "Operations in Transactions"); the server refuses
# the rest with OperationNotSupportedInTransaction.
STATEMENTS = frozenset(
    {
        "insert",
        "update",
        "delete",
        "findAndModify",
        "findandmodify",
        "find",
        "aggregate",
        "distinct",
        "getMore",
        "killCursors",
    }
)
ENDS = ("commitTransaction", "abortTransaction")

IN_PROGRESS, COMMITTED, ABORTED = "in progress", "committed", "aborted"
DocumentKey = tuple[str, str, ordering.SortKey]


class TransactionFailed(Exception):
    """Raised inside a statement to fail the whole command (not one write of its batch) and
    abort the transaction: handlers catch CommandError per write, never this."""

    def __init__(self, error: CommandError) -> None:
        super().__init__(error.message)
        self.error = error


def write_conflict() -> CommandError:
    return CommandError(
        ErrorCode.WRITE_CONFLICT,
        "Caused by :: Write conflict during plan execution and yielding is disabled. :: Please "
        "retry your operation or multi-document transaction.",
        (TRANSIENT,),
    )


@dataclass
class Transaction:
    lsid: dict[str, Any]  # as change events show it: {id, uid}
    number: int
    store: storage.Store
    start_seq: int
    deadline: float
    state: str = IN_PROGRESS
    # Each document written, in the order first written, and the operations to log at commit.
    keys: dict[DocumentKey, None] = field(default_factory=dict)
    operations: list[tuple[str, str, str | None, dict[str, Any]]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{{ txnNumber: {self.number} }}"


@dataclass
class Session:
    txn_number: int = -1
    transaction: Transaction | None = None


class Recorder:
    """The oplog as a transaction's statements see it: their operations are kept for the commit,
    each checked for a write conflict as it is made."""

    def __init__(self, transactions: Transactions, transaction: Transaction) -> None:
        self._transactions = transactions
        self._transaction = transaction
        self.clock = transactions.sandbox.oplog.clock
        self.condition = transactions.sandbox.oplog.condition

    def append(self, operation: str, db: str, coll: str | None, **fields: Any) -> Entry | None:
        assert coll is not None and fields.get("document_key") is not None
        key = (db, coll, ordering.sort_key(fields["document_key"]["_id"]))
        self._transactions.claim(self._transaction, key)
        self._transaction.operations.append((operation, db, coll, fields))
        return None


class Transactions:
    """Every session's transaction state. Used under the sandbox's lock."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.lifetime_seconds = LIFETIME_SECONDS
        self._sessions: dict[bytes, Session] = {}
        self._open: dict[DocumentKey, Transaction] = {}  # document -> the open txn holding it
        self._open_count = 0

    @property
    def holding(self) -> bool:
        """Whether any open transaction holds a document (writes outside them may wait)."""
        return bool(self._open)

    # -- statements ----------------------------------------------------------------------------

    def run(
        self,
        handler: Handler,
        name: str,
        db: str,
        body: dict[str, Any],
        connection: Connection,
    ) -> dict[str, Any]:
        """One command of a transaction (it carries ``autocommit: false``)."""
        if name in ENDS and db != "admin":
            raise CommandError(
                ErrorCode.UNAUTHORIZED, f"{name} may only be run against the admin database."
            )
        if name in ENDS and not in_transaction(body):
            raise CommandError(
                ErrorCode.INVALID_OPTIONS, f"{name} must be run within a transaction"
            )
        lsid, number = _session_fields(body)
        with self.sandbox.condition:
            session = self._sessions.setdefault(bytes(lsid["id"]), Session())
            if number < session.txn_number:
                raise CommandError(
                    ErrorCode.TRANSACTION_TOO_OLD,
                    f"Cannot start transaction {number} on session because a newer transaction "
                    f"{session.txn_number} has already started.",
                )
            if body.get("startTransaction"):
                transaction = self._start(session, lsid, number, name)
            else:
                transaction = self._current(session, number, name)
                if transaction.state == COMMITTED:
                    if name == "commitTransaction":
                        return {"ok": 1.0}  # a retried commit (the drivers' spec) succeeds
                    raise CommandError(
                        ErrorCode.TRANSACTION_COMMITTED,
                        f"Transaction with {transaction.label} has been committed.",
                    )
            if name == "commitTransaction":
                self._commit(transaction)
                return {"ok": 1.0}
            if name == "abortTransaction":
                self._end(transaction, ABORTED)
                return {"ok": 1.0}
            return self._statement(transaction, handler, name, db, body, connection)

    def _start(
        self, session: Session, lsid: Mapping[str, Any], number: int, name: str
    ) -> Transaction:
        if number == session.txn_number:
            raise CommandError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"Cannot start a transaction at given transaction number {number} on session "
                "because a transaction with the same number has already started.",
            )
        if name in ENDS:
            raise _no_such_transaction(f"Transaction {number} has not been started.")
        if session.transaction is not None and session.transaction.state == IN_PROGRESS:
            self._end(session.transaction, ABORTED)  # a newer number aborts the open one
        session.txn_number = number
        if self._open_count == 0:
            self.sandbox.oplog.written = {}
        self._open_count += 1
        transaction = Transaction(
            lsid={"id": lsid["id"], "uid": NO_AUTH_DIGEST},
            number=number,
            store=self.sandbox.store.snapshot(),
            start_seq=self.sandbox.oplog.last_seq,
            deadline=time.monotonic() + self.lifetime_seconds,
        )
        session.transaction = transaction
        return transaction

    def _current(self, session: Session, number: int, name: str) -> Transaction:
        transaction = session.transaction
        if transaction is None or number != session.txn_number:
            raise _no_such_transaction(
                f"Given transaction number {number} does not match any in-progress transactions. "
                f"The active transaction number is {session.txn_number}"
            )
        if transaction.state == IN_PROGRESS and time.monotonic() >= transaction.deadline:
            self._end(transaction, ABORTED)  # what the reaper would have done by now
        if transaction.state == ABORTED:
            raise _no_such_transaction(f"Transaction with {transaction.label} has been aborted.")
        return transaction

    def _statement(
        self,
        transaction: Transaction,
        handler: Handler,
        name: str,
        db: str,
        body: dict[str, Any],
        connection: Connection,
    ) -> dict[str, Any]:
        if name not in STATEMENTS or _opens_change_stream(name, body):
            self._end(transaction, ABORTED)
            raise CommandError(
                ErrorCode.OPERATION_NOT_SUPPORTED_IN_TRANSACTION,
                f"Cannot run '{name}' in a multi-document transaction.",
            )
        # The statement runs against the transaction's snapshot, its changes logged for the
        # commit; the cursors, faults and lock stay the server's.
        view = copy.copy(self.sandbox)
        view.store = transaction.store
        view.oplog = Recorder(self, transaction)  # type: ignore[assignment]
        view.transaction = transaction
        # In a transaction the first failed write ends the batch (write_ops_exec.cpp).
        statement = {**body, "ordered": True} if name in ("insert", "update", "delete") else body
        try:
            reply = handler(view, db, statement, connection)
        except TransactionFailed as failure:
            self._end(transaction, ABORTED)
            raise failure.error from None
        except Exception:
            self._end(transaction, ABORTED)
            raise
        if reply.get("writeErrors"):
            self._end(transaction, ABORTED)
        return reply

    # -- conflicts -----------------------------------------------------------------------------

    def claim(self, transaction: Transaction, key: DocumentKey) -> None:
        """``transaction`` writes the document ``key``: WriteConflict if another open transaction
        holds it or anyone committed a write to it after ``transaction`` began."""
        holder = self._open.get(key)
        written = self.sandbox.oplog.written or {}
        changed = max(written.get(key, 0), written.get((key[0], key[1], None), 0))
        changed = max(changed, written.get((key[0], None, None), 0))  # (dropDatabase)
        if (holder is not None and holder is not transaction) or changed > transaction.start_seq:
            raise TransactionFailed(write_conflict())
        if holder is None:
            self._open[key] = transaction
            transaction.keys[key] = None

    def wait_for(self, db: str, coll: str, id_value: Any) -> None:
        """A write outside any transaction waits while an open transaction holds the document."""
        if not self._open:
            return
        key = (db, coll, ordering.sort_key(id_value))
        while (holder := self._open.get(key)) is not None:
            if self.sandbox.stopping.is_set():
                raise CommandError(ErrorCode.INTERRUPTED_AT_SHUTDOWN, "interrupted at shutdown")
            remaining = holder.deadline - time.monotonic()
            if remaining <= 0:
                self._end(holder, ABORTED)  # outlived transactionLifetimeLimitSeconds
                continue
            self.sandbox.condition.wait(remaining)

    # -- the end -------------------------------------------------------------------------------

    def _commit(self, transaction: Transaction) -> None:
        store = self.sandbox.store
        namespaces = {(db, coll) for db, coll, _ in transaction.keys}
        for db, coll in namespaces:
            written = self.sandbox.oplog.written or {}
            base = store.get(db, coll)
            mine = transaction.store.get(db, coll)
            assert mine is not None
            replaced = base is not None and base.uuid != mine.uuid
            dropped = max(written.get((db, coll, None), 0), written.get((db, None, None), 0))
            if replaced or dropped > transaction.start_seq:
                self._end(transaction, ABORTED)
                raise write_conflict()
        for db, coll, key in transaction.keys:
            mine = transaction.store.get(db, coll)
            assert mine is not None
            base = store.get(db, coll)
            if base is None:
                base = store.create(db, coll, mine.kind, dict(mine.options))
                base.uuid = mine.uuid
            document = mine.get(key)
            if document is None:
                if base.get(key) is not None:
                    base.delete(key)
            elif base.get(key) is None:
                base.insert(storage.decode(document)["_id"], document)
            else:
                base.replace(key, document)
        if transaction.operations:
            self.sandbox.oplog.append_transaction(
                transaction.operations, transaction.lsid, Int64(transaction.number)
            )
        self._end(transaction, COMMITTED)

    def _end(self, transaction: Transaction, state: str) -> None:
        if transaction.state != IN_PROGRESS:
            return
        transaction.state = state
        for key in transaction.keys:
            if self._open.get(key) is transaction:
                del self._open[key]
        # Its snapshot and operations are applied or discarded: only its outcome is kept.
        transaction.store = storage.Store()
        transaction.operations = []
        self._open_count -= 1
        if self._open_count == 0:
            self.sandbox.oplog.written = None
        self.sandbox.condition.notify_all()

    def end_sessions(self, sessions: list[Any]) -> None:
        """endSessions/killSessions abort the sessions' open transactions."""
        with self.sandbox.condition:
            for lsid in sessions:
                if not isinstance(lsid, Mapping) or "id" not in lsid:
                    continue
                session = self._sessions.pop(bytes(lsid["id"]), None)
                if session is not None and session.transaction is not None:
                    self._end(session.transaction, ABORTED)


def in_transaction(body: Mapping[str, Any]) -> bool:
    """Whether a command belongs to a transaction (drivers send ``autocommit: false``)."""
    return "autocommit" in body or "startTransaction" in body


def _session_fields(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], int]:
    # The checks and messages of the server's OperationSessionInfoFromClient parsing.
    if body.get("autocommit") is not False:
        raise CommandError(ErrorCode.INVALID_OPTIONS, "Specifying autocommit=true is not allowed.")
    if "startTransaction" in body and body["startTransaction"] is not True:
        raise CommandError(
            ErrorCode.INVALID_OPTIONS, "Specifying startTransaction=false is not allowed."
        )
    lsid = body.get("lsid")
    number = body.get("txnNumber")
    if number is None:
        raise CommandError(
            ErrorCode.INVALID_OPTIONS,
            "'autocommit' field requires a transaction number to also be specified",
        )
    if not isinstance(lsid, Mapping) or "id" not in lsid:
        raise CommandError(
            ErrorCode.INVALID_OPTIONS,
            "Transaction number requires a session ID to also be specified",
        )
    return lsid, int(number)


def _opens_change_stream(name: str, body: Mapping[str, Any]) -> bool:
    pipeline = body.get("pipeline") if name == "aggregate" else None
    return isinstance(pipeline, list) and any(
        isinstance(stage, Mapping) and ({"$changeStream", "$out", "$merge"} & set(stage))
        for stage in pipeline
    )


def _no_such_transaction(message: str) -> CommandError:
    return CommandError(ErrorCode.NO_SUCH_TRANSACTION, message, (TRANSIENT,))
