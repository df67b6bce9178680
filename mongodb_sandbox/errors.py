"""The one exception type commands raise; the server turns it into MongoDB's error reply."""

from __future__ import annotations

from typing import Any

# The names MongoDB gives the codes the sandbox answers with, or that tests inject through
# `failCommand` (drivers show codeName to users).
CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    9: "FailedToParse",
    14: "TypeMismatch",
    20: "IllegalOperation",
    22: "InvalidBSON",
    26: "NamespaceNotFound",
    28: "PathNotViable",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    48: "NamespaceExists",
    53: "InvalidIdField",
    59: "CommandNotFound",
    66: "ImmutableField",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    115: "CommandNotSupported",
    166: "CommandNotSupportedOnView",
    189: "PrimarySteppedDown",
    260: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    9001: "SocketException",
    10107: "NotWritablePrimary",
    10334: "BSONObjectTooLarge",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    31254: "Location31254",
    40324: "Location40324",
}


class CommandError(Exception):
    """A command failure with MongoDB's code, message and error labels."""

    def __init__(self, code: int, message: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.labels = labels

    def reply(self) -> dict[str, Any]:
        """The `{ok: 0, ...}` document MongoDB answers with."""
        doc: dict[str, Any] = {"ok": 0.0, "errmsg": self.message, "code": self.code}
        doc["codeName"] = CODE_NAMES.get(self.code, f"Location{self.code}")
        if self.labels:
            doc["errorLabels"] = list(self.labels)
        return doc


def unsupported(what: str) -> CommandError:
    """The error for MongoDB features the sandbox deliberately does not implement."""
    return CommandError(115, f"{what} is not supported by the MongoDB sandbox")
