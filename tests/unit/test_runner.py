"""masqd.engine.runner with stand-in worker processes (real processes, no iptables, no root):
requests are answered through their futures, a dead worker is replaced at once, a crash loop is
backed off while the other family carries on, and stop fails what still waits. A worker that
stops answering (it sleeps, as a SIGSTOPped one would) is killed at its deadline and replaced,
and the sync it owed is applied by the new one; a write is in sync only once verified, and one
that did not take is retried after growing pauses; retried attempts show as the family's
trouble; neither an exception in the loop nor a worker that cannot be started (EMFILE) ends it."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from masqd.core.errors import Kind, MasqdError, NoConfig, Stopping
from masqd.core.health import assess
from masqd.core.livestate import ReadOutcome
from masqd.core.model import Event, EventKind, Family, Reason
from masqd.core.natpath import NatPath, PathOutcome
from masqd.engine import familystate, process, worker
from masqd.engine import runner as runner_module
from masqd.engine.events import EventBus
from masqd.engine.process import Backoff, Process
from masqd.engine.runner import FamilyRunner
from masqd.engine.worker import (
    Attempt,
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
    target: Callable[[Connection, float], None], delay: float = 0.0, *later: Callable[..., None]
) -> Callable[[WorkerOptions], tuple[Process, Connection]]:
    """Starts `target` first, then each of `later` in turn, then `target` again for good."""
    targets = [target, *later]

    def launch(opts: WorkerOptions) -> tuple[Process, Connection]:
        chosen = targets.pop(0) if len(targets) > 1 else targets[0]
        parent, child = _FORK.Pipe()
        proc = _FORK.Process(target=chosen, args=(child, delay), daemon=True)
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
        launch: Callable[[WorkerOptions], tuple[Process, Connection]] | None = None,
        desired: Callable[[], list[str] | None] | None = None,
        refused: str = "",
        drift_check_interval: float = 3600.0,
        gather: float = 0.0,
    ) -> FamilyRunner:
        runner = FamilyRunner(
            WorkerOptions(family, "nft", "IP-MASQ-AGENT", 0.2, 1, 0.3),
            desired=desired or (lambda: rules),
            events=bus or EventBus(),
            drift_check_interval=drift_check_interval,
            gather=gather,
            backoff=backoff,
            launcher=launch or launcher(target, delay),
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


# -- a hung worker, verification, retries, a guarded loop --------------------------------------


def _hang_on_second(conn: Connection, delay: float) -> None:
    """Answers its first sync, then never answers again: a stopped worker, to the runner."""
    conn.recv()
    conn.send(SyncOutcome(True, True, 0.0, in_sync=True))
    conn.recv()
    time.sleep(3600)


@pytest.fixture
def quick_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deadlines of a fraction of a second (the options' 0.3 + 0.2 s, with a 0.1 s margin)."""
    monkeypatch.setattr(worker, "ANSWER_MARGIN", 0.1)
    monkeypatch.setattr(familystate, "FIRST_RETRY", 0.05)
    monkeypatch.setattr(runner_module, "FIRST_START_PAUSE", 0.05)


def test_a_worker_that_stops_answering_is_killed_at_its_deadline_and_replaced(
    make_runner: Callable[..., FamilyRunner], quick_deadlines: None
) -> None:
    """The sync it owed fails as hung, within the command's deadline; the new worker applies
    it at once; meanwhile status says not in sync; the events tell the story."""
    bus = EventBus()
    events = Events(bus)
    desired = {"rules": RULES}
    runner_ = make_runner(
        launch=launcher(_hang_on_second, 0.0, _hang_on_second),
        bus=bus,
        desired=lambda: desired["rules"],
    )
    assert runner_.queue.sync(Reason.STARTUP).result(5).ok
    hung_pid = runner_.status().pid
    desired["rules"] = [*RULES, "-A IP-MASQ-AGENT -d 192.0.2.0/24 -j RETURN"]
    start = time.monotonic()
    future = runner_.queue.sync(Reason.CONFIG_CHANGE)
    wait_until(lambda: runner_.status().state == "syncing", 5, 0.01)
    meanwhile = runner_.status()
    assert not meanwhile.in_sync and meanwhile.pending_since is not None
    result = future.result(5)
    waited = time.monotonic() - start
    deadline = worker.answer_deadline(SyncCommand(()), runner_._worker.opts)
    assert deadline <= waited < deadline + 1.0
    assert not result.ok and result.error_kind == Kind.HUNG
    assert f"(pid {hung_pid}) did not answer within 0.6s" in result.error
    # Replaced at once; the change it owed is applied by the new worker, counted as such.
    wait_until(lambda: runner_.status().in_sync, 2, 0.01)
    status = runner_.status()
    assert status.pid not in (0, hung_pid) and status.restarts == 1
    assert status.trouble is None and status.last_result is not None
    assert status.last_result.ok and status.last_result.reason == Reason.CONFIG_CHANGE
    assert status.syncs[Reason.CONFIG_CHANGE] == 2
    kinds = events.kinds()
    failed = kinds.index(EventKind.SYNC_FAILED)
    assert EventKind.WORKER_RESTARTED in kinds[failed:]
    assert kinds[-1] == EventKind.SYNC_FINISHED


