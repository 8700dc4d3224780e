"""masqctl's exit codes and the errors that carry them. No imports beyond the standard library."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """What masqctl's exit status means (SPEC §5)."""

    OK = 0
    FAILED = 1
    """The operation ran and failed: a sync failed, masqd is not healthy, the config is invalid."""
    USAGE = 2
    """The command line, or a value in it, is wrong."""
    UNREACHABLE = 3
    """masqd did not answer on its socket."""


class CommandError(Exception):
    """An error to print (to stderr) and exit with."""

    def __init__(self, message: str, code: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.code = code


class Unreachable(CommandError):
    """Nothing serves the control API on the socket, or it cannot be reached."""

    def __init__(self, socket: str, reason: str) -> None:
        super().__init__(f"masqd is unreachable on {socket}: {reason}", Exit.UNREACHABLE)
        self.socket = socket


class ApiError(CommandError):
    """masqd answered with an error status; the code name is kept for callers that care."""

    def __init__(self, status: str, message: str, code: Exit = Exit.FAILED) -> None:
        super().__init__(message, code)
        self.status = status
