"""/healthz and /readyz: is the sync loop alive, and has every family been synced once.

Healthy, as kube-proxy's health check: unless a sync was requested (at startup, on a config
change, by the interval, the API or the CNI plugin) and has not been applied for longer than
the timeout. Requests that arrive together are served by one sync, so the clock runs from the
oldest request not yet applied; a failed sync leaves its requests pending, and only a sync
that succeeded afterwards (or a drift check that found the chain as desired) stops the clock.
A lock held by someone else is retried and only counts for as long as it lasts, so brief
contention never fails the check; the default timeout (60 s) is twice the retry deadline.
A bad config file is not unhealthy: restarting masqd would not fix it, and the last good
rules stay in force.

Ready once the first sync of every enabled family succeeded; it stays ready after.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from masqd.core.model import Event, Family
from masqd.engine.supervisor import Supervisor

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Report:
    ok: bool
    detail: dict[str, object]


class HealthCheck:
    def __init__(self, supervisor: Supervisor, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sup = supervisor
        self.timeout = timeout
        self._lock = threading.Lock()
        self._synced: set[Family] = {
            f.family for f in supervisor.status().families if f.last_result and f.last_result.ok
        }
        self._unsubscribe = supervisor.events.subscribe(self._on_event)

    def _on_event(self, event: Event | None) -> None:
        if event is not None and event.result is not None and event.result.ok:
            with self._lock:
                self._synced.add(event.result.family)

    def healthz(self) -> Report:
        now = time.monotonic()
        families: dict[str, object] = {}
        ok = True
        for f in self.sup.status().families:
            since = f.pending_since
            pending = 0.0 if since is None else max(0.0, now - since)
            stuck = pending > self.timeout
            ok = ok and not stuck
            last = f.last_result
            families[f.family.label] = {
                "healthy": not stuck,
                "pendingSeconds": round(pending, 3),
                "lastError": last.error if last is not None and not last.ok else "",
            }
        return Report(ok, {"healthy": ok, "timeoutSeconds": self.timeout, "families": families})

    def readyz(self) -> Report:
        """Ready once every family synced; a family that is not says why its last sync failed
        (say, a backend refused on this node)."""
        with self._lock:
            synced = set(self._synced)
        families = {f.label: f in synced for f in self.sup.settings.families}
        ok = all(families.values())
        detail: dict[str, object] = {"ready": ok, "families": families}
        errors = {
            f.family.label: f.last_result.error
            for f in self.sup.status().families
            if f.family not in synced and f.last_result is not None and not f.last_result.ok
        }
        if errors:
            detail["errors"] = errors
        return Report(ok, detail)

    def close(self) -> None:
        self._unsubscribe()
