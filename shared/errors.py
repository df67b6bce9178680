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
