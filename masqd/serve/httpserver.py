"""The HTTP edge: /metrics, /healthz and /readyz on one address (--metrics-address).

prometheus-client's own handler serves /metrics (content negotiation, gzip, name[] filters);
the two probe paths answer 200 or 503 with a small JSON body saying why.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any, ClassVar

from prometheus_client.exposition import MetricsHandler

from masqd.core.flags import parse_address
from masqd.engine.supervisor import Supervisor
from masqd.serve.health import HealthCheck, Report
from masqd.serve.metrics import Metrics

log = logging.getLogger("masqd.http")


class _Handler(MetricsHandler):
    health: ClassVar[HealthCheck]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            super().do_GET()
        elif path in ("/healthz", "/livez"):
            self._report(self.health.healthz())
        elif path == "/readyz":
            self._report(self.health.readyz())
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def _report(self, report: Report) -> None:
        body = json.dumps(report.detail).encode() + b"\n"
        self._send(200 if report.ok else 503, body, "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class ObservabilityServer:
    """Metrics and probes for one supervisor, served on a thread of their own."""

    def __init__(self, supervisor: Supervisor, address: str, health_timeout: float) -> None:
        host, port = parse_address(address)
        self.metrics = Metrics(supervisor)
        self.health = HealthCheck(supervisor, health_timeout)
        handler = type(
            "Handler", (_Handler,), {"registry": self.metrics.registry, "health": self.health}
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = type("Server", (_Server,), {"address_family": family})
        try:
            self._server: ThreadingHTTPServer = server((host, port), handler)
        except OSError:
            self.close()
            raise
        self.address = address
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http", kwargs={"poll_interval": 0.5}
        )
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on http://%s", self.address)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self.close()

    def close(self) -> None:
        self.metrics.close()
        self.health.close()


def start(
    supervisor: Supervisor, address: str, health_timeout: float
) -> ObservabilityServer | None:
    """Serve on address (empty: not at all). A port we cannot bind is logged, not fatal:
    masquerading matters more than its metrics."""
    if not address:
        return None
    try:
        server = ObservabilityServer(supervisor, address, health_timeout)
    except (OSError, ValueError) as e:
        log.error("cannot serve metrics and health checks on %s: %s; running without", address, e)
        return None
    server.start()
    return server
