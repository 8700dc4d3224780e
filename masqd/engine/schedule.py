"""The resync schedule: when the next interval sync is due, and a temporary override of the
configured interval with a time to live.

Written by the config loop (a new resyncInterval, the syncs it runs) and by API callers
(overrides), read by status: every method takes the lock. No threads and no I/O; both clocks
are injected, the monotonic one for deciding and the wall clock only for what people read
(an override's expiry time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from masqd.core.config import MAX_RESYNC_INTERVAL, MIN_RESYNC_INTERVAL
from masqd.core.errors import RequestError
from masqd.core.status import Interval, Override

MAX_OVERRIDE_TTL = 24 * 3600.0
DEFAULT_INTERVAL = 60.0
"""The interval until a config was loaded (resyncInterval's default)."""


class Schedule:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._configured = DEFAULT_INTERVAL
        self._override: Override | None = None
        self._override_until = 0.0  # the override's end on the monotonic clock
        self._next = clock() + DEFAULT_INTERVAL

    def interval(self) -> Interval:
        with self._lock:
            return self._interval()

    def _interval(self) -> Interval:
        override = self._override
        if override is not None and self._clock() < self._override_until:
            return Interval(override.interval, self._configured, "override", override)
        return Interval(self._configured, self._configured, "config")

    def configure(self, seconds: float) -> None:
        """The config's resyncInterval is now `seconds`; the next sync comes no later than
        that from now."""
        with self._lock:
            self._configured = seconds
            self._pull_in()

    def set_override(self, interval: float, ttl: float) -> Override:
        """Use `interval` instead of the configured one for `ttl` seconds; RequestError when
        either is out of bounds. The next sync is due one new interval from now."""
        if not MIN_RESYNC_INTERVAL <= interval <= MAX_RESYNC_INTERVAL:
            raise RequestError(f"interval {interval:g}s is out of bounds: it must be 1s to 24h")
        if not 0 < ttl <= MAX_OVERRIDE_TTL:
            raise RequestError(
                f"ttl {ttl:g}s is out of bounds: it must be more than 0 and up to 24h"
            )
        with self._lock:
            self._override = Override(interval, self._wall() + ttl)
            self._override_until = self._clock() + ttl
            self._next = self._clock() + interval
            return self._override

    def clear_override(self) -> bool:
        """Go back to the configured interval; False when no override was set."""
        with self._lock:
            if self._override is None:
                return False
            self._override = None
            self._pull_in()
            return True

    def expire(self) -> Override | None:
        """End an override whose time is up; returns it (None when none ended now). The next
        sync is then one configured interval from now."""
        with self._lock:
            override = self._override
            if override is None or self._clock() < self._override_until:
                return None
            self._override = None
            self._next = self._clock() + self._configured
            return override

    def due(self) -> bool:
        """Whether the interval sync is due now."""
        with self._lock:
            return self._clock() >= self._next

    def ran(self) -> None:
        """The interval sync ran: the next is one interval from now."""
        with self._lock:
            self._next = self._clock() + self._interval().effective

    def seconds_left(self) -> float:
        """Until the interval sync is due, or an override ends, whichever is first."""
        with self._lock:
            now = self._clock()
            until = self._next
            if self._override is not None:
                until = min(until, self._override_until)
            return max(0.0, until - now)

    def _pull_in(self) -> None:
        self._next = min(self._next, self._clock() + self._interval().effective)
