"""masq-cni's own keys in the network configuration: where masqd listens, how long to wait
for it, and what to do when it does not answer."""

from __future__ import annotations

from masqd.cni.spec import INVALID_CONFIG, UNSUPPORTED_FIELD, CniError
from masqd.core.defaults import DEFAULT_SOCKET

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 60.0
IGNORE, FAIL = "ignore", "fail"


# One number and one unit ("2s", "500ms", "1.5m"), the form a conflist entry takes, is read
# here; anything longer goes to masqd.durations, whose regular expression costs an ADD ~5 ms.
_SIMPLE_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0}


class PluginConfig:
    """masq-cni's settings from its conflist entry."""

    __slots__ = ("failure_policy", "socket", "timeout")

    def __init__(
        self,
        socket: str = DEFAULT_SOCKET,
        timeout: float = DEFAULT_TIMEOUT,
        failure_policy: str = IGNORE,
    ) -> None:
        self.socket = socket
        """masqd's control API socket."""
        self.timeout = timeout
        """Seconds to wait for masqd on ADD, CHECK and STATUS."""
        self.failure_policy = failure_policy
        """ignore: pass prevResult through when masqd cannot be reached in time; fail: 11."""


def _simple_duration(text: str) -> float | None:
    """Seconds for "<digits>[.<digits>]<ms|s|m>", None for any other form."""
    for unit in ("ms", "s", "m"):
        number = text.removesuffix(unit)
        if number != text:
            whole, _, fraction = number.partition(".")
            digits = whole + fraction
            if whole and digits.isascii() and digits.isdigit():
                return float(number) * _SIMPLE_UNITS[unit]
            return None
    return None


def parse_timeout(value: object) -> float:
    """A Go duration string ("2s", "500ms", "1m") or a JSON number of seconds; 0 < t <= 60s."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CniError(
            INVALID_CONFIG,
            f"timeout must be a duration string like 2s or a number of seconds, got {value!r}",
        )
    if isinstance(value, str):
        simple = _simple_duration(value)
        if simple is not None:
            seconds = simple
        else:
            from masqd.core.durations import parse_duration

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
