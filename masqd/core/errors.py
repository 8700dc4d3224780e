"""masqd's error vocabulary: one base class, and a `Kind` that says what went wrong.

The kind is data. It crosses the worker pipe as a value inside an outcome (a worker never
sends an exception or a string to be parsed), and only the API edge (`masqd.serve.convert`)
maps kinds to gRPC status codes. Subclasses exist where code catches one case and lets the
others through; each fixes its kind or takes one from a small set.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    """What failed, in the terms an operator acts on."""

    CONFIG = "config"
    """The config file cannot be used; the last good one stays in force."""
    NO_CONFIG = "no_config"
    """No valid config was ever loaded, so no rules are written."""
    REJECTED = "rejected"
    """iptables or the kernel refused the rules: trying again will not help."""
    LOCK = "lock"
    """Someone else held the xtables lock for too long; retried."""
    TIMEOUT = "timeout"
    """A command did not finish within its deadline; retried."""
    MISSING = "missing"
    """A tool the node must have is not installed."""
    WORKER_GONE = "worker_gone"
    """The family's worker process died or its pipe broke; it is restarted."""
    STOPPING = "stopping"
    """masqd is shutting down."""
    BAD_REQUEST = "bad_request"
    """A request masqd refuses as given."""
    NOT_ENABLED = "not_enabled"
    """The request names a family this masqd does not manage."""
    INTERNAL = "internal"
    """A bug: what happened is in the log."""

    @property
    def retryable(self) -> bool:
        """Whether the same attempt may succeed later without anyone changing anything."""
        return self in (Kind.LOCK, Kind.TIMEOUT)


class MasqdError(Exception):
    """The base of masqd's own errors: a message for people and a kind for code."""

    kind: Kind = Kind.INTERNAL

    def __init__(self, message: str, kind: Kind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self)

    @property
    def retryable(self) -> bool:
        return self.kind.retryable


class ConfigError(MasqdError, ValueError):
    """The policy file cannot be used; the last good configuration stays in force."""

    kind = Kind.CONFIG


class RequestError(MasqdError, ValueError):
    """A request masqd refuses; the message says why."""

    kind = Kind.BAD_REQUEST


class ApplyError(MasqdError):
    """Reading or writing the rules failed (an iptables command): REJECTED, LOCK, TIMEOUT or
    MISSING. stderr is the command's own words."""

    def __init__(self, message: str, kind: Kind, *, stderr: str = "") -> None:
        super().__init__(message, kind)
        self.stderr = stderr


class WorkerGone(MasqdError):
    """The worker process died or its pipe broke."""

    kind = Kind.WORKER_GONE


class Stopping(MasqdError):
    """masqd is shutting down; what was asked will not be done."""

    kind = Kind.STOPPING


class NoConfig(MasqdError):
    """No valid config has been loaded yet, so no rules are written."""

    kind = Kind.NO_CONFIG
