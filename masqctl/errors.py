"""masqctl's exit codes, and the error that carries one. No imports beyond the client's errors."""

from __future__ import annotations

import enum

from masqd.client.errors import ApiError, ClientError, Unreachable


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


def exit_code(error: ClientError) -> Exit:
    """The exit status for a failure of the API client."""
    if isinstance(error, Unreachable):
        return Exit.UNREACHABLE
    if isinstance(error, ApiError) and error.bad_request:
        return Exit.USAGE
    return Exit.FAILED
