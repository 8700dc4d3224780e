"""The supervisor's side of one family: its worker process, and the queue of sync requests.

Requests are coalesced: each carries a sequence number, and one sync serves every request that
arrived before it started. A caller waiting on request N is answered by the first sync that
started after N arrived, so a burst of hundreds of requests costs a handful of syncs.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from masqd.core.model import Event, EventKind, Reason, SyncResult
from masqd.engine import worker
from masqd.engine.events import EventBus

log = logging.getLogger("masqd.engine.runner")

# A process running gRPC threads must not fork. masqd forks its first two workers before it
# imports gRPC (they then share the interpreter's pages with the supervisor); a worker replaced
# later is spawned: a fresh interpreter, never a fork.
_SPAWN = multiprocessing.get_context("spawn")
_FORK = multiprocessing.get_context("fork")


class WorkerProcess(Protocol):
    """What the runner needs of a worker process (multiprocessing.Process has it)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def kill(self) -> None: ...


Launcher = Callable[[worker.WorkerOptions], tuple[WorkerProcess, Connection]]


def spawn_worker(opts: worker.WorkerOptions) -> tuple[WorkerProcess, Connection]:
    """Start a worker in a fresh interpreter: safe at any time."""
    return _start(_SPAWN, opts)


def fork_worker(opts: worker.WorkerOptions) -> tuple[WorkerProcess, Connection]:
    """Fork a worker: cheaper, but only while this process has no threads and no gRPC."""
    if threading.active_count() > 1 or "grpc" in sys.modules:
        return spawn_worker(opts)
    # Objects that exist now are never collected, so the collector leaves their pages alone
    # and they stay shared with the child.
    gc.freeze()
    return _start(_FORK, opts)


def _start(ctx: Any, opts: worker.WorkerOptions) -> tuple[WorkerProcess, Connection]:
    parent, child = ctx.Pipe()
    target = _run_forked if ctx is _FORK else worker.run
    proc = ctx.Process(
        target=target, args=(opts, child), name=f"masqd-worker-{opts.family.label}", daemon=True
    )
    proc.start()
    child.close()
    return proc, parent


def _run_forked(opts: worker.WorkerOptions, conn: Connection) -> None:
    """A forked worker first closes every descriptor it inherited but stdio and its own pipe:
    the supervisor's ends of the pipes (or the worker would never see EOF when the supervisor
    dies) and the socket's lock (or a new masqd could not claim the socket)."""
    keep = conn.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    worker.run(opts, conn)


class WorkerGone(RuntimeError):
    """The worker process died or its pipe broke."""


