"""What can go wrong asking masqd, for both of the client's paths (grpcio, and masq-cni's
standard-library one). Imports nothing: masq-cni loads it on every pod start.

masqctl turns these into exit codes (masqctl/errors.py), masq-cni into its failure policy.
"""

from __future__ import annotations


class ClientError(Exception):
    """Asking masqd failed; the message says why, in an operator's words."""


class Unreachable(ClientError):
    """Nothing answered on the socket (in time): masqd is not running, restarting, or the
    socket is not ours to use."""

    def __init__(self, socket: str, reason: str) -> None:
        super().__init__(f"masqd is unreachable on {socket}: {reason}")
        self.socket = socket


class ApiError(ClientError):
    """masqd answered with an error status; `status` is the gRPC code's name."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def bad_request(self) -> bool:
        """masqd refused the request as given (INVALID_ARGUMENT)."""
        return self.status == "INVALID_ARGUMENT"


class SyncFailed(ClientError):
    """masqd answered, and a family's sync failed; the message names each and why."""
