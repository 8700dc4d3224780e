"""masqd.engine.runner with stand-in worker processes (real processes, no iptables, no root):
requests are answered through their futures, a dead worker is replaced at once, a crash loop is
backed off while the other family carries on, and stop fails what still waits."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest

from masqd.core.errors import Kind, NoConfig, Stopping
from masqd.core.livestate import ReadOutcome
from masqd.core.model import Event, EventKind, Family, Reason
from masqd.core.natpath import NatPath, PathOutcome
from masqd.engine.events import EventBus
from masqd.engine.process import Backoff, Process
from masqd.engine.runner import FamilyRunner
from masqd.engine.worker import (
    PathCommand,
    ReadCommand,
    SyncCommand,
    SyncOutcome,
    WorkerOptions,
)
from tests.support.daemon import wait_until

_FORK = multiprocessing.get_context("fork")
RULES = ["-A IP-MASQ-AGENT -j RETURN"]


def _serve(conn: Connection, outcome: Callable[[], SyncOutcome]) -> None:
    """A stand-in worker: every sync answers outcome(), reads answer with nothing."""
    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        if command is None:
            return
        if isinstance(command, SyncCommand):
            conn.send(outcome())
        elif isinstance(command, ReadCommand):
            conn.send(ReadOutcome(None, "a stand-in reads nothing"))
        elif isinstance(command, PathCommand):
            conn.send(PathOutcome(NatPath(Family.IPV4, ()), "a stand-in's empty path"))


def _answer(conn: Connection, delay: float) -> None:
    """Every sync succeeds after `delay`."""

    def succeed() -> SyncOutcome:
        time.sleep(delay)
        return SyncOutcome(True, False, delay, in_sync=True)

    _serve(conn, succeed)


def _crash(conn: Connection, delay: float) -> None:
    os._exit(3)


def _die_on_a_read(conn: Connection, delay: float) -> None:
    """Syncs succeed; a read of the nat path kills it before it answers."""
    while (command := conn.recv()) is not None:
        if isinstance(command, PathCommand):
            os._exit(3)
        conn.send(SyncOutcome(True, False, 0.0, in_sync=True))


def launcher(
    target: Callable[[Connection, float], None], delay: float = 0.0
) -> Callable[[WorkerOptions], tuple[Process, Connection]]:
    def launch(opts: WorkerOptions) -> tuple[Process, Connection]:
        parent, child = _FORK.Pipe()
        proc = _FORK.Process(target=target, args=(child, delay), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    return launch


class Events:
    def __init__(self, bus: EventBus) -> None:
        self.seen: list[Event] = []
        bus.subscribe(lambda e: self.seen.append(e) if e is not None else None)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.seen]


@pytest.fixture
def make_runner() -> Iterator[Callable[..., FamilyRunner]]:
    runners: list[FamilyRunner] = []

    def make(
        target: Callable[[Connection, float], None] = _answer,
        delay: float = 0.0,
        rules: list[str] | None = RULES,
        family: Family = Family.IPV4,
        bus: EventBus | None = None,
        backoff: Backoff | None = None,
        refused: str = "",
        drift_check_interval: float = 3600.0,
        gather: float = 0.0,
    ) -> FamilyRunner:
        runner = FamilyRunner(
            WorkerOptions(family, "nft", "IP-MASQ-AGENT", 1.0, 1, 1.0),
            desired=lambda: rules,
            events=bus or EventBus(),
            drift_check_interval=drift_check_interval,
            gather=gather,
            backoff=backoff,
            launcher=launcher(target, delay),
            refused=refused,
        )
        runner.start()
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop(1.0)


def test_a_request_is_answered_with_the_result_of_its_sync(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    bus = EventBus()
    events = Events(bus)
    runner = make_runner(bus=bus)
    result = runner.queue.sync(Reason.API).result(5)
    assert result.ok and result.in_sync and result.reason == Reason.API
    status = runner.status()
    assert status.last_result == result and status.in_sync and status.syncs == {Reason.API: 1}
    assert status.pending_since is None
    assert events.kinds()[-2:] == [EventKind.SYNC_STARTED, EventKind.SYNC_FINISHED]


def _count_syncs(conn: Connection, delay: float) -> None:
    """Every sync fails saying it ran: a refused backend must never ask."""
    _serve(conn, lambda: SyncOutcome(False, False, 0.0, "the worker was asked to sync"))


def test_a_refused_backend_fails_every_sync_at_once_and_never_asks_the_worker(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    """The iptables backend on a kernel without its xt modules: each request fails at once
    with the reason and kind MISSING, the state says blocked, and neither syncs nor drift
    checks reach the worker (nothing to retry until masqd is started otherwise)."""
    why = "the kernel lacks xt_comment; run masqd with --backend nftables"
    runner = make_runner(target=_count_syncs, refused=why, drift_check_interval=0.05)
    for reason in (Reason.STARTUP, Reason.API):
        result = runner.queue.sync(reason).result(5)
        assert not result.ok and result.error == why
        assert result.error_kind == Kind.MISSING
    time.sleep(0.3)  # several drift-check intervals
    status = runner.status()
    assert status.state == "blocked" and not status.in_sync
    assert status.checks == 0 and status.restores == 0
    assert status.last_result is not None and status.last_result.error == why


def test_requests_arriving_during_a_sync_are_served_together_by_the_next(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    runner = make_runner(delay=0.3)
    first = runner.queue.sync(Reason.API)
    wait_until(lambda: runner.status().state == "syncing", 5)
    later = [runner.queue.sync(Reason.CNI) for _ in range(20)]
    assert later[0] is later[-1]
    assert first.result(5).reason == Reason.API
    assert later[0].result(5).reason == Reason.CNI
    assert runner.status().syncs == {Reason.API: 1, Reason.CNI: 1}


def test_without_a_valid_config_a_request_fails_and_nothing_is_synced(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    runner = make_runner(rules=None)
    with pytest.raises(NoConfig):
        runner.queue.sync(Reason.API).result(5)
    status = runner.status()
    assert status.syncs == {} and status.pending_since is not None


def test_a_killed_worker_is_replaced_within_a_second(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    """Death is seen on the process sentinel while idle, not at the next drift check."""
    bus = EventBus()
    events = Events(bus)
    runner = make_runner(bus=bus)
    runner.queue.sync(Reason.API).result(5)
    pid = runner.status().pid
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    wait_until(lambda: runner.status().pid not in (0, pid) and runner.status().in_sync, 5, 0.01)
    assert time.monotonic() - start < 1.0
    assert runner.status().restarts == 1
    assert EventKind.WORKER_RESTARTED in events.kinds()
    assert runner.queue.sync(Reason.API).result(5).ok


def test_a_crash_loop_is_backed_off_and_the_other_family_carries_on(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    crashing = make_runner(target=_crash, backoff=Backoff(base=0.1, maximum=10.0))
    healthy = make_runner(family=Family.IPV6)
    time.sleep(1.5)
    # Waits of 0, 0.2, 0.4, 0.8 s: about five starts in 1.5 s, not hundreds.
    assert 2 <= crashing.status().restarts <= 6
    assert not crashing.status().in_sync
    results = [healthy.queue.sync(Reason.API).result(5) for _ in range(3)]
    assert all(r.ok for r in results)
    assert healthy.status().restarts == 0


def test_stop_fails_whatever_still_waits(make_runner: Callable[..., FamilyRunner]) -> None:
    runner = make_runner(delay=0.5)
    runner.queue.sync(Reason.API)
    wait_until(lambda: runner.status().state == "syncing", 5)
    waiting = runner.queue.sync(Reason.CNI)
    runner.stop(1.0)
    with pytest.raises(Stopping):
        waiting.result(5)
    with pytest.raises(Stopping):
        runner.queue.sync(Reason.API).result(1)
    assert runner.status().state == "stopped"


def test_reads_go_through_the_runner(make_runner: Callable[..., FamilyRunner]) -> None:
    runner = make_runner()
    outcome = runner.read_live().result(5)
    assert outcome.live is None and outcome.error == "a stand-in reads nothing"
    path = runner.read_path().result(5)
    assert path.path == NatPath(Family.IPV4, ()) and path.error == "a stand-in's empty path"


def test_a_read_of_the_nat_path_fails_as_data_when_the_worker_is_gone(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    """explain's read, like the live chain's, answers WORKER_GONE instead of raising."""
    runner = make_runner(_die_on_a_read)
    outcome = runner.read_path().result(10)
    assert outcome.path is None and outcome.kind == Kind.WORKER_GONE


def test_a_burst_is_gathered_and_a_lone_request_goes_at_once(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    """A request within `gather` of the last sync's start waits until `gather` after it;
    one that comes after a quiet spell is served at once."""
    runner = make_runner(gather=0.3)
    start = time.monotonic()
    runner.queue.sync(Reason.API).result(5)
    first = time.monotonic() - start
    runner.queue.sync(Reason.API).result(5)  # right after: the same burst
    second = time.monotonic() - start
    assert first < 0.25 and second >= 0.3
    time.sleep(0.35)
    lone = time.monotonic()
    runner.queue.sync(Reason.API).result(5)
    assert time.monotonic() - lone < 0.25
