"""The standard gRPC health service (grpc.health.v1) for masqd, which `masqctl health` asks.

Entries: "" and the Control service (overall), "ipv4" and "ipv6" (each family). A family is
SERVING as `masqd.core.health.assess` says (`serving`); overall SERVING when every family is
and no thread of masqd's is failing. The verdict depends on time as well as on events (a sync
pending past the health timeout), so a Check judges afresh; Watch streams are updated on every
event and by the server's periodic look.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health, health_pb2

from masqd.core.health import assess
from masqd.engine.supervisor import Supervisor

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthService(health.aio.HealthServicer):  # type: ignore[misc]
    def __init__(self, supervisor: Supervisor, overall: tuple[str, ...]) -> None:
        super().__init__()
        self.sup = supervisor
        self._overall = ("", *overall)
        self._lock = threading.Lock()
        self._last: dict[str, bool] = {}

    def serving(self) -> dict[str, bool]:
        """Each entry's verdict now."""
        status = self.sup.status()
        now, timeout = time.monotonic(), self.sup.settings.health_timeout
        families = {f.family.label: assess(f, now, timeout).serving for f in status.families}
        overall = bool(families) and all(families.values())
        overall = overall and not any(f.ongoing for f in status.faults)
        return {**dict.fromkeys(self._overall, overall), **families}

    def changes(self, schedule: Callable[[dict[str, bool]], None]) -> None:
        """From any thread: judge again, and hand what changed to schedule() (in order: under
        the lock), which must get it applied on the server's loop."""
        with self._lock:
            now = self.serving()
            changed = {k: v for k, v in now.items() if self._last.get(k) != v}
            if changed:
                self._last.update(changed)
                schedule(changed)

    async def apply(self, changed: dict[str, bool]) -> None:
        for name, ok in changed.items():
            await self.set(name, _SERVING if ok else _NOT_SERVING)

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        pending: list[dict[str, bool]] = []
        self.changes(pending.append)
        for changed in pending:
            await self.apply(changed)
        return await super().Check(request, context)
