"""masq-cni's own keys in the network configuration: where masqd listens, how long to wait
for it, and what to do when it does not answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from masqd.cni.spec import INVALID_CONFIG, UNSUPPORTED_FIELD, CniError

DEFAULT_SOCKET = "/run/masqd/masqd.sock"
DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 60.0
IGNORE, FAIL = "ignore", "fail"


@dataclass(frozen=True)
class PluginConfig:
    socket: str = DEFAULT_SOCKET
    """masqd's control API socket."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds to wait for masqd on ADD, CHECK and STATUS."""
    failure_policy: str = IGNORE
    """ignore: pass prevResult through when masqd cannot be reached in time; fail: error 11."""


def parse_timeout(value: object) -> float:
    """A Go duration string ("2s", "500ms", "1m") or a JSON number of seconds; 0 < t <= 60s."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CniError(
            INVALID_CONFIG,
            f"timeout must be a duration string like 2s or a number of seconds, got {value!r}",
        )
    if isinstance(value, str):
        from masqd.core.durations import parse_duration  # imports re: only when a string is given

        try:
            seconds = parse_duration(value)
        except ValueError as e:
            raise CniError(INVALID_CONFIG, f"timeout: {e}") from e
    else:
        seconds = float(value)
    if not 0 < seconds <= MAX_TIMEOUT:
        raise CniError(
            INVALID_CONFIG,
            f"timeout {value!r} is out of range: it must be more than 0 and at most "
            f"{MAX_TIMEOUT:g}s",
        )
    return seconds


def parse_failure_policy(value: object) -> str:
    """ignore or fail (any case: Kubernetes spells its policies Ignore and Fail)."""
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"failurePolicy must be a string, got {value!r}")
    policy = value.lower()
    if policy not in (IGNORE, FAIL):
        raise CniError(
            UNSUPPORTED_FIELD,
            f"unsupported failurePolicy {value!r}",
            f"failurePolicy must be {IGNORE!r} or {FAIL!r}",
        )
    return policy


def parse_socket(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise CniError(INVALID_CONFIG, f"socket must be a non-empty path, got {value!r}")
    return value


def plugin_config(netconf: Mapping[str, Any]) -> PluginConfig:
    """Read our keys from the network configuration; absent keys take their defaults."""
    values: dict[str, Any] = {}
    if "socket" in netconf:
        values["socket"] = parse_socket(netconf["socket"])
    if "timeout" in netconf:
        values["timeout"] = parse_timeout(netconf["timeout"])
    if "failurePolicy" in netconf:
        values["failure_policy"] = parse_failure_policy(netconf["failurePolicy"])
    return PluginConfig(**values)