class FamilyRunner:
    """Runs one family's worker and serves sync requests to it, one sync at a time."""

    def __init__(
        self,
        opts: worker.WorkerOptions,
        desired: Callable[[], list[str] | None],
        events: EventBus,
        *,
        drift_check_interval: float = 5.0,
        max_restart_backoff: float = 30.0,
        launcher: Launcher = spawn_worker,
    ) -> None:
        self.family = opts.family
        self._launcher = launcher
        self._opts = opts
        self._desired = desired
        self._events = events
        self._drift_interval = drift_check_interval
        self._max_backoff = max_restart_backoff

        self._cond = threading.Condition()
        self._requested = 0  # sequence number of the latest request
        self._served = 0  # every request up to this one has been served by a finished sync
        self._reasons: set[Reason] = set()
        self._callbacks: list[tuple[int, Callable[[SyncResult | None], None]]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

        self._io = threading.Lock()  # one command at a time on the worker's pipe
        self._proc: WorkerProcess | None = None
        self._conn: Connection | None = None
        self._started_at = 0.0

        self.state = "starting"
        self.restarts = 0
        self.last_result: SyncResult | None = None
        self.in_sync = False
        self.counts: collections.Counter[Reason] = collections.Counter()
        self.checks = 0
        self.restores = 0
        self.requests: collections.Counter[Reason] = collections.Counter()
        """Sync requests received, by reason (drift repairs are found here, not requested)."""
        # Monotonic arrival of the oldest request not yet applied: queued for the next sync,
        # taken by the sync in flight, or taken by a sync that failed. See pending_since().
        self._queued_since: float | None = None
        self._taken_since: float | None = None
        self._failed_since: float | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start_worker(self, launcher: Launcher | None = None) -> None:
        """Start the worker process now (by default it starts with the runner)."""
        self._spawn(launcher)

    def start(self) -> None:
        if self._proc is None:
            self._spawn()
        self._thread = threading.Thread(
            target=self._loop, name=f"runner-{self.family.label}", daemon=True
        )
        self._thread.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop the loop and the worker; a worker that does not exit in time is killed."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(grace)
        # A sync still retrying holds the pipe; the worker is then killed mid-way, which is
        # safe because each iptables-restore is atomic.
        if self._io.acquire(timeout=grace):
            try:
                self._stop_worker(grace)
            finally:
                self._io.release()
        elif self._proc is not None:
            self._proc.kill()
        self.state = "stopped"

    @property
    def pid(self) -> int:
        proc = self._proc
        return proc.pid or 0 if proc is not None and proc.is_alive() else 0

    # -- requests --------------------------------------------------------------------------

    def request(self, reason: Reason) -> int:
        """Queue a sync; returns the ticket to wait on."""
        with self._cond:
            self._requested += 1
            self._reasons.add(reason)
            self.requests[reason] += 1
            if self._queued_since is None:
                self._queued_since = time.monotonic()
            self._cond.notify_all()
            return self._requested

    def wait(self, ticket: int, timeout: float | None) -> SyncResult | None:
        """The result of a sync that started after the ticket was issued, None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._served < ticket and not self._stopping:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self.last_result if self._served >= ticket else None

    def on_served(self, ticket: int, callback: Callable[[SyncResult | None], None]) -> None:
        """Call back (on the runner's thread) once the ticket is served; None when stopping."""
        with self._cond:
            if self._served < ticket and not self._stopping:
                self._callbacks.append((ticket, callback))
                return
            result = self.last_result if self._served >= ticket else None
        callback(result)

    def pending_since(self) -> float | None:
        """Monotonic arrival of the oldest sync request not yet applied; None when none waits.

        A request is applied once a sync that started after it succeeded, or a drift check
        found the chain as desired. A failed sync leaves its requests pending; a retried lock
        keeps them pending only as long as the retries take.
        """
        with self._cond:
            times = (self._failed_since, self._taken_since, self._queued_since)
            return min((t for t in times if t is not None), default=None)

    def read_live(self, timeout: float = 10.0) -> worker.ReadOutcome:
        """The live chain with counters, read by the worker between syncs."""
        if not self._io.acquire(timeout=timeout):
            return worker.ReadOutcome(None, "the worker is busy; try again")
        try:
            outcome = self._call(worker.ReadCommand())
        except WorkerGone as e:
            return worker.ReadOutcome(None, str(e))
        finally:
            self._io.release()
        assert isinstance(outcome, worker.ReadOutcome)
        return outcome

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._requested == self._served and not self._stopping:
                    self._cond.wait(self._drift_interval)
                if self._stopping:
                    self._fire_callbacks(None, everything=True)
                    return
                ticket = self._requested
                reasons, self._reasons = self._reasons, set()
                self._taken_since, self._queued_since = self._queued_since, None
            if ticket > self._served:
                result = self._sync(min(reasons, key=_priority), requested=True)
            else:
                result = self._sync(Reason.DRIFT_REPAIR, requested=False)
            with self._cond:
                if result is not None:
                    self.last_result = result
                if result is None or result.ok:  # the chain is as desired: all requests applied
                    self._failed_since = None
                elif self._failed_since is None:
                    self._failed_since = self._taken_since
                self._taken_since = None
                self._served = max(self._served, ticket)
                self._cond.notify_all()
                self._fire_callbacks(self.last_result)

    def _fire_callbacks(self, result: SyncResult | None, *, everything: bool = False) -> None:
        """Answer the callbacks whose ticket is served (called with the condition held)."""
        due = [cb for t, cb in self._callbacks if everything or t <= self._served]
        self._callbacks = [
            (t, cb) for t, cb in self._callbacks if not everything and t > self._served
        ]
        for callback in due:
            try:
                callback(result)
            except Exception:
                log.exception("a sync callback failed")

    def _sync(self, reason: Reason, *, requested: bool) -> SyncResult | None:
        """Run one sync on the worker; a periodic drift check reports only when it repaired."""
        rules = self._desired()
        if rules is None:  # no good config yet: leave the kernel alone
            if not requested:
                return None
            return SyncResult(
                self.family,
                False,
                False,
                0.0,
                time.time(),
                reason,
                error="no valid configuration has been loaded yet; the rules are left as they are",
            )
        if requested:
            self._publish(EventKind.SYNC_STARTED, f"{reason.value} sync started")
        with self._io:
            self.state = "syncing"
            # The interval sync reads everything, whatever the worker remembers.
            outcome = self._sync_on_worker(rules, full=reason in (Reason.INTERVAL, Reason.STARTUP))
            self.state = "idle"
        if outcome.changed:
            self.restores += 1
        self.in_sync = outcome.in_sync
        if not requested:
            self.checks += 1
            if outcome.ok and not outcome.changed:
                return None
            log.warning("%s: our chain was changed by someone else; repairing", self.family.label)
        self.counts[reason] += 1
        result = SyncResult(
            family=self.family,
            ok=outcome.ok,
            changed=outcome.changed,
            duration=outcome.duration,
            finished_at=time.time(),
            reason=reason,
            error=outcome.error,
            in_sync=outcome.in_sync,
        )
        _log_result(result)
        kind = EventKind.SYNC_FINISHED if result.ok else EventKind.SYNC_FAILED
        self._publish(kind, result.error or ("changed" if result.changed else "unchanged"), result)
        return result

    def _sync_on_worker(self, rules: list[str], *, full: bool) -> worker.SyncOutcome:
        """Sync, restarting a dead worker (with backoff) and trying once more on the new one."""
        for _ in range(2):
            try:
                outcome = self._call(worker.SyncCommand(tuple(rules), full=full))
                assert isinstance(outcome, worker.SyncOutcome)
                return outcome
            except WorkerGone as e:
                log.error("%s worker died (%s); restarting it", self.family.label, e)
                if not self._restart():
                    break
        return worker.SyncOutcome(False, False, 0.0, "the worker is not running")

    # -- the worker process ----------------------------------------------------------------

    def _call(self, command: Any) -> Any:
        conn, proc = self._conn, self._proc
        if conn is None or proc is None or not proc.is_alive():
            raise WorkerGone("the worker process is not running")
        try:
            conn.send(command)
            while not conn.poll(0.5):
                if not proc.is_alive():
                    raise WorkerGone(f"the worker exited with code {proc.exitcode}")
            return conn.recv()
        except (EOFError, OSError) as e:
            raise WorkerGone(f"the worker's pipe broke: {e}") from e

    def _spawn(self, launcher: Launcher | None = None) -> None:
        self._proc, self._conn = (launcher or self._launcher)(self._opts)
        self._started_at = time.monotonic()
        self.state = "idle"
        log.info("%s worker started (pid %s)", self.family.label, self._proc.pid)

    def _restart(self) -> bool:
        """Replace the dead worker, waiting longer after each quick death; False if stopping."""
        lived = time.monotonic() - self._started_at
        self._stop_worker(0.5)
        self.restarts += 1
        backoff = 0.0 if lived > 60 else min(self._max_backoff, 0.2 * 2 ** min(self.restarts, 10))
        self.state = "backoff"
        with self._cond:
            if self._cond.wait_for(lambda: self._stopping, backoff):
                return False
        self._spawn()
        self._publish(EventKind.WORKER_RESTARTED, f"worker restarted (restart {self.restarts})")
        return True

    def _stop_worker(self, grace: float) -> None:
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

    def _publish(self, kind: EventKind, message: str, result: SyncResult | None = None) -> None:
        self._events.publish(Event(kind, time.time(), message, self.family, result))


def _priority(reason: Reason) -> int:
    return list(Reason).index(reason)


def _log_result(r: SyncResult) -> None:
    """One line per sync that changed something and per failure; a no-op sync at debug."""
    if r.ok:
        log.log(
            logging.INFO if r.changed else logging.DEBUG,
            "sync %s reason=%s %s in %.1fms",
            r.family.label,
            r.reason.value,
            "changed" if r.changed else "unchanged",
            r.duration * 1000,
        )
    else:
        log.error("sync %s reason=%s failed: %s", r.family.label, r.reason.value, r.error)
