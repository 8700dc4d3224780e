"""The HTTP edge: /metrics, /healthz and /readyz on one address (--metrics-address).

One asyncio event loop on one thread serves every connection: a connection costs a descriptor
and a coroutine, never a thread. The port is reachable by any local user (127.0.0.1:9153 by
default), so what one can hold is bounded: at most MAX_CONNECTIONS at once (more are closed on
arrival, with a log line), each closed after IDLE_TIMEOUT without a whole request or while a
response is not read, and a request head of at most MAX_HEAD bytes. Out of descriptors, the
loop's accept waits a moment and tries again (asyncio does this), it does not end.

/metrics is rendered on a small thread pool, because a scrape may wait for a worker busy with
a sync (serve/metrics.py); the probes are answered on the loop. The rendering is
prometheus-client's own (content negotiation, gzip, name[] filters).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry, RestrictedRegistry

from masqd.core.flags import parse_address
from masqd.engine.supervisor import Supervisor
from masqd.serve.health import HealthCheck, Report
from masqd.serve.metrics import Metrics

log = logging.getLogger("masqd.http")

MAX_CONNECTIONS = 32
"""Connections open at once (Prometheus and a few probes need a handful)."""
IDLE_TIMEOUT = 10.0
"""Seconds a connection may wait for its next request, or take to read a response."""
MAX_HEAD = 8192
"""Bytes of a request line and its headers."""
Response = tuple[int, list[tuple[str, str]], bytes]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"


class ObservabilityServer:
    """Metrics and probes for one supervisor, served on a thread of their own."""

    def __init__(self, supervisor: Supervisor, address: str) -> None:
        host, port = parse_address(address)
        self.address = address
        self.metrics = Metrics(supervisor)
        self.health = HealthCheck(supervisor)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(64)
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            self.close()
            raise
        self._loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="metrics")
        self._open = 0
        self._full = False  # the cap was reached and logged; logged again once it was not
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on http://%s", self.address)

    def stop(self) -> None:
        if self._thread.is_alive():
            stopped = self._stopped
            if stopped is not None:
                self._loop.call_soon_threadsafe(stopped.set)
            self._thread.join(2.0)
        self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.close()

    def close(self) -> None:
        self.metrics.close()
        self.health.close()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._open

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock, limit=MAX_HEAD)
        async with server:
            await self._stopped.wait()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            if not self._full:
                log.warning(
                    "%d HTTP connections are open, the most served at once: closing new ones "
                    "until some end",
                    self._open,
                )
                self._full = True
            writer.transport.abort()
            return
        self._open += 1
        try:
            await self._requests(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # idle, gone, or talking nonsense: the connection ends
        except asyncio.LimitOverrunError:
            pass  # a request head larger than MAX_HEAD
        finally:
            self._open -= 1
            if self._full and self._open < MAX_CONNECTIONS // 2:
                log.info("HTTP connections are below the cap again (%d open)", self._open)
                self._full = False
            writer.transport.abort()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests on one connection, one after another, until one asks to close."""
        while True:
            async with asyncio.timeout(IDLE_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")  # ValueError past MAX_HEAD
            method, target, version, headers = _parse(head)
            if method not in ("GET", "HEAD"):
                code, extra, body = _text(405, "only GET and HEAD\n")
            else:
                code, extra, body = await self._respond(target, headers)
            keep = _keep_alive(version, headers) and method in ("GET", "HEAD")
            lines = [f"HTTP/1.1 {code} {_REASONS.get(code, '')}"]
            lines += [f"{k}: {v}" for k, v in extra]
            lines += [
                f"Content-Length: {len(body)}",
                f"Connection: {'keep-alive' if keep else 'close'}",
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            async with asyncio.timeout(IDLE_TIMEOUT):
                await writer.drain()
            if not keep:
                return

    async def _respond(self, target: str, headers: dict[str, str]) -> Response:
        parts = urlsplit(target)
        if parts.path == "/metrics":
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._metrics, parts.query, headers)
        if parts.path in ("/healthz", "/livez"):
            return _report(self.health.healthz())
        if parts.path == "/readyz":
            return _report(self.health.readyz())
        return _text(404, "not found: try /metrics, /healthz or /readyz\n")

    def _metrics(self, query: str, headers: dict[str, str]) -> Response:
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        registry: CollectorRegistry | RestrictedRegistry = self.metrics.registry
        params = parse_qs(query)
        if "name[]" in params:
            registry = self.metrics.registry.restricted_registry(params["name[]"])
        output = encoder(registry)
        extra = [("Content-Type", content_type)]
        if gzip_accepted(headers.get("accept-encoding", "")):
            output = gzip.compress(output)
            extra.append(("Content-Encoding", "gzip"))
        return 200, extra, output


def _parse(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """The request line and headers; ValueError when they are not HTTP/1.x."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not HTTP/1.x: {version[:20]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise ValueError("a request with a body")  # none of our paths takes one
    return method, target, version, headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    return connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"


def _report(report: Report) -> Response:
    body = json.dumps(report.detail).encode() + b"\n"
    return 200 if report.ok else 503, [("Content-Type", "application/json")], body


def _text(code: int, text: str) -> Response:
    return code, [("Content-Type", "text/plain")], text.encode()


def start(supervisor: Supervisor, address: str) -> ObservabilityServer | None:
    """Serve on address (empty: not at all). A port we cannot bind is logged, not fatal:
    masquerading matters more than its metrics."""
    if not address:
        return None
    try:
        server = ObservabilityServer(supervisor, address)
    except (OSError, ValueError) as e:
        log.error("cannot serve metrics and health checks on %s: %s; running without", address, e)
        return None
    server.start()
    return server
