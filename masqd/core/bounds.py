"""The bounds of every duration masqd takes, in one place: its flags, masqctl's, the config file
and the API all check against these. Pure.

A value outside them is refused where it enters, never clamped: an infinite or NaN interval
made a loop spin or a thread die, a negative socket mode a world-writable socket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from masqd.core.durations import format_duration, parse_duration


@dataclass(frozen=True)
class Bounds:
    """Seconds from `low` to `high`, both included (`low_open`: `low` itself excluded)."""

    low: float
    high: float
    low_open: bool = False

    def contains(self, seconds: float) -> bool:
        below = seconds <= self.low if self.low_open else seconds < self.low
        return math.isfinite(seconds) and not below and seconds <= self.high

    def check(self, seconds: float, what: str = "") -> float:
        """seconds, when finite and within; ValueError naming it (and what) otherwise."""
        prefix = f"{what}: " if what else ""
        if not math.isfinite(seconds):
            raise ValueError(f"{prefix}{seconds} is not a finite duration")
        if not self.contains(seconds):
            raise ValueError(f"{prefix}{_show(seconds)} is out of bounds; it must be {self}")
        return seconds

    def parse(self, text: str, what: str = "") -> float:
        """A Go duration string ("10s") within the bounds; ValueError saying why not."""
        prefix = f"{what}: " if what else ""
        if len(text) > 64:
            raise ValueError(f"{prefix}{text[:20]!r}... is too long to be a duration")
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise ValueError(f"{prefix}{e}") from None
        return self.check(seconds, what)

    def __str__(self) -> str:
        low = f"more than {_show(self.low)}" if self.low_open else f"at least {_show(self.low)}"
        return f"{low} and at most {_show(self.high)}"


def _show(seconds: float) -> str:
    """Go's form where it reads well, else the number."""
    if math.isfinite(seconds) and abs(seconds) < 1e12:
        return format_duration(seconds)
    return f"{seconds:g}s"


HOUR = 3600.0
DAY = 24 * HOUR

RESYNC_INTERVAL = Bounds(1.0, DAY)
"""resyncInterval in the file, and an override's interval."""
OVERRIDE_TTL = Bounds(0.0, DAY, low_open=True)
"""How long an override lasts."""
DRIFT_CHECK_INTERVAL = Bounds(0.1, HOUR)
"""--drift-check-interval (seconds)."""
HEALTH_TIMEOUT = Bounds(1.0, DAY)
"""--health-timeout."""
IPTABLES_TIMEOUT = Bounds(1.0, 5 * 60.0)
"""--iptables-timeout: the longest one iptables command may run."""
RETRY_DEADLINE = Bounds(0.0, HOUR)
"""--retry-deadline: how long a sync retries what may pass (0: no retries)."""
CLIENT_TIMEOUT = Bounds(0.0, HOUR, low_open=True)
"""masqctl's --timeout."""
