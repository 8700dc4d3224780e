"""/healthz and /readyz: is masqd doing its job for every family, and has each synced once.

Healthy is `masqd.core.health.assess`, the same verdict the gRPC health service (and so
`masqctl health`) gives: unhealthy as soon as a family is known to be failing (a hung worker, a
refused or untaken write, a tool that times out, a runner that fails), or a requested sync has
not been applied within the timeout. The xtables lock held by someone else, and no valid config
yet, are reported but only fail past the timeout: a restart would not help them. A bad config
file with a last good one in force is not unhealthy at all: the last good rules stay in force.

Ready once the first sync of every enabled family succeeded; it stays ready after.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from masqd.core.health import assess
from masqd.core.model import Event, Family
from masqd.engine.supervisor import Supervisor


@dataclass(frozen=True)
class Report:
    ok: bool
    detail: dict[str, object]


class HealthCheck:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.timeout = supervisor.settings.health_timeout
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
        status = self.sup.status()
        faults = [f for f in status.faults if f.ongoing]
        for f in status.families:
            verdict = assess(f, now, self.timeout)
            ok = ok and verdict.healthy
            since = f.pending_since
            last = f.last_result
            families[f.family.label] = {
                "healthy": verdict.healthy,
                "reason": verdict.reason,
                "pendingSeconds": round(0.0 if since is None else max(0.0, now - since), 3),
                "lastError": last.error if last is not None and not last.ok else "",
            }
        ok = ok and not faults
        detail: dict[str, object] = {
            "healthy": ok,
            "timeoutSeconds": self.timeout,
            "families": families,
        }
        if faults:
            detail["faults"] = [f"{f.thread}: {f.error}" for f in faults]
        return Report(ok, detail)

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
