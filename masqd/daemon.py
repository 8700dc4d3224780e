"""masqd's start and stop order, in one place (used by cli.py and the benchmarks alike).

Start:
1. claim the control socket and our chain in this network namespace, so a second masqd
   refuses before it has started anything;
2. fork the workers while this process has no threads and has not imported gRPC: they share
   its pages, and a process running gRPC's threads must not fork (nothing below
   `masqd.serve` imports gRPC, an import contract checks it, so until step 4 nothing has);
3. start the metrics and health endpoint, if asked for, so its counters hear the first
   config load and the first syncs;
4. start the supervisor: the config is read and the first syncs run in the workers at once;
5. meanwhile import and start the gRPC server. The rules are written without waiting for
   gRPC's import, the longest step of a start.

Stop, in reverse: HTTP, the API (a grace for calls in flight), the supervisor (each worker
gets a grace, then is killed). The rules stay in the kernel.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from masqd.core.model import NFTABLES
from masqd.core.settings import Settings
from masqd.engine.process import Launcher, spawn_worker
from masqd.engine.supervisor import Supervisor
from masqd.host import chainlock
from masqd.serve import socketfile

if TYPE_CHECKING:
    from masqd.serve.httpserver import ObservabilityServer
    from masqd.serve.server import ApiServer

log = logging.getLogger("masqd")

SHUTDOWN_GRACE = 3.0
"""Seconds a stop may take in all (SIGTERM must end masqd within 5)."""


class StartError(RuntimeError):
    """masqd cannot start; the message says why."""


class Daemon:
    """A running masqd: the supervisor, the control API and the HTTP endpoint."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics_address: str = "",
        mode: str | None = None,
        launcher: Launcher = spawn_worker,
    ) -> None:
        self.settings = settings
        self.metrics_address = metrics_address
        self._mode = mode
        self._launcher = launcher
        self.supervisor: Supervisor | None = None
        self.api: ApiServer | None = None
        self.http: ObservabilityServer | None = None
        self._chain_claim: socket.socket | None = None
        self._table_claim: socket.socket | None = None

    def start(self) -> Daemon:
        """Start everything in order; StartError (with nothing left running) when it cannot."""
        settings = self.settings
        lock_fd = None
        if settings.socket:
            try:
                lock_fd = socketfile.claim_socket(settings.socket)
            except socketfile.SocketInUse as e:
                raise StartError(str(e)) from e
            except OSError as e:
                raise StartError(f"cannot use the control socket {settings.socket}: {e}") from e
        try:
            self._chain_claim = chainlock.claim(settings.render.chain)
        except (chainlock.ChainInUse, OSError) as e:
            if lock_fd is not None:
                os.close(lock_fd)
            raise StartError(str(e)) from e
        supervisor = self.supervisor = Supervisor(settings, self._mode, self._launcher)
        if supervisor.mode == NFTABLES:
            try:
                self._table_claim = chainlock.claim_table(settings.render.table)
            except (chainlock.ChainInUse, OSError) as e:
                self._release_chain()
                if lock_fd is not None:
                    os.close(lock_fd)
                raise StartError(str(e)) from e
        supervisor.fork_workers()
        if self.metrics_address:
            from masqd.serve import httpserver

            self.http = httpserver.start(supervisor, self.metrics_address)
        supervisor.start()
        if settings.socket:
            from masqd.serve.server import ApiServer  # gRPC is imported from here on

            self.api = ApiServer(
                supervisor, settings.socket, settings.socket_mode, settings.socket_group
            )
            try:
                self.api.start(lock_fd)
            except (OSError, KeyError) as e:  # KeyError: the socket's group went away
                if self.http is not None:
                    self.http.stop()
                supervisor.stop(0.5)
                self._release_chain()
                raise StartError(f"cannot serve the control API on {settings.socket}: {e}") from e
        return self

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self.api is not None:
            self.api.stop(0.5)
        if self.supervisor is not None:
            self.supervisor.stop(SHUTDOWN_GRACE / 2)
        self._release_chain()  # last: the chain is ours until the workers are gone

    def _release_chain(self) -> None:
        for claim in (self._chain_claim, self._table_claim):
            if claim is not None:
                claim.close()
        self._chain_claim = self._table_claim = None

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
