"""One family's loop: it serves the family's request queue on the worker process, checks the
chain for drift while idle, and replaces the worker the moment it dies or hangs.

The loop runs on a thread of its own and is the only code that talks to the worker, so the pipe
needs no lock. It waits on two things at once (`multiprocessing.connection.wait`): the
queue's wake-up (an eventfd the queue writes to when a request arrives) and the worker's
sentinel. Each command has a deadline (`worker.answer_deadline`): a worker that misses it is
killed and replaced, and the sync it owed is reported failed as hung and tried again at once.
A write is in sync once verified (`familystate`): a legacy write is read back soon after it
is answered; one that did not take is retried after a growing pause, like any failure. The
loop itself is guarded (`guard`): an exception in it is logged and shown in status, and the
loop goes on. Its state is read by other threads only as a frozen `FamilyStatus`.

Each sync request is a future (see `masqd.engine.queue`), resolved after the runner's status
and events already show the sync that served it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import wait
from typing import Any

from masqd.core.desired import Desired
from masqd.core.errors import Kind, MasqdError, NoConfig, Stopping, WorkerGone, WorkerHung
from masqd.core.livestate import ReadOutcome
from masqd.core.model import NFTABLES, Event, EventKind, Reason, SyncResult
from masqd.core.natpath import PathOutcome
from masqd.core.status import FamilyStatus
from masqd.engine import worker
from masqd.engine.events import EventBus
from masqd.engine.familystate import FamilyState
from masqd.engine.guard import Guard
from masqd.engine.process import Backoff, Launcher, WorkerProcess, spawn_worker
from masqd.engine.queue import Batch, RequestQueue
from masqd.host.probe import nftgen

log = logging.getLogger("masqd.runner")

NO_CONFIG = "no valid configuration has been loaded yet; the rules are left as they are"
GATHER = 0.01
"""The least time between the starts of two requested syncs while requests keep coming: a
burst is on, and each sync it saves is CPU the burst's callers need (`python -m bench
--figures 4`). A lone request that came after the last sync ended (one caller's next turn,
`--figures 1,3`) is served at once."""
FIRST_START_PAUSE = 1.0
LONGEST_START_PAUSE = 30.0
"""Seconds between attempts to start a worker that cannot be started (no descriptors, no
memory for a process): from the first, doubling to the longest."""


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
        self._last_end = float("-inf")  # and when it ended
        self._last_served = 0  # how many requests it served
        self._clock = clock
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.queue = RequestQueue(self._notify, clock)
        self._worker = WorkerProcess(opts, launcher, backoff, clock)
        self._sent: Desired | None = None  # the rules (or table) the worker has
        self._verified_at: int | None = None  # nft: the generation it last verified them at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = FamilyState(self.family, clock)
        self._guard = Guard(f"the {self.family.label} runner", self._stop)
        self._next_check = 0.0  # the loop's own: when it next checks the chain

    # -- lifecycle -------------------------------------------------------------------------

    def start_worker(self, launcher: Launcher | None = None) -> None:
        """Start the worker process now (by default it starts with the loop)."""
        self._worker.start(launcher)
        self._state.worker_up(self._worker.pid)

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
        self._state.stopped()
        if thread is None or not thread.is_alive():
            os.close(self._wakeup)

    # -- what others ask -------------------------------------------------------------------

    def status(self) -> FamilyStatus:
        """A snapshot of this family, consistent in itself."""
        status = self._state.snapshot(
            self.queue.requested(), self.queue.oldest(), self._guard.fault()
        )
        if self._refused and status.state != "stopped":
            return dataclasses.replace(status, state="blocked")
        return status

    @property
    def syncs_run(self) -> int:
        """Syncs run so far, drift checks that found nothing left out (cheaper than a status
        snapshot, for the heap's housekeeping)."""
        return self._state.syncs_run()

    def read_live(self) -> Future[ReadOutcome]:
        """The live chain with counters, read by the worker between syncs."""
        return self.queue.read(worker.ReadCommand())

    def read_path(self) -> Future[PathOutcome]:
        """Every owner's nat postrouting chains, read by the worker between syncs."""
        return self.queue.read(worker.PathCommand())

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        self._next_check = self._clock() + self._drift_interval
        try:
            self._guard.run(self._step)
        finally:
            self.queue.close(Stopping("masqd is shutting down"))

    def _step(self) -> None:
        """Whatever is due next: a new worker, the waiting requests, a check, or a wait."""
        if not self._worker.running:
            if not self._replace_worker():
                return
            self._next_check = self._clock()  # the new worker checks the chain first
        self._gather_burst()
        work = self.queue.take()
        if work is not None:
            if work.batch is not None:
                self._serve(work.batch)
            for command, future in work.reads.items():
                _resolve(future, functools.partial(self._read, command))
        elif self._clock() >= self._next_check:
            self._check()
        else:
            self._idle(self._next_check - self._clock())

    def _gather_burst(self) -> None:
        """Sync requests within `gather` of the last sync's start are a burst, to gather until
        `gather` after that start, unless the request is one caller's next turn: alone, come
        after the last sync ended, which served one request too (a caller that waits for each
        answer before it asks again, or one after a quiet spell). That goes at once."""
        oldest = self.queue.oldest()
        if oldest is None:
            return
        if self.queue.waiting() <= 1 and oldest >= self._last_end and self._last_served <= 1:
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
        try:
            reason = batch.reason
            rules = self._desired()
            if rules is None:
                self._state.no_config(batch.since)
                batch.fail(NoConfig(NO_CONFIG))
                return
            self._last_start = self._clock()
            self._publish(EventKind.SYNC_STARTED, f"{reason.value} sync started")
            self._state.syncing(rules, batch.since)
            if self._refused:
                outcome = worker.SyncOutcome(False, False, 0.0, self._refused, kind=Kind.MISSING)
            else:
                outcome = self._sync(rules)
            result = self._record(reason, rules, outcome, since=batch.since)
            self._last_end, self._last_served = self._clock(), batch.requests
        except BaseException as e:  # never leave the callers waiting for nothing
            if not batch.future.done():
                batch.fail(MasqdError(f"the {self.family.label} runner failed: {e}"))
            raise
        batch.resolve(result)

    def _check(self) -> None:
        """A drift check, or the retry or verification of a sync still owed: reported only
        when it changed something or failed.

        nft: while the ruleset generation is the one the worker last verified our chain at
        (and the rules are the ones it has), nothing changed anywhere in the ruleset, so the
        check costs one netlink round trip here and does not wake the worker.
        """
        rules = self._desired()
        self._next_check = self._clock() + self._drift_interval
        if rules is None or self._refused:  # no good config yet, or no backend: leave it be
            return
        verified = self._verified_at
        if verified is not None and rules is self._sent and nftgen.generation() == verified:
            self._state.count_check()
            self._state.checked(rules, True)
            return
        owed = self._state.owed()
        self._state.syncing(rules, None)
        outcome = self._sync(rules)
        self._state.count_check()
        if outcome.ok and not outcome.changed:
            self._state.checked(rules, outcome.in_sync)
            return
        if owed is None:  # a drift check (not the retry of a failed sync) found work
            ours = "table" if self._worker.opts.mode == NFTABLES else "chain"
            log.warning(
                "%s: our %s was changed by someone else; repairing", self.family.label, ours
            )
        self._record(owed or Reason.DRIFT_REPAIR, rules, outcome, since=None)

    def _record(
        self,
        reason: Reason,
        rules: Desired,
        outcome: worker.SyncOutcome,
        since: float | None,
    ) -> SyncResult:
        """Count a sync, log it, publish it; its result is in status before anyone hears."""
        if outcome.removed:
            log.info(
                "%s: removed what an earlier --masq-chain or --nft-table left: %s",
                self.family.label,
                "; ".join(outcome.removed),
            )
        result = self._state.recorded(reason, rules, outcome, since)
        self._next_check = self._clock() + self._state.next_check_in(outcome, self._drift_interval)
        _log_result(result)
        kind = EventKind.SYNC_FINISHED if result.ok else EventKind.SYNC_FAILED
        self._publish(kind, result.error or ("changed" if result.changed else "unchanged"), result)
        return result

    def _sync(self, rules: Desired) -> worker.SyncOutcome:
        """Sync on the worker; a worker that dies meanwhile is replaced and asked once more,
        one that hangs is killed (and replaced by the loop) and the sync reported failed.

        The rules go down the pipe only when they are not the ones the worker already has
        (the supervisor hands out the same rules, or table, until the config changes)."""
        for _ in range(2):
            try:
                command = worker.SyncCommand(None if rules is self._sent else rules)
                outcome = self._worker.call(command, self._attempt_failed)
                self._sent = rules
                assert isinstance(outcome, worker.SyncOutcome)
                self._verified_at = outcome.generation if outcome.ok else None
                return outcome
            except WorkerHung as e:
                log.error("%s", e)
                return worker.SyncOutcome(False, False, 0.0, str(e), kind=e.kind)
            except WorkerGone as e:
                if self._stop.is_set():
                    return worker.SyncOutcome(False, False, 0.0, str(e), kind=e.kind)
                log.error("%s worker died (%s); restarting it", self.family.label, e)
                if not self._replace_worker():
                    break
        return worker.SyncOutcome(
            False, False, 0.0, "the worker is not running", kind=Kind.WORKER_GONE
        )

    def _attempt_failed(self, attempt: worker.Attempt) -> None:
        self._state.attempt_failed(attempt)
        log.warning(
            "sync %s: attempt %d failed (%s); retrying",
            self.family.label,
            attempt.number,
            attempt.error,
        )
        self._publish(EventKind.SYNC_RETRYING, f"attempt {attempt.number} failed: {attempt.error}")

    def _read(self, command: object) -> object:
        """The worker's answer to a read command (ReadCommand, PathCommand), or the command's
        own failure when the worker is gone or hangs."""
        assert isinstance(command, (worker.ReadCommand, worker.PathCommand))
        try:
            return self._worker.call(command)
        except WorkerHung as e:
            log.error("%s", e)
            self._state.hung(str(e))
            return command.failed(str(e), e.kind)
        except WorkerGone as e:
            return command.failed(str(e), e.kind)

    def _replace_worker(self) -> bool:
        """Start a new worker after the backoff; False when stopping meanwhile. A worker that
        cannot be started (say, no descriptors left: EMFILE) is tried again, ever more slowly."""
        delay = self._worker.buried()
        self._sent, self._verified_at = None, None
        restarts = self._state.worker_down()
        if delay:
            log.warning("%s worker keeps dying; next start in %.1fs", self.family.label, delay)
        while not self._stop.wait(delay):
            try:
                self._worker.start()
            except OSError as e:
                delay = min(LONGEST_START_PAUSE, max(FIRST_START_PAUSE, delay * 2))
                error = f"cannot start a worker: {e}"
                log.error("%s: %s; trying again in %.1fs", self.family.label, error, delay)
                self._state.cannot_start(error)
                continue
            self._state.worker_up(self._worker.pid)
            self._publish(EventKind.WORKER_RESTARTED, f"worker restarted (restart {restarts})")
            return True
        return False

    def _publish(self, kind: EventKind, message: str, result: SyncResult | None = None) -> None:
        self._events.publish(Event(kind, time.time(), message, self.family, result))


def _resolve(future: Future[Any], read: Callable[[], object]) -> None:
    """Resolve a read's future with what read() returns, or the error it raised."""
    try:
        future.set_result(read())
    except BaseException as e:
        future.set_exception(MasqdError(f"reading the live chain failed: {e}"))
        raise


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