def _stop_on_second(conn: Connection, delay: float) -> None:
    """Answers its first sync, then stops itself (SIGSTOP) on the second."""
    conn.recv()
    conn.send(SyncOutcome(True, True, 0.0, in_sync=True))
    conn.recv()
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(3600)


def test_a_stopped_worker_is_hung_long_before_its_deadline(
    make_runner: Callable[..., FamilyRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGSTOP: seen in /proc within STOPPED_GRACE and half a second, with a command
    deadline of a minute; the replacement applies the sync at once."""
    monkeypatch.setattr(worker, "ANSWER_MARGIN", 60.0)
    runner_ = make_runner(launch=launcher(_stop_on_second, 0.0, _answer))
    assert runner_.queue.sync(Reason.STARTUP).result(5).ok
    stopped = runner_.status().pid
    start = time.monotonic()
    result = runner_.queue.sync(Reason.API).result(10)
    waited = time.monotonic() - start
    assert process.STOPPED_GRACE <= waited < process.STOPPED_GRACE + 1.0
    assert result.error_kind == Kind.HUNG and f"(pid {stopped}) is stopped (SIGSTOP)" in (
        result.error
    )
    wait_until(lambda: runner_.status().in_sync, 2, 0.01)
    assert runner_.status().pid not in (0, stopped)


def test_a_hung_worker_is_unhealthy_until_its_replacement_syncs(
    make_runner: Callable[..., FamilyRunner], quick_deadlines: None
) -> None:
    """Between the kill and the new worker's sync, the verdict names the hang."""
    verdicts: list[str] = []
    bus = EventBus()
    runner_: FamilyRunner | None = None

    def on_event(event: Event | None) -> None:
        if runner_ is not None and event is not None and event.kind == EventKind.SYNC_FAILED:
            verdicts.append(assess(runner_.status(), time.monotonic(), 60.0).reason)

    bus.subscribe(on_event)
    runner_ = make_runner(launch=launcher(_hang_on_second, 0.0, _answer), bus=bus)
    assert runner_.queue.sync(Reason.STARTUP).result(5).ok
    assert not runner_.queue.sync(Reason.API).result(5).ok
    assert verdicts and verdicts[0].startswith("its worker hung: the ipv4 worker")
    wait_until(lambda: assess(runner_.status(), time.monotonic(), 60.0).healthy, 2, 0.01)


def _retries(conn: Connection, delay: float) -> None:
    """Reports a failed attempt (of the kind in the rules' first entry), then succeeds."""
    while (command := conn.recv()) is not None:
        if isinstance(command, SyncCommand):
            kind = Kind(command.rules[0])
            conn.send(Attempt(kind, f"{kind.value} trouble", 1))
            time.sleep(0.5)
            conn.send(SyncOutcome(True, True, 0.5, in_sync=True))


@pytest.mark.parametrize(("kind", "healthy"), [(Kind.LOCK, True), (Kind.TIMEOUT, False)])
def test_a_retried_attempt_is_the_familys_trouble_until_the_sync_succeeds(
    make_runner: Callable[..., FamilyRunner], kind: Kind, healthy: bool
) -> None:
    """Reported as it happens: not in sync, the trouble named; a held lock stays healthy
    within the health timeout, a tool that times out does not."""
    bus = EventBus()
    events = Events(bus)
    runner_ = make_runner(target=_retries, rules=[kind.value], bus=bus)
    future = runner_.queue.sync(Reason.API)
    wait_until(lambda: runner_.status().trouble is not None, 5, 0.01)
    status = runner_.status()
    assert status.trouble is not None and status.trouble.kind == kind
    assert not status.in_sync
    verdict = assess(status, time.monotonic(), 60.0)
    assert verdict.healthy is healthy and verdict.serving is healthy
    assert ("xtables lock" in verdict.reason) if healthy else ("timeout trouble" in verdict.reason)
    assert EventKind.SYNC_RETRYING in events.kinds()
    assert future.result(5).ok
    assert runner_.status().trouble is None and runner_.status().in_sync


def _log_times(path: str) -> Callable[[Connection, float], None]:
    def stand_in(conn: Connection, delay: float) -> None:
        """Every sync: written, but the kernel does not hold it, until the fourth."""
        count = 0
        while (command := conn.recv()) is not None:
            if isinstance(command, SyncCommand):
                count += 1
                with open(path, "a") as f:
                    f.write(f"{time.monotonic()}\n")
                if count < 4:
                    conn.send(SyncOutcome(False, True, 0.0, "did not take", kind=Kind.UNVERIFIED))
                else:
                    conn.send(SyncOutcome(True, True, 0.0, in_sync=True))

    return stand_in


def test_a_write_that_did_not_take_is_retried_after_growing_pauses(
    make_runner: Callable[..., FamilyRunner], quick_deadlines: None, tmp_path: Path
) -> None:
    """Each retry waits twice as long as the one before; the retries count under the reason
    of the request that failed, and the trouble goes once the write takes."""
    log = tmp_path / "times"
    runner_ = make_runner(launch=launcher(_log_times(str(log))))
    result = runner_.queue.sync(Reason.CNI).result(5)
    assert not result.ok and result.error_kind == Kind.UNVERIFIED
    status = runner_.status()
    assert status.trouble is not None and status.trouble.kind == Kind.UNVERIFIED
    assert not assess(status, time.monotonic(), 60.0).healthy
    wait_until(lambda: runner_.status().in_sync, 5, 0.01)
    times = [float(t) for t in log.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3 and gaps[0] < gaps[1] < gaps[2]
    status = runner_.status()
    assert status.syncs == {Reason.CNI: 4} and status.trouble is None


def _unverified_then_verified(conn: Connection, delay: float) -> None:
    """legacy-like: a write is answered ok but unverified; the next sync verifies it."""
    answers = [SyncOutcome(True, True, 0.0, in_sync=False)]
    while (command := conn.recv()) is not None:
        if isinstance(command, SyncCommand):
            conn.send(answers.pop(0) if answers else SyncOutcome(True, False, 0.0, in_sync=True))


def test_an_unverified_write_is_verified_soon_and_only_then_in_sync(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    runner_ = make_runner(target=_unverified_then_verified)
    result = runner_.queue.sync(Reason.API).result(5)
    assert result.ok and result.changed and not result.in_sync
    start = time.monotonic()
    wait_until(lambda: runner_.status().in_sync, 2, 0.005)
    assert time.monotonic() - start < 0.5  # not at the next drift check (an hour away)
    status = runner_.status()
    assert status.checks == 1 and status.syncs == {Reason.API: 1}


def test_an_exception_in_the_loop_is_a_fault_in_status_not_the_end(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    """The request it hit fails with the error; the loop goes on and serves the next."""
    calls = {"n": 0}

    def desired() -> list[str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(24, "Too many open files")
        return RULES

    runner_ = make_runner(desired=desired)
    with pytest.raises(MasqdError, match="Too many open files"):
        runner_.queue.sync(Reason.API).result(5)
    fault = runner_.status().fault
    assert fault is not None and fault.count == 1 and "Errno 24" in fault.error
    assert runner_.queue.sync(Reason.API).result(5).ok
    fault = runner_.status().fault
    assert fault is not None and not fault.ongoing


def test_a_worker_that_cannot_be_started_is_tried_again_and_the_loop_lives(
    make_runner: Callable[..., FamilyRunner], quick_deadlines: None
) -> None:
    """Out of descriptors when a dead worker is replaced: the trouble says so, the start is
    tried again after a pause, and the family syncs once it works."""
    starts = {"n": 0}
    inner = launcher(_answer)

    def launch(opts: WorkerOptions) -> tuple[Process, Connection]:
        starts["n"] += 1
        if starts["n"] in (2, 3):
            raise OSError(24, "Too many open files")
        return inner(opts)

    runner_ = make_runner(launch=launch)
    runner_.queue.sync(Reason.API).result(5)
    os.kill(runner_.status().pid, signal.SIGKILL)
    wait_until(lambda: runner_.status().trouble is not None, 5, 0.01)
    trouble = runner_.status().trouble
    assert trouble is not None and "cannot start a worker: [Errno 24]" in trouble.message
    assert not assess(runner_.status(), time.monotonic(), 60.0).healthy
    wait_until(lambda: runner_.status().pid != 0, 5, 0.01)
    assert runner_.queue.sync(Reason.API).result(5).ok
    assert starts["n"] == 4 and runner_.status().trouble is None


def test_a_burst_is_gathered_and_a_lone_request_goes_at_once(
    make_runner: Callable[..., FamilyRunner],
) -> None:
    """A request that came while a sync ran waits until `gather` after that sync's start; a
    lone request after the last sync ended, which served one request too (a caller's next
    turn), is served at once."""
    runner = make_runner(delay=0.1, gather=0.4)
    start = time.monotonic()
    runner.queue.sync(Reason.API).result(5)
    assert time.monotonic() - start < 0.35  # the first: at once
    turn = time.monotonic()
    runner.queue.sync(Reason.API).result(5)  # right after, alone: the caller's next turn
    assert time.monotonic() - turn < 0.35
    started = time.monotonic()
    first = runner.queue.sync(Reason.API)
    time.sleep(0.05)  # the sync runs (0.1 s); these two come meanwhile: a burst
    during = [runner.queue.sync(Reason.API), runner.queue.sync(Reason.API)]
    first.result(5)
    assert during[0] is during[1]  # one sync serves them both
    during[0].result(5)
    assert time.monotonic() - started >= 0.4
    assert runner.status().syncs[Reason.API] == 4
    after = time.monotonic()
    runner.queue.sync(Reason.API).result(5)  # alone, but the last sync served two: gathered
    assert time.monotonic() - after >= 0.25
