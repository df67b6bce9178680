"""MongoDB's error codes by name, and the one exception type commands raise (the server
turns it into MongoDB's error reply)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """MongoDB's error codes the sandbox answers with, or that tests inject through
    `failCommand`, each with the codeName MongoDB sends beside it (drivers show it to users).

    Codes from an assertion site without a registered name travel as ``Location<code>``.
    """

    code_name: str

    def __new__(cls, code: int, code_name: str) -> ErrorCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.code_name = code_name
        return member

    INTERNAL_ERROR = 1, "InternalError"
    BAD_VALUE = 2, "BadValue"
    HOST_UNREACHABLE = 6, "HostUnreachable"
    HOST_NOT_FOUND = 7, "HostNotFound"
    FAILED_TO_PARSE = 9, "FailedToParse"
    UNAUTHORIZED = 13, "Unauthorized"
    TYPE_MISMATCH = 14, "TypeMismatch"
    ILLEGAL_OPERATION = 20, "IllegalOperation"
    INVALID_BSON = 22, "InvalidBSON"
    NAMESPACE_NOT_FOUND = 26, "NamespaceNotFound"
    INDEX_NOT_FOUND = 27, "IndexNotFound"
    PATH_NOT_VIABLE = 28, "PathNotViable"
    CONFLICTING_UPDATE_OPERATORS = 40, "ConflictingUpdateOperators"
    NO_MATCHING_DOCUMENT = 47, "NoMatchingDocument"
    CURSOR_NOT_FOUND = 43, "CursorNotFound"
    NAMESPACE_EXISTS = 48, "NamespaceExists"
    INVALID_ID_FIELD = 53, "InvalidIdField"
    COMMAND_NOT_FOUND = 59, "CommandNotFound"
    STALE_SHARD_VERSION = 63, "StaleShardVersion"
    IMMUTABLE_FIELD = 66, "ImmutableField"
    INVALID_OPTIONS = 72, "InvalidOptions"
    INVALID_NAMESPACE = 73, "InvalidNamespace"
    NETWORK_TIMEOUT = 89, "NetworkTimeout"
    SHUTDOWN_IN_PROGRESS = 91, "ShutdownInProgress"
    WRITE_CONFLICT = 112, "WriteConflict"
    COMMAND_NOT_SUPPORTED = 115, "CommandNotSupported"
    CONFLICTING_OPERATION_IN_PROGRESS = 117, "ConflictingOperationInProgress"
    FAILED_TO_SATISFY_READ_PREFERENCE = 133, "FailedToSatisfyReadPreference"
    CAPPED_POSITION_LOST = 136, "CappedPositionLost"
    STALE_EPOCH = 150, "StaleEpoch"
    COMMAND_NOT_SUPPORTED_ON_VIEW = 166, "CommandNotSupportedOnView"
    PRIMARY_STEPPED_DOWN = 189, "PrimarySteppedDown"
    TRANSACTION_TOO_OLD = 225, "TransactionTooOld"
    RETRY_CHANGE_STREAM = 234, "RetryChangeStream"
    NO_SUCH_TRANSACTION = 251, "NoSuchTransaction"
    TRANSACTION_COMMITTED = 256, "TransactionCommitted"
    INVALID_RESUME_TOKEN = 260, "InvalidResumeToken"
    EXCEEDED_TIME_LIMIT = 262, "ExceededTimeLimit"
    OPERATION_NOT_SUPPORTED_IN_TRANSACTION = 263, "OperationNotSupportedInTransaction"
    CHANGE_STREAM_FATAL_ERROR = 280, "ChangeStreamFatalError"
    CHANGE_STREAM_HISTORY_LOST = 286, "ChangeStreamHistoryLost"
    SOCKET_EXCEPTION = 9001, "SocketException"
    NOT_WRITABLE_PRIMARY = 10107, "NotWritablePrimary"
    BSON_OBJECT_TOO_LARGE = 10334, "BSONObjectTooLarge"
    DUPLICATE_KEY = 11000, "DuplicateKey"
    INTERRUPTED_AT_SHUTDOWN = 11600, "InterruptedAtShutdown"
    INTERRUPTED_DUE_TO_REPL_STATE_CHANGE = 11602, "InterruptedDueToReplStateChange"
    NOT_PRIMARY_NO_SECONDARY_OK = 13435, "NotPrimaryNoSecondaryOk"
    NOT_PRIMARY_OR_SECONDARY = 13436, "NotPrimaryOrSecondary"
    # Unnamed assertion sites, named here by what they refuse.
    GROUP_WITHOUT_ID = 15955, "Location15955"
    EXCLUSION_IN_INCLUSION_PROJECTION = 31254, "Location31254"
    GROUP_FIELD_NOT_ACCUMULATOR = 40234, "Location40234"
    BUCKET_AUTO_BUCKETS_NOT_POSITIVE = 40243, "Location40243"
    STAGE_NOT_ONE_FIELD = 40323, "Location40323"
    UNRECOGNIZED_PIPELINE_STAGE = 40324, "Location40324"
    MISSING_REQUIRED_FIELD = 40414, "Location40414"
    UNKNOWN_FIELD = 40415, "Location40415"
    NEW_ROOT_NOT_OBJECT = 40228, "Location40228"
    STAGE_ONLY_FIRST = 40602, "Location40602"
    MULTIPLE_RESUME_OPTIONS = 40674, "Location40674"
    SPLIT_SPEC_NOT_EMPTY = 7182800, "Location7182800"
    SPLIT_NOT_LAST = 7182802, "Location7182802"
    STAGE_USED_TWICE = 7183900, "Location7183900"
    MIN_MAX_WITHOUT_HINT = 51173, "Location51173"
    MIN_MAX_NOT_ON_INDEX = 51176, "Location51176"


# The NonResumableChangeStreamError category of error_codes.yml.
NON_RESUMABLE_CODES = frozenset(
    {ErrorCode.CHANGE_STREAM_FATAL_ERROR, ErrorCode.CHANGE_STREAM_HISTORY_LOST}
)
NON_RESUMABLE_LABEL = "NonResumableChangeStreamError"
_CODE_NAMES = {int(member): member.code_name for member in ErrorCode}


def code_name(code: int) -> str:
    """The codeName MongoDB sends with ``code`` (a test may inject any code through failCommand)."""
    return _CODE_NAMES.get(code, f"Location{code}")


class CommandError(Exception):
    """A command failure with MongoDB's code, message and error labels."""

    def __init__(self, code: int, message: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.labels = labels

    def reply(self) -> dict[str, Any]:
        """The `{ok: 0, ...}` document MongoDB answers with."""
        doc: dict[str, Any] = {"ok": 0.0, "errmsg": self.message, "code": int(self.code)}
        doc["codeName"] = code_name(self.code)
        labels = list(self.labels)
        if self.code in NON_RESUMABLE_CODES and NON_RESUMABLE_LABEL not in labels:
            # error_labels.cpp: every error of the NonResumableChangeStreamError category
            # carries the label of that name, whichever command failed.
            labels.append(NON_RESUMABLE_LABEL)
        if labels:
            doc["errorLabels"] = labels
        return doc


def unsupported(what: str) -> CommandError:
    """The error for MongoDB features the sandbox deliberately does not implement."""
    return CommandError(
        ErrorCode.COMMAND_NOT_SUPPORTED, f"{what} is not supported by the MongoDB sandbox"
    )
