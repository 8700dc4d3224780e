"""One family's state as its runner records it, handed out as frozen `FamilyStatus` snapshots.

Written only by the family's runner loop, read from any thread through `snapshot()`: every
method takes the lock. What it keeps that a single sync result does not say:

- `in_sync` means verified: the rules the kernel was last seen to hold (read back, or nft:
  written with nothing else in between) are the rules now desired. A write not verified yet,
  a retried attempt, or desired rules that changed since, make it false.
- `trouble`: why the family is not in sync, when that is known (a failed or retried sync, a
  hung worker, no config, a worker that cannot be started), until a sync succeeds verified.
- what is owed: the reason of a sync that failed or is not verified yet, so the runner's
  retry (or verification) is counted and reported under it, not as a drift repair.

No I/O and no threads of its own; the clocks are injected.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

from masqd.core.desired import Desired
from masqd.core.errors import Kind
from masqd.core.model import Family, Reason, SyncResult
from masqd.core.nftrules import Table
from masqd.core.status import FamilyStatus, Fault, Trouble
from masqd.engine.worker import Attempt, SyncOutcome

FIRST_RETRY = 0.5
"""Seconds before the first retry of a failed sync (a hung worker's replacement tries at once)."""
VERIFY_AFTER = 0.25
"""Seconds after a write not verified yet (legacy; nft trusting the jump) before the runner
verifies it by itself; a request meanwhile verifies it on its way. Soon, so that status tells
the truth within a moment; not at once, so that writes in a row are read back once, and a
read-back does not run into whoever changes the table right after our write (bench figure 1
flushes our chain after each: a read-back racing the flush would repair it first)."""


def retry_after(failures: int, ceiling: float) -> float:
    """Seconds before trying a failed sync again, after `failures` failures in a row: doubling
    from FIRST_RETRY, never longer than `ceiling` (the drift-check interval)."""
    return float(min(ceiling, FIRST_RETRY * 2 ** min(max(failures - 1, 0), 16)))


class FamilyState:
    def __init__(
        self,
        family: Family,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.family = family
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._state = "starting"
        self._pid = 0
        self._restarts = 0
        self._in_sync = False
        self._verified: Desired | None = None  # the rules last verified in the kernel
        self._last: SyncResult | None = None
        self._syncs: collections.Counter[Reason] = collections.Counter()
        self._checks = 0
        self._restores = 0
        self._taken_since: float | None = None  # oldest request of the sync in flight
        self._failed_since: float | None = None  # of a failed sync, until one succeeds
        self._trouble: Trouble | None = None
        self._failures = 0  # failed syncs in a row
        self._owed: Reason | None = None

    # -- what the runner tells --------------------------------------------------------------

    def worker_up(self, pid: int) -> None:
        with self._lock:
            self._state, self._pid = "idle", pid

    def worker_down(self) -> int:
        """The worker is gone and will be replaced; returns the restart count."""
        with self._lock:
            self._restarts += 1
            self._state, self._pid, self._in_sync = "backoff", 0, False
            return self._restarts

    def cannot_start(self, error: str) -> None:
        with self._lock:
            self._trouble = self._new_trouble(Kind.WORKER_GONE, error)

    def stopped(self) -> None:
        with self._lock:
            self._state, self._pid = "stopped", 0

    def syncing(self, rules: Desired, since: float | None) -> None:
        """A sync (or check) of `rules` starts; `since` the oldest request it serves."""
        with self._lock:
            self._state = "syncing"
            if since is not None:
                self._taken_since = since
            if not _same(rules, self._verified):
                self._in_sync = False

    def no_config(self, since: float) -> None:
        with self._lock:
            if self._failed_since is None:
                self._failed_since = since
            if self._trouble is None or self._trouble.kind != Kind.NO_CONFIG:
                self._trouble = self._new_trouble(Kind.NO_CONFIG, "no valid config loaded yet")

    def attempt_failed(self, attempt: Attempt) -> None:
        """The worker reports a failed attempt that it retries."""
        with self._lock:
            self._in_sync = False
            self._trouble = self._new_trouble(attempt.kind, attempt.error)

    def hung(self, error: str) -> None:
        """The worker missed a deadline (a read's): it is killed and will be replaced."""
        with self._lock:
            self._in_sync = False
            self._trouble = self._new_trouble(Kind.HUNG, error)

    def checked(self, rules: Desired, in_sync: bool) -> None:
        """A check found the chain as desired (verified when in_sync), changing nothing."""
        with self._lock:
            self._state, self._in_sync = "idle", in_sync
            if in_sync:
                self._verified_now(rules)

    def count_check(self) -> None:
        with self._lock:
            self._checks += 1

    def recorded(
        self, reason: Reason, rules: Desired, outcome: SyncOutcome, since: float | None
    ) -> SyncResult:
        """A sync ran: its result, in status from now on."""
        result = SyncResult(
            family=self.family,
            ok=outcome.ok,
            changed=outcome.changed,
            duration=outcome.duration,
            finished_at=self._wall(),
            reason=reason,
            error=outcome.error,
            in_sync=outcome.in_sync,
            error_kind=outcome.kind,
        )
        with self._lock:
            self._state, self._in_sync, self._last = "idle", outcome.in_sync, result
            self._syncs[reason] += 1
            self._restores += outcome.changed
            self._taken_since = None
            if outcome.ok:
                self._failed_since = None
            else:
                if self._failed_since is None:
                    self._failed_since = since
                self._failures += 1
                kind = outcome.kind or Kind.INTERNAL
                self._trouble = self._new_trouble(kind, outcome.error)
            if outcome.ok and outcome.in_sync:
                self._verified_now(rules)
            else:
                self._owed = reason  # its verification or retry is still due
        return result

    # -- what the runner asks ---------------------------------------------------------------

    def syncs_run(self) -> int:
        with self._lock:
            return sum(self._syncs.values())

    def owed(self) -> Reason | None:
        """The reason of a sync that failed or is not verified yet; None when nothing is."""
        with self._lock:
            return self._owed

    def next_check_in(self, outcome: SyncOutcome, drift_interval: float) -> float:
        """When the runner looks again after this outcome: soon to verify a write, after a
        backoff to retry a failure, else after the drift-check interval."""
        if outcome.ok:
            return drift_interval if outcome.in_sync else min(VERIFY_AFTER, drift_interval)
        if outcome.kind == Kind.HUNG:
            return 0.0  # a new worker: try it at once
        with self._lock:
            failures = self._failures
        return retry_after(failures, drift_interval)

    def snapshot(
        self, requested: dict[Reason, int], queued: float | None, fault: Fault | None
    ) -> FamilyStatus:
        with self._lock:
            pending = [t for t in (self._failed_since, self._taken_since, queued) if t is not None]
            return FamilyStatus(
                family=self.family,
                pid=self._pid,
                state=self._state,
                restarts=self._restarts,
                in_sync=self._in_sync,
                last_result=self._last,
                syncs=dict(self._syncs),
                requests=requested,
                checks=self._checks,
                restores=self._restores,
                pending_since=min(pending, default=None),
                trouble=self._trouble,
                fault=fault,
            )

    # -- under the lock ---------------------------------------------------------------------

    def _verified_now(self, rules: Desired) -> None:
        self._verified, self._trouble, self._failures, self._owed = rules, None, 0, None
        self._failed_since = None

    def _new_trouble(self, kind: Kind, message: str) -> Trouble:
        """The trouble now: one of the same kind as before keeps its start and counts on."""
        old = self._trouble
        if old is not None and old.kind == kind:
            return dataclasses.replace(old, message=message, attempts=old.attempts + 1)
        return Trouble(kind, message, self._clock())


def _same(rules: Desired, verified: Desired | None) -> bool:
    """Whether `rules` are the ones last verified. The supervisor hands out the same rules (or
    table) until the config changes, so `is` answers first; a list and a tuple of the same
    rules are the same."""
    if rules is verified:
        return True
    if verified is None or isinstance(rules, Table) or isinstance(verified, Table):
        return rules == verified
    return list(rules) == list(verified)
