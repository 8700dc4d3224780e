"""A family's worker process, seen from the supervisor: starting it, one command at a time over
its pipe, noticing its death the moment it happens, and the backoff between restarts.

The first two workers are forked: the supervisor has no threads yet and has not imported gRPC
(no module below `masqd.serve` may import it; an import contract checks that), so they share
the interpreter's pages with it. A worker replaced later is spawned (a fresh interpreter),
because a process running gRPC's threads must not fork.

Death is seen on the process's sentinel (`multiprocessing.connection.wait`), both while a
command is out and while the runner is idle, never by polling.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from masqd.core.errors import WorkerGone
from masqd.engine import worker

log = logging.getLogger("masqd.process")

_SPAWN = multiprocessing.get_context("spawn")
_FORK = multiprocessing.get_context("fork")


class Process(Protocol):
    """What is needed of a worker process (multiprocessing.Process has it)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def kill(self) -> None: ...


Launcher = Callable[[worker.WorkerOptions], tuple[Process, Connection]]


def spawn_worker(opts: worker.WorkerOptions) -> tuple[Process, Connection]:
    """Start a worker in a fresh interpreter: safe at any time."""
    return _start(_SPAWN, opts)


def fork_worker(opts: worker.WorkerOptions) -> tuple[Process, Connection]:
    """Fork a worker: cheaper, but only while this process has no threads and no gRPC (else
    it spawns)."""
    if threading.active_count() > 1 or "grpc" in sys.modules:
        return spawn_worker(opts)
    # Objects that exist now are never collected, so the collector leaves their pages alone
    # and they stay shared with the child.
    gc.freeze()
    return _start(_FORK, opts)


def _start(ctx: Any, opts: worker.WorkerOptions) -> tuple[Process, Connection]:
    parent, child = ctx.Pipe()
    if ctx is _FORK:
        target: Callable[..., None] = _run_forked
        args: tuple[Any, ...] = (opts, child, _open_descriptors())
    else:
        target, args = worker.run, (opts, child)
    proc = ctx.Process(
        target=target, args=args, name=f"masqd-worker-{opts.family.label}", daemon=True
    )
    proc.start()
    child.close()
    return proc, parent


def _open_descriptors() -> frozenset[int]:
    return frozenset(int(fd) for fd in os.listdir("/proc/self/fd"))


def _run_forked(opts: worker.WorkerOptions, conn: Connection, inherited: frozenset[int]) -> None:
    """A forked worker first closes what the supervisor had open before the fork, but stdio and
    its own pipe: the supervisor's ends of the pipes (or the worker would never see EOF when
    the supervisor dies) and the socket's lock (or a new masqd could not claim the socket).
    What multiprocessing opened for the fork itself stays: its sentinel's write end is how the
    supervisor sees this process end."""
    for fd in inherited - {0, 1, 2, conn.fileno()}:
        with contextlib.suppress(OSError):
            os.close(fd)
    worker.run(opts, conn)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before replacing a dead worker.

    The first death after a healthy spell is replaced at once; each further death within
    `healthy_after` seconds of its start doubles the wait, from `base` up to `maximum`, so a
    worker that crashes at start is retried ever more slowly and never in a tight loop.
    """

    base: float = 0.2
    maximum: float = 30.0
    healthy_after: float = 60.0

    def delay(self, quick_deaths: int) -> float:
        """The wait before the next start, after `quick_deaths` consecutive quick deaths (the
        latest included); 0 for the first."""
        if quick_deaths <= 1:
            return 0.0
        return float(min(self.maximum, self.base * 2 ** min(quick_deaths - 1, 16)))


class WorkerProcess:
    """One worker process at a time for a family, and its pipe. Used by one thread only."""

    def __init__(
        self,
        opts: worker.WorkerOptions,
        launcher: Launcher = spawn_worker,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.opts = opts
        self._launcher = launcher
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._proc: Process | None = None
        self._conn: Connection | None = None
        self._started_at = 0.0
        self.quick_deaths = 0
        """Deaths in a row, each within backoff.healthy_after of its worker's start."""

    @property
    def pid(self) -> int:
        proc = self._proc
        return (proc.pid or 0) if proc is not None and proc.is_alive() else 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def sentinel(self) -> int | None:
        """Becomes ready when the process ends; None when none runs."""
        return self._proc.sentinel if self._proc is not None else None

    def start(self, launcher: Launcher | None = None) -> None:
        self._proc, self._conn = (launcher or self._launcher)(self.opts)
        self._started_at = self._clock()
        log.info("%s worker started (pid %s)", self.opts.family.label, self._proc.pid)

    def call(self, command: object) -> object:
        """Send a command and wait for the answer; WorkerGone when the process dies first."""
        conn, proc = self._conn, self._proc
        if conn is None or proc is None or not proc.is_alive():
            raise WorkerGone("the worker process is not running")
        try:
            conn.send(command)
            ready = wait([conn, proc.sentinel])
            if conn not in ready and not conn.poll():
                proc.join(1.0)
                raise WorkerGone(f"the worker exited with code {proc.exitcode}")
            return conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerGone(f"the worker's pipe broke: {e}") from e

    def buried(self) -> float:
        """Clean up after a dead worker; returns how long to wait before starting the next."""
        lived = self._clock() - self._started_at
        self.stop(0.5)
        self.quick_deaths = self.quick_deaths + 1 if lived < self.backoff.healthy_after else 1
        return self.backoff.delay(self.quick_deaths)

    def stop(self, grace: float) -> None:
        """Ask the worker to exit; kill it if it has not within grace seconds."""
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            conn.send(None)
        proc.join(grace)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
        conn.close()
        self._proc = self._conn = None

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
