"""Errors that reach a user: each carries a message fit to print without a traceback."""

from __future__ import annotations


class MirrorError(Exception):
    """A failure the user can act on; the CLI prints it and exits non-zero."""


class ConfigError(MirrorError):
    """A setting is missing or invalid. Names the setting, never echoes a secret value."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class UnknownTableError(ConfigError):
    """A table named by the user (``--table``, a URL) is not one this mirror has."""

    def __init__(self, problem: str) -> None:
        super().__init__("--table", problem)


def describe_error(error: BaseException) -> str:
    """What a person reads about ``error`` (a message, a status, a recorded last error).

    A MongoDB or an Azure error as one line (code, message, request id) from its describer,
    never the raw reply that its ``str()`` carries (a RawBSONDocument's bytes, Azure's XML or
    JSON body); any other error as its own text, which is written to be read.
    """
    # Imported here: this module is imported by everything, the SDKs only where they are used.
    from azure.core.exceptions import AzureError
    from pymongo.errors import PyMongoError

    if isinstance(error, AzureError):
        from shared.storage_retry import describe as describe_azure

        return describe_azure(error)
    if isinstance(error, PyMongoError):
        from shared.source.retry import describe as describe_mongodb

        return describe_mongodb(error)
    return str(error)
