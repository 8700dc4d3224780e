"""One family's loop: it serves the family's request queue on the worker process, checks the
chain for drift while idle, and replaces the worker the moment it dies.

The loop runs on a thread of its own and is the only code that talks to the worker, so the pipe
needs no lock. It waits on two things at once (`multiprocessing.connection.wait`): the
queue's wake-up (an eventfd the queue writes to when a request arrives) and the worker's
sentinel. Its state is read by other threads only as a frozen `FamilyStatus`, built under the
runner's lock.

Each sync request is a future (see `masqd.engine.queue`), resolved after the runner's status
and events already show the sync that served it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import wait

from masqd.core.desired import Desired
from masqd.core.errors import Kind, NoConfig, Stopping, WorkerGone
from masqd.core.livestate import ReadOutcome
from masqd.core.model import NFTABLES, Event, EventKind, Reason, SyncResult
from masqd.core.natpath import PathOutcome
from masqd.core.status import FamilyStatus
from masqd.engine import worker
from masqd.engine.events import EventBus
from masqd.engine.process import Backoff, Launcher, WorkerProcess, spawn_worker
from masqd.engine.queue import Batch, RequestQueue
from masqd.host.probe import nftgen

log = logging.getLogger("masqd.runner")

NO_CONFIG = "no valid configuration has been loaded yet; the rules are left as they are"
GATHER = 0.01
"""The least time between the starts of two requested syncs while requests keep coming: a
burst is on, and each sync it saves is CPU the burst's callers need (`python -m bench
--figures 4`). A request that finds no sync started within it is served at once."""


class FamilyRunner:
    """Runs one family's worker and serves its requests, one sync at a time."""

    def __init__(
        self,
        opts: worker.WorkerOptions,
        desired: Callable[[], Desired | None],
        events: EventBus,
        *,
        drift_check_interval: float = 5.0,
        gather: float = GATHER,
        backoff: Backoff | None = None,
        launcher: Launcher = spawn_worker,
        clock: Callable[[], float] = time.monotonic,
        refused: str = "",
    ) -> None:
        self.family = opts.family
        self._refused = refused
        """Why this family's backend cannot work on this node; then every sync fails at once
        saying so, and no drift check runs (nothing would change that but a restart)."""
        self._desired = desired
        self._events = events
        self._drift_interval = drift_check_interval
        self._gather = gather
        self._last_start = float("-inf")  # when the last requested sync started
        self._clock = clock
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.queue = RequestQueue(self._notify, clock)
        self._worker = WorkerProcess(opts, launcher, backoff, clock)
        self._sent: Desired | None = None  # the rules (or table) the worker has
        self._verified_at: int | None = None  # nft: the generation it last verified them at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        # Written by the loop, read by status() from any thread: all under _lock.
        self._lock = threading.Lock()
        self._state = "starting"
        self._pid = 0
        self._restarts = 0
        self._in_sync = False
        self._last: SyncResult | None = None
        self._syncs: collections.Counter[Reason] = collections.Counter()
        self._checks = 0
        self._restores = 0
        self._taken_since: float | None = None  # oldest request of the sync in flight
        self._failed_since: float | None = None  # of a failed sync, until one succeeds

    # -- lifecycle -------------------------------------------------------------------------

    def start_worker(self, launcher: Launcher | None = None) -> None:
        """Start the worker process now (by default it starts with the loop)."""
        self._worker.start(launcher)
        self._set(state="idle", pid=self._worker.pid)

    def start(self) -> None:
        if not self._worker.running:
            self.start_worker()
        self._thread = threading.Thread(
            target=self._loop, name=f"runner-{self.family.label}", daemon=True
        )
        self._thread.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop the loop and the worker. A sync still retrying is cut short by killing the
        worker, which is safe: each iptables-restore is atomic. Stopping twice is stopping once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._notify()
        thread = self._thread
        if thread is not None:
            thread.join(grace)
            if thread.is_alive():
                self._worker.kill()
                thread.join(1.0)
        if thread is None or not thread.is_alive():
            self._worker.stop(grace)
        self.queue.close(Stopping("masqd is shutting down"))  # after this, nothing notifies
        self._set(state="stopped", pid=0)
        if thread is None or not thread.is_alive():
            os.close(self._wakeup)

    # -- what others ask -------------------------------------------------------------------

    def status(self) -> FamilyStatus:
        """A snapshot of this family, consistent in itself."""
        queued = self.queue.oldest()
        with self._lock:
            pending = [t for t in (self._failed_since, self._taken_since, queued) if t is not None]
            return FamilyStatus(
                family=self.family,
                pid=self._pid,
                state="blocked" if self._refused and self._state != "stopped" else self._state,
                restarts=self._restarts,
                in_sync=self._in_sync,
                last_result=self._last,
                syncs=dict(self._syncs),
                requests=self.queue.requested(),
                checks=self._checks,
                restores=self._restores,
                pending_since=min(pending, default=None),
            )

    @property
    def syncs_run(self) -> int:
        """Syncs run so far, drift checks that found nothing left out (cheaper than a status
        snapshot, for the heap's housekeeping)."""
        with self._lock:
            return sum(self._syncs.values())

    def read_live(self) -> Future[ReadOutcome]:
        """The live chain with counters, read by the worker between syncs."""
        return self.queue.read(worker.ReadCommand())

    def read_path(self) -> Future[PathOutcome]:
        """Every owner's nat postrouting chains, read by the worker between syncs."""
        return self.queue.read(worker.PathCommand())

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        next_check = self._clock() + self._drift_interval
        try:
            while not self._stop.is_set():
                if not self._worker.running:
                    if not self._replace_worker():
                        break
                    next_check = self._clock()  # the new worker checks the chain first
                self._gather_burst()
                work = self.queue.take()
                if work is not None:
                    if work.batch is not None:
                        self._serve(work.batch)
                    for command, future in work.reads.items():
                        future.set_result(self._read(command))
                    next_check = self._clock() + self._drift_interval
                elif self._clock() >= next_check:
                    self._check()
                    next_check = self._clock() + self._drift_interval
                else:
                    self._idle(next_check - self._clock())
        except Exception:
            log.exception("%s: the runner loop failed", self.family.label)
            raise
        finally:
            self.queue.close(Stopping("masqd is shutting down"))

    def _gather_burst(self) -> None:
        """Sync requests waiting within `gather` of the last sync's start are a burst: let it
        gather until `gather` after that start. A request that finds no sync started lately
        goes at once."""
        if self.queue.oldest() is None:
            return
        left = self._last_start + self._gather - self._clock()
        if left > 0:
            self._stop.wait(left)

    def _idle(self, timeout: float) -> None:
        """Wait for a request, the worker's death, or the timeout."""
        sentinel = self._worker.sentinel
        waits: list[int] = [self._wakeup] + ([sentinel] if sentinel is not None else [])
        if wait(waits, timeout):
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wakeup)

    def _notify(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wakeup, 1)

    def _serve(self, batch: Batch) -> None:
        """One sync for every request in the batch."""
        reason = batch.reason
        rules = self._desired()
        if rules is None:
            with self._lock:
                if self._failed_since is None:
                    self._failed_since = batch.since
            batch.fail(NoConfig(NO_CONFIG))
            return
        self._last_start = self._clock()
        self._publish(EventKind.SYNC_STARTED, f"{reason.value} sync started")
        with self._lock:
            self._state, self._taken_since = "syncing", batch.since
        if self._refused:
            outcome = worker.SyncOutcome(False, False, 0.0, self._refused, kind=Kind.MISSING)
        else:
            outcome = self._sync(rules)
        result = self._record(reason, outcome, since=batch.since)
        batch.resolve(result)

    def _check(self) -> None:
        """A drift check: reported only when it repaired something or failed.

        nft: while the ruleset generation is the one the worker last verified our chain at
        (and the rules are the ones it has), nothing changed anywhere in the ruleset, so the
        check costs one netlink round trip here and does not wake the worker.
        """
        rules = self._desired()
        if rules is None or self._refused:  # no good config yet, or no backend: leave it be
            return
        verified = self._verified_at
        if verified is not None and rules is self._sent and nftgen.generation() == verified:
            with self._lock:
                self._checks += 1
                self._failed_since = None
            return
        with self._lock:
            self._state = "syncing"
        outcome = self._sync(rules)
        with self._lock:
            self._checks += 1
        if outcome.ok and not outcome.changed:
            with self._lock:
                self._state, self._in_sync, self._failed_since = "idle", outcome.in_sync, None
            return
        ours = "table" if self._worker.opts.mode == NFTABLES else "chain"
        log.warning("%s: our %s was changed by someone else; repairing", self.family.label, ours)
        self._record(Reason.DRIFT_REPAIR, outcome, since=None)

    def _record(
        self, reason: Reason, outcome: worker.SyncOutcome, since: float | None
    ) -> SyncResult:
        """Count a sync, log it, publish it; its result is in status before anyone hears."""
        if outcome.removed:
            log.info(
                "%s: removed what an earlier --masq-chain or --nft-table left: %s",
                self.family.label,
                "; ".join(outcome.removed),
            )
        result = SyncResult(
            family=self.family,
            ok=outcome.ok,
            changed=outcome.changed,
            duration=outcome.duration,
            finished_at=time.time(),
            reason=reason,
            error=outcome.error,
            in_sync=outcome.in_sync,
            error_kind=outcome.kind,
        )
        with self._lock:
            self._state, self._in_sync, self._last = "idle", outcome.in_sync, result
            self._syncs[reason] += 1
            self._restores += outcome.changed
            if outcome.ok:
                self._failed_since = None
            elif self._failed_since is None:
                self._failed_since = since
            self._taken_since = None
        _log_result(result)
        kind = EventKind.SYNC_FINISHED if result.ok else EventKind.SYNC_FAILED
        self._publish(kind, result.error or ("changed" if result.changed else "unchanged"), result)
        return result

    def _sync(self, rules: Desired) -> worker.SyncOutcome:
        """Sync on the worker; a worker that dies meanwhile is replaced and asked once more.

        The rules go down the pipe only when they are not the ones the worker already has
        (the supervisor hands out the same rules, or table, until the config changes)."""
        for _ in range(2):
            try:
                command = worker.SyncCommand(None if rules is self._sent else rules)
                outcome = self._worker.call(command)
                self._sent = rules
                assert isinstance(outcome, worker.SyncOutcome)
                self._verified_at = outcome.generation if outcome.ok else None
                return outcome
            except WorkerGone as e:
                if self._stop.is_set():
                    return worker.SyncOutcome(False, False, 0.0, str(e), kind=e.kind)
                log.error("%s worker died (%s); restarting it", self.family.label, e)
                if not self._replace_worker():
                    break
        return worker.SyncOutcome(
            False, False, 0.0, "the worker is not running", kind=Kind.WORKER_GONE
        )

    def _read(self, command: object) -> object:
        """The worker's answer to a read command (ReadCommand, PathCommand), or the command's
        own failure when the worker is gone."""
        assert isinstance(command, (worker.ReadCommand, worker.PathCommand))
        try:
            return self._worker.call(command)
        except WorkerGone as e:
            return command.failed(str(e), e.kind)

    def _replace_worker(self) -> bool:
        """Start a new worker after the backoff; False when stopping meanwhile."""
        delay = self._worker.buried()
        self._sent, self._verified_at = None, None
        with self._lock:
            self._restarts += 1
            self._state, self._pid, self._in_sync = "backoff", 0, False
        if delay:
            log.warning("%s worker keeps dying; next start in %.1fs", self.family.label, delay)
        if self._stop.wait(delay):
            return False
        self._worker.start()
        self._set(state="idle", pid=self._worker.pid)
        with self._lock:
            restarts = self._restarts
        self._publish(EventKind.WORKER_RESTARTED, f"worker restarted (restart {restarts})")
        return True

    def _set(self, *, state: str, pid: int) -> None:
        with self._lock:
            self._state, self._pid = state, pid

    def _publish(self, kind: EventKind, message: str, result: SyncResult | None = None) -> None:
        self._events.publish(Event(kind, time.time(), message, self.family, result))


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
