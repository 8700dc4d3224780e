"""masqd.engine.queue: requests waiting together are served by one sync that starts after all of
them; a request arriving later waits for the next; failures and stop reach every waiter."""

from __future__ import annotations

import pytest

from masqd.core.errors import NoConfig, Stopping
from masqd.core.model import Family, Reason, SyncResult
from masqd.engine.queue import RequestQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(reason: Reason = Reason.API) -> SyncResult:
    return SyncResult(Family.IPV4, True, False, 0.001, 0.0, reason, in_sync=True)


def test_requests_waiting_together_are_served_by_one_sync() -> None:
    """Three requests before a sync starts: one batch, one future, one result for all."""
    queue = RequestQueue()
    futures = [queue.sync(Reason.API), queue.sync(Reason.CNI), queue.sync(Reason.API)]
    work = queue.take()
    assert work is not None and work.batch is not None
    assert work.batch.requests == 3
    assert work.batch.reasons == {Reason.API, Reason.CNI}
    work.batch.resolve(result())
    assert all(f.result(0) == result() for f in futures)
    assert queue.take() is None


def test_a_request_arriving_during_a_sync_waits_for_the_next() -> None:
    """Taken means started: a later request is not answered by the sync already running."""
    queue = RequestQueue()
    first = queue.sync(Reason.API)
    running = queue.take()
    assert running is not None and running.batch is not None
    later = queue.sync(Reason.API)
    running.batch.resolve(result())
    assert first.done() and not later.done()
    following = queue.take()
    assert following is not None and following.batch is not None
    assert following.batch.future is later


def test_the_batch_runs_under_the_most_urgent_reason() -> None:
    """A config change served together with an API call and an interval sync counts as the
    config change (Reason's order)."""
    queue = RequestQueue()
    for reason in (Reason.INTERVAL, Reason.API, Reason.CONFIG_CHANGE):
        queue.sync(reason)
    work = queue.take()
    assert work is not None and work.batch is not None
    assert work.batch.reason == Reason.CONFIG_CHANGE


def test_the_runner_is_woken_once_per_batch_with_the_oldest_arrival() -> None:
    """notify fires for the first waiting request only; oldest() is its arrival."""
    clock, calls = Clock(), []
    queue = RequestQueue(lambda: calls.append(clock.now), clock)
    assert queue.oldest() is None
    queue.sync(Reason.API)
    clock.now = 101.0
    queue.sync(Reason.CNI)
    assert calls == [100.0]
    assert queue.oldest() == 100.0
    work = queue.take()
    assert work is not None and work.batch is not None and work.batch.since == 100.0
    assert queue.oldest() is None
    queue.sync(Reason.API)
    assert calls == [100.0, 101.0]


def test_a_failed_sync_reaches_every_waiter() -> None:
    """batch.fail sets the error on the shared future."""
    queue = RequestQueue()
    futures = [queue.sync(Reason.API) for _ in range(3)]
    work = queue.take()
    assert work is not None and work.batch is not None
    work.batch.fail(NoConfig("no config"))
    for future in futures:
        with pytest.raises(NoConfig):
            future.result(0)


def test_a_waiter_cannot_cancel_the_sync_for_the_others() -> None:
    """The shared future is running from the start: cancel() refuses."""
    queue = RequestQueue()
    future = queue.sync(Reason.API)
    assert not future.cancel()
    work = queue.take()
    assert work is not None and work.batch is not None
    work.batch.resolve(result())
    assert future.result(0).ok


def test_reads_waiting_together_share_one_read() -> None:
    """Two reads before the runner looks: one read future, taken beside any sync."""
    queue = RequestQueue()
    a, b = queue.read("live"), queue.read("live")
    other = queue.read("path")
    assert a is b and other is not a
    sync = queue.sync(Reason.API)
    work = queue.take()
    assert work is not None and work.reads == {"live": a, "path": other}
    assert work.batch is not None and work.batch.future is sync


def test_stop_fails_waiting_and_later_requests_and_never_notifies_after() -> None:
    """close(): everyone waiting gets the error, a later request gets it at once."""
    calls: list[int] = []
    queue = RequestQueue(lambda: calls.append(1))
    waiting, read = queue.sync(Reason.API), queue.read("live")
    queue.close(Stopping("masqd is shutting down"))
    later = queue.sync(Reason.CNI)
    for future in (waiting, read, later):
        with pytest.raises(Stopping):
            future.result(0)
    assert queue.take() is None
    assert len(calls) == 2  # the sync and the read before close; none after


def test_requests_are_counted_by_reason() -> None:
    queue = RequestQueue()
    for reason in (Reason.API, Reason.API, Reason.CNI):
        queue.sync(reason)
    assert queue.requested() == {Reason.API: 2, Reason.CNI: 1}
