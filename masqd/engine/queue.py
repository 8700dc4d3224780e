"""One family's requests to its worker, coalesced: a sync takes every request waiting when it
starts.

A sync request is a `concurrent.futures.Future`, resolved with the result of the first sync
that *started after* the request arrived: the runner takes the waiting requests at the moment
a sync starts, so a request that arrives during a sync waits for the next one. A burst of
hundreds of requests therefore costs a handful of syncs, and no caller waits for anything but
the sync in flight and its own.

Requests waiting for the same sync share one future: it is resolved once, and whoever awaits
it from an event loop wraps it once. It is marked running from the start, so it cannot be
cancelled: a caller that stops waiting stops waiting for itself only. Reads of the live chain
work the same way: reads waiting together share one read.

No threads of its own and no I/O: the runner loop is the only consumer, and `notify` is how it
learns that something arrived: called when the first request starts waiting (the runner takes
all of them at once), with the lock held, so none comes after `close` has returned. The clock
is injected for tests.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from masqd.core.errors import MasqdError
from masqd.core.model import Reason, SyncResult


def _priority(reason: Reason) -> int:
    return list(Reason).index(reason)


def _shared_future() -> Future[Any]:
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()  # shared by several callers: none may cancel it
    return future


@dataclass
class Batch:
    """The sync requests one sync serves."""

    future: Future[SyncResult]
    """The future every one of them holds."""
    requests: int
    reasons: frozenset[Reason]
    since: float
    """When the oldest of them arrived (the queue's clock)."""

    @property
    def reason(self) -> Reason:
        """The reason the sync runs under: the first of `Reason`'s order among the requests'."""
        return min(self.reasons, key=_priority)

    def resolve(self, result: SyncResult) -> None:
        self.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        self.future.set_exception(error)


@dataclass
class Work:
    """What the runner does next: a sync for `batch`, and/or one read of each kind asked for."""

    batch: Batch | None = None
    reads: dict[Hashable, Future[Any]] = field(default_factory=dict)
    """Each kind of read asked for (the runner's worker commands), and its shared future."""


class RequestQueue:
    """Requests waiting for one family's runner. Thread-safe."""

    def __init__(
        self,
        notify: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notify = notify
        self._clock = clock
        self._lock = threading.Lock()
        self._sync: Future[SyncResult] | None = None
        self._count = 0
        self._reasons: set[Reason] = set()
        self._since: float | None = None
        self._reads: dict[Hashable, Future[Any]] = {}
        self._closed: MasqdError | None = None
        self._requested: collections.Counter[Reason] = collections.Counter()

    def sync(self, reason: Reason) -> Future[SyncResult]:
        """Ask for a sync; the future holds its result (or the error that prevented it)."""
        with self._lock:
            if self._closed is not None:
                return _failed(self._closed)
            self._requested[reason] += 1
            self._reasons.add(reason)
            self._count += 1
            if self._sync is None:
                self._sync, self._since = _shared_future(), self._clock()
                self._notify()
            return self._sync

    def read(self, what: Hashable) -> Future[Any]:
        """Ask for a read of a kind the runner knows (the live chain, the nat path); the
        future holds what the runner read. Reads of a kind waiting together share one."""
        with self._lock:
            if self._closed is not None:
                return _failed(self._closed)
            future = self._reads.get(what)
            if future is None:
                future = self._reads[what] = _shared_future()
                self._notify()
            return future

    def take(self) -> Work | None:
        """Everything waiting now, to be served; None when nothing waits."""
        with self._lock:
            if self._sync is None and not self._reads:
                return None
            batch = None
            if self._sync is not None:
                assert self._since is not None
                batch = Batch(self._sync, self._count, frozenset(self._reasons), self._since)
            work = Work(batch, self._reads)
            self._sync, self._count, self._reasons, self._since = None, 0, set(), None
            self._reads = {}
            return work

    def requested(self) -> dict[Reason, int]:
        """Sync requests received so far, by reason."""
        with self._lock:
            return dict(self._requested)

    def waiting(self) -> int:
        """Sync requests waiting now (they share one future)."""
        with self._lock:
            return self._count

    def oldest(self) -> float | None:
        """When the oldest sync request still waiting arrived; None when none waits."""
        with self._lock:
            return self._since

    def close(self, error: MasqdError) -> None:
        """Fail every waiting request with error, and every later one at once."""
        with self._lock:
            self._closed = error
            waiting = [f for f in (self._sync, *self._reads.values()) if f is not None]
            self._sync, self._count, self._reasons, self._since = None, 0, set(), None
            self._reads = {}
        for future in waiting:
            future.set_exception(error)


def _failed(error: MasqdError) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(error)
    return future
