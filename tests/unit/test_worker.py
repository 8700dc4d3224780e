"""The worker's sync: read the live chain first, write only when it differs, one restore that
adds the jump only when missing, retry what is retryable (with a deadline) and nothing else."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing import Pipe

import pytest

from masqd.core.errors import ApplyError, Kind
from masqd.core.fingerprint import Fingerprint
from masqd.core.livestate import parse_save
from masqd.core.model import Family
from masqd.core.rules import jump_rule
from masqd.engine import worker
from masqd.engine.backends import IptablesBackend

CHAIN = "IP-MASQ-AGENT"
JUMP = jump_rule(CHAIN)
RULES = [f"-A {CHAIN} -d 10.0.0.0/8 -j RETURN", f"-A {CHAIN} -j MASQUERADE"]
OPTS = worker.WorkerOptions(
    family=Family.IPV4,
    mode="nft",
    chain=CHAIN,
    iptables_timeout=5.0,
    lock_wait=5,
    retry_deadline=1.0,
)
LEGACY = worker.WorkerOptions(Family.IPV4, "legacy", CHAIN, 5.0, 5, 1.0)


def save_text(rules: list[str], *, chain: bool = True, jump: bool = True) -> str:
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]"]
    if chain:
        lines.append(f":{CHAIN} - [0:0]")
    if jump:
        lines.append(f"[7:420] {JUMP}")
    lines += [f"[3:180] {r}" for r in rules]
    return "\n".join([*lines, "COMMIT", ""])


class FakeBackend:
    """Answers save_nat from a script of dumps and records every restore; errors can be queued.

    `generation` plays the nft ruleset generation: each restore bumps it by one; a test that
    plays someone else changing the table bumps it too."""

    def __init__(self, dump: str, errors: list[ApplyError] | None = None) -> None:
        self.dump = dump
        self.errors = list(errors or [])
        self.restores: list[str] = []
        self.saves = 0
        self.generation = 41
        self.prepared: list[int] = []  # the lock wait of each prepare_restore
        self.closed = False

    def save_nat(self, *, counters: bool = False, timeout: float = 10.0) -> str:
        self.saves += 1
        return self.dump

    def restore(self, text: str, *, wait: int = 5, timeout: float = 10.0) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.restores.append(text)
        rules = [line for line in text.splitlines() if line.startswith(f"-A {CHAIN} ")]
        jump = JUMP in text or JUMP in self.dump  # a restore without the jump leaves it as it is
        self.dump = save_text(rules, jump=jump)
        self.generation += 1

    def prepare_restore(self, wait: int = 5) -> None:
        self.prepared.append(wait)

    def close(self) -> None:
        self.closed = True


class FakeProbe:
    """The probe's view of a FakeBackend: its generation (nft) and a fingerprint of its dump;
    `blind` plays a probe that cannot tell."""

    def __init__(self, backend: FakeBackend, mode: str = "nft", blind: bool = False) -> None:
        self.backend, self.mode, self.blind = backend, mode, blind
        self.fingerprints = 0

    def generation(self) -> int | None:
        return self.backend.generation if self.mode == "nft" and not self.blind else None

    def shape(self) -> bytes | None:
        """legacy: like the kernel's, it misses a rewrite that keeps every size."""
        if self.mode == "nft" or self.blind:
            return None
        return str(len(self.backend.dump)).encode()

    def fingerprint(self) -> Fingerprint | None:
        if self.blind:
            return None
        self.fingerprints += 1
        live = parse_save(self.backend.dump, CHAIN)
        chain = "\n".join(live.specs).encode() if live.chain_exists else None
        return Fingerprint(chain, "\n".join(live.jump_rules).encode())


def iptables(backend: FakeBackend, opts: worker.WorkerOptions = OPTS) -> IptablesBackend:
    """The worker's iptables backend over the fake binaries."""
    return IptablesBackend(backend, opts.chain, opts.iptables_timeout, opts.lock_wait)  # type: ignore[arg-type]


def sync(
    backend: FakeBackend,
    rules: list[str] = RULES,
    known: worker.Known | None = None,
    *,
    opts: worker.WorkerOptions = OPTS,
    probe: FakeProbe | None = None,
) -> worker.SyncOutcome:
    probe = probe or FakeProbe(backend, opts.mode)
    return worker.sync(iptables(backend, opts), probe, opts, rules, known)


def test_unchanged_chain_is_not_rewritten() -> None:
    """When the live chain already matches, nothing is restored (counters survive)."""
    backend = FakeBackend(save_text(RULES))
    outcome = sync(backend)
    assert outcome.ok and outcome.in_sync and not outcome.changed
    assert backend.restores == []


def test_missing_chain_and_jump_are_written_in_one_restore() -> None:
    """An empty table gets our chain and our jump in a single restore."""
    backend = FakeBackend(save_text([], chain=False, jump=False))
    outcome = sync(backend)
    assert outcome.ok and outcome.changed and outcome.in_sync
    assert backend.restores == [
        "\n".join(["*nat", f":{CHAIN} - [0:0]", *RULES, JUMP, "COMMIT"]) + "\n"
    ]


def test_differing_chain_is_rewritten_without_a_second_jump() -> None:
    """With our jump in place, a changed chain is rewritten and no jump is appended again."""
    backend = FakeBackend(save_text(RULES[:1]))
    outcome = sync(backend)
    assert outcome.changed
    (text,) = backend.restores
    assert JUMP not in text
    assert text == "\n".join(["*nat", f":{CHAIN} - [0:0]", *RULES, "COMMIT"]) + "\n"


def test_deleted_jump_alone_is_restored() -> None:
    """A chain that matches but lost its jump gets the jump back."""
    backend = FakeBackend(save_text(RULES, jump=False))
    assert sync(backend).changed
    assert JUMP in backend.restores[0]


def test_reordered_rules_are_rewritten() -> None:
    """Order matters: the same rules in another order are rewritten."""
    backend = FakeBackend(save_text(list(reversed(RULES))))
    assert sync(backend).changed


def test_retryable_error_is_retried_until_it_succeeds() -> None:
    """A lock timeout is retried; the sync then succeeds and reports the change."""
    lock = ApplyError("lock", Kind.LOCK, stderr="xtables lock")
    backend = FakeBackend(save_text([], chain=False, jump=False), errors=[lock, lock])
    patient = worker.WorkerOptions(Family.IPV4, "nft", CHAIN, 5.0, 5, 5.0)
    outcome = sync(backend, opts=patient)
    assert outcome.ok and outcome.changed
    assert len(backend.restores) == 1
    assert backend.saves == 3  # the live state is read again before each attempt


def test_rejected_rule_set_is_not_retried() -> None:
    """A non-retryable failure ends the sync at once with the error and its kind, as data."""
    rejected = ApplyError("iptables-restore: line 3 failed", Kind.REJECTED)
    backend = FakeBackend(save_text([], chain=False), errors=[rejected, rejected])
    outcome = sync(backend)
    assert not outcome.ok and not outcome.in_sync
    assert outcome.error == "iptables-restore: line 3 failed"
    assert outcome.kind == Kind.REJECTED
    assert backend.saves == 1


def test_retrying_stops_at_the_deadline() -> None:
    """A failure that stays retryable is retried while another attempt can start before
    retry_deadline, then reported; each failed attempt is reported before its retry."""
    lock = ApplyError("lock held", Kind.LOCK)
    backend = FakeBackend(save_text([], chain=False), errors=[lock] * 1000)
    attempts: list[worker.Attempt] = []
    outcome = worker.sync(
        iptables(backend), FakeProbe(backend), OPTS, RULES, report=attempts.append
    )
    assert not outcome.ok
    assert outcome.error == "lock held" and outcome.kind == Kind.LOCK
    assert outcome.duration < OPTS.retry_deadline
    assert backend.saves >= 2
    assert [a.number for a in attempts] == list(range(1, backend.saves))
    assert all(a.kind == Kind.LOCK and a.error == "lock held" for a in attempts)


def test_every_command_of_a_sync_ends_by_its_deadline() -> None:
    """No iptables command of a sync is given time past retry_deadline + iptables_timeout from
    its start, so the worker always answers within `answer_deadline`."""
    opts = worker.WorkerOptions(Family.IPV4, "nft", CHAIN, 0.4, 5, 1.0)
    given: list[float] = []

    class Slow(FakeBackend):
        def save_nat(self, *, counters: bool = False, timeout: float = 10.0) -> str:
            given.append(timeout)
            time.sleep(timeout)
            raise ApplyError("iptables-nft-save did not finish", Kind.TIMEOUT)

    start = time.monotonic()
    outcome = sync(Slow(""), opts=opts)
    elapsed = time.monotonic() - start
    assert outcome.kind == Kind.TIMEOUT
    assert elapsed <= opts.retry_deadline + opts.iptables_timeout + 0.1
    assert max(given) <= opts.iptables_timeout and len(given) >= 2
    # The budget itself: each command at most iptables_timeout, none past the end.
    now = time.monotonic()
    assert worker._Budget(opts, now).timeout() == pytest.approx(0.4, abs=0.01)
    assert worker._Budget(opts, now - 1.3).timeout() == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ApplyError) as info:
        worker._Budget(opts, now - 1.5).timeout()
    assert info.value.kind == Kind.TIMEOUT
    assert worker.answer_deadline(worker.SyncCommand(()), opts) == 1.0 + 0.4 + 2.0
    assert worker.answer_deadline(worker.ReadCommand(), opts) == 0.4 + 2.0


class Inert(FakeBackend):
    """An iptables-restore that exits 0 and writes nothing."""

    def restore(self, text: str, *, wait: int = 5, timeout: float = 10.0) -> None:
        self.restores.append(text)


def test_nft_write_that_moves_no_generation_did_not_take() -> None:
    """nft: a restore that exited 0 while the ruleset generation stayed put committed nothing:
    the sync fails as unverified (the runner retries it after a pause), and nothing is known."""
    backend = Inert(save_text([], chain=False, jump=False))
    known = worker.Known()
    outcome = sync(backend, RULES, known)
    assert not outcome.ok and not outcome.in_sync and outcome.kind == Kind.UNVERIFIED
    assert "did not take" in outcome.error and len(backend.restores) == 1
    assert known.rules is None


def test_legacy_write_is_answered_unverified_then_read_back() -> None:
    """legacy: a write is answered ok but not in sync; the next sync reads it back (one
    iptables-save) and only then says in sync."""
    backend = FakeBackend(save_text([], chain=False, jump=False))
    known = worker.Known()
    first = sync(backend, RULES, known, opts=LEGACY)
    assert first.ok and first.changed and not first.in_sync
    saves = backend.saves
    second = sync(backend, RULES, known, opts=LEGACY)
    assert second.ok and second.in_sync and not second.changed
    assert backend.saves == saves + 1 and known.verified


@pytest.mark.parametrize("blind", [False, True])
def test_legacy_write_that_did_not_take_is_found_when_read_back(blind: bool) -> None:
    """legacy: read back after a write that exited 0, a chain without our rules means the
    write did not take: an unverified failure, not a silent second write (with a probe that
    cannot fingerprint too)."""
    backend = Inert(save_text([], chain=False, jump=False))
    known = worker.Known()
    probe = FakeProbe(backend, "legacy", blind=blind)
    assert sync(backend, RULES, known, opts=LEGACY, probe=probe).ok
    outcome = sync(backend, RULES, known, opts=LEGACY, probe=probe)
    assert not outcome.ok and outcome.kind == Kind.UNVERIFIED
    assert len(backend.restores) == 1


def test_read_reports_live_rules_with_counters() -> None:
    """read() gives the live chain with each rule's counters."""
    outcome = worker.read(iptables(FakeBackend(save_text(RULES))))
    assert outcome.live is not None
    assert [(r.spec, r.packets, r.bytes) for r in outcome.live.rules] == [
        (RULES[0], 3, 180),
        (RULES[1], 3, 180),
    ]


def test_read_failure_is_reported_not_raised() -> None:
    """A failing iptables-save becomes an error in the outcome."""

    class Failing(FakeBackend):
        def save_nat(self, *, counters: bool = False, timeout: float = 10.0) -> str:
            raise ApplyError("iptables-nft-save exited 1", Kind.REJECTED)

    outcome = worker.read(iptables(Failing("")))
    assert outcome.live is None
    assert outcome.error == "iptables-nft-save exited 1"


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    """worker.run sets SIGINT/SIGTERM handlers for its process; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_run_answers_commands_in_order_until_told_to_stop(
    monkeypatch: pytest.MonkeyPatch, keep_signal_handlers: None
) -> None:
    """The worker loop answers sync and read commands over its pipe and ends on None. Queued
    commands are answered one after another, with no tidying between them."""
    backend = FakeBackend(save_text([], chain=False, jump=False))
    monkeypatch.setattr(worker, "open_backend", lambda opts: iptables(backend, opts))
    monkeypatch.setattr(worker, "KernelProbe", lambda family, mode, chain: FakeProbe(backend))
    parent, child = Pipe()
    parent.send(worker.SyncCommand(tuple(RULES)))
    parent.send(worker.SyncCommand(tuple(RULES)))
    parent.send(worker.ReadCommand())
    parent.send(None)
    worker.run(OPTS, child)
    first, second, read = parent.recv(), parent.recv(), parent.recv()
    assert isinstance(first, worker.SyncOutcome) and first.changed
    assert isinstance(second, worker.SyncOutcome) and not second.changed
    assert isinstance(read, worker.ReadOutcome) and read.live is not None
    assert read.live.specs == RULES
    assert len(backend.restores) == 1
    assert backend.prepared == []  # a command was always waiting: no time to tidy
    assert backend.closed


def test_run_tidies_after_each_answer_when_idle(
    monkeypatch: pytest.MonkeyPatch, keep_signal_handlers: None
) -> None:
    """Between commands the worker settles its last write and starts the next restore; it
    ends the waiting restore when it ends."""
    backend = FakeBackend(save_text([], chain=False, jump=False))
    probe = FakeProbe(backend)
    monkeypatch.setattr(worker, "open_backend", lambda opts: iptables(backend, opts))
    monkeypatch.setattr(worker, "KernelProbe", lambda family, mode, chain: probe)
    parent, child = Pipe()
    seen: dict[str, object] = {}

    def supervisor() -> None:  # the worker must run on the main thread (it sets signals)
        try:
            parent.send(worker.SyncCommand(tuple(RULES)))
            seen["changed"] = parent.recv().changed
            time.sleep(0.2)  # idle: the worker tidies
            seen["after sync"] = (list(backend.prepared), probe.fingerprints)
            parent.send(worker.ReadCommand())
            seen["read"] = parent.recv().live is not None
            time.sleep(0.2)
            seen["after read"] = list(backend.prepared)
        finally:
            parent.send(None)

    thread = threading.Thread(target=supervisor)
    thread.start()
    worker.run(OPTS, child)
    thread.join(10)
    assert seen["changed"] is True and seen["read"] is True
    prepared, fingerprints = seen["after sync"]  # type: ignore[misc]
    assert prepared == [OPTS.lock_wait]
    assert fingerprints >= 1  # the write was settled
    assert seen["after read"] == [OPTS.lock_wait] * 2
    assert backend.closed


def test_run_ends_when_the_pipe_closes(
    monkeypatch: pytest.MonkeyPatch, keep_signal_handlers: None
) -> None:
    """A closed pipe (the supervisor is gone) ends the worker loop, and its waiting restore."""
    backend = FakeBackend("")
    monkeypatch.setattr(worker, "open_backend", lambda opts: iptables(backend, opts))
    monkeypatch.setattr(
        worker, "KernelProbe", lambda family, mode, chain: FakeProbe(FakeBackend(""))
    )
    parent, child = Pipe()
    parent.close()
    worker.run(OPTS, child)
    assert backend.closed


# -- what the worker remembers between syncs -------------------------------------------------


def synced(mode: str = "nft") -> tuple[FakeBackend, worker.Known, worker.WorkerOptions]:
    """A backend whose chain is as desired, and a worker that has read and verified it."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    opts = OPTS if mode == "nft" else LEGACY
    assert sync(backend, RULES, known, opts=opts).ok
    assert backend.saves == 1 and known.verified
    return backend, known, opts


def test_unchanged_generation_skips_every_read() -> None:
    """nft: rules as verified and the generation unchanged: no exec, not even a fingerprint."""
    backend, known, opts = synced("nft")
    probe = FakeProbe(backend)
    outcome = sync(backend, RULES, known, opts=opts, probe=probe)
    assert outcome.ok and outcome.in_sync and not outcome.changed
    assert backend.saves == 1 and backend.restores == [] and probe.fingerprints == 0


def test_change_elsewhere_in_the_table_reads_nothing() -> None:
    """nft: another chain changed (generation moved, our fingerprint did not): in sync with no
    exec, and the new generation is remembered for the next time."""
    backend, known, opts = synced("nft")
    backend.dump = backend.dump.replace("COMMIT", ":KUBE-SERVICES - [0:0]\nCOMMIT")
    backend.generation += 5
    outcome = sync(backend, RULES, known, opts=opts)
    assert outcome.in_sync and not outcome.changed and backend.saves == 1
    probe = FakeProbe(backend)
    sync(backend, RULES, known, opts=opts, probe=probe)
    assert probe.fingerprints == 0


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_unchanged_fingerprint_is_in_sync_without_reading(mode: str) -> None:
    """A verified chain whose fingerprint did not move is in sync: no iptables-save."""
    backend, known, opts = synced(mode)
    backend.generation += 1
    for _ in range(3):
        assert sync(backend, RULES, known, opts=opts).in_sync
    assert backend.saves == 1 and backend.restores == []


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_flushed_chain_is_rewritten_without_reading(mode: str) -> None:
    """Someone flushed our chain (its fingerprint moved, the jump's did not): one restore of
    the chain, no iptables-save, no second jump."""
    backend, known, opts = synced(mode)
    backend.dump = save_text([])
    backend.generation += 1
    outcome = sync(backend, RULES, known, opts=opts)
    assert outcome.ok and outcome.changed
    assert backend.saves == 1
    (text,) = backend.restores
    assert JUMP not in text and RULES[0] in text


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_deleted_jump_is_read_and_restored(mode: str) -> None:
    """A moved jump fingerprint means reading: the restore then adds the jump back."""
    backend, known, opts = synced(mode)
    backend.dump = save_text(RULES, jump=False)
    backend.generation += 1
    assert sync(backend, RULES, known, opts=opts).changed
    assert backend.saves == 2 and JUMP in backend.restores[0]


def test_nft_write_with_one_generation_step_is_verified() -> None:
    """nft: a restore that moved the generation by exactly one was the only change, so the
    next sync reads nothing back."""
    backend, known, opts = synced("nft")
    backend.dump = save_text([])
    backend.generation += 1
    sync(backend, RULES, known, opts=opts)
    assert known.unsettled is not None and not known.verified
    worker.settle(FakeProbe(backend), known)
    assert known.verified and known.unsettled is None
    assert sync(backend, RULES, known, opts=opts).in_sync
    assert backend.saves == 1 and len(backend.restores) == 1


def test_sync_settles_a_write_the_caller_did_not() -> None:
    """A sync right after a write first fingerprints that write, then decides."""
    backend, known, opts = synced("nft")
    backend.dump = save_text([])
    backend.generation += 1
    sync(backend, RULES, known, opts=opts)
    assert sync(backend, RULES, known, opts=opts).in_sync
    assert known.verified and backend.saves == 1


def test_nft_write_beside_another_writer_is_read_back() -> None:
    """nft: another change landed during our restore (two generation steps): the next sync
    reads the chain back once before trusting it."""
    backend, known, opts = synced("nft")
    backend.dump = save_text([])
    backend.generation += 1
    original = backend.restore

    def racing_restore(text: str, *, wait: int = 5, timeout: float = 10.0) -> None:
        original(text)
        backend.generation += 1

    backend.restore = racing_restore  # type: ignore[method-assign]
    sync(backend, RULES, known, opts=opts)
    worker.settle(FakeProbe(backend), known)
    assert not known.verified
    sync(backend, RULES, known, opts=opts)
    assert backend.saves == 2 and known.verified


def test_legacy_write_is_read_back_once() -> None:
    """legacy has no generation: after a write, the next sync reads the chain back once
    (verifying it), and the ones after read nothing."""
    backend, known, opts = synced("legacy")
    backend.dump = save_text([])
    sync(backend, RULES, known, opts=opts)
    worker.settle(FakeProbe(backend, "legacy"), known)
    assert not known.verified and known.fingerprint is not None
    for _ in range(3):
        assert not sync(backend, RULES, known, opts=opts).changed
    assert backend.saves == 2 and len(backend.restores) == 1


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_sync_reads_the_table_only_when_the_cheap_look_says_it_changed(mode: str) -> None:
    """Every sync, the interval's too, trusts the generation and the fingerprint: no
    iptables-save while nothing changed, one once our chain did."""
    backend, known, opts = synced(mode)
    sync(backend, RULES, known, opts=opts)  # legacy: the read-back of the write
    saves = backend.saves
    for _ in range(3):
        assert not sync(backend, RULES, known, opts=opts).changed
    assert backend.saves == saves
    backend.dump = save_text(RULES[:1])  # someone removed a rule
    backend.generation += 1
    outcome = sync(backend, RULES, known, opts=opts)
    assert outcome.ok and outcome.changed


def test_probe_that_cannot_tell_means_reading_every_time() -> None:
    """Without a fingerprint (the probe failed), every sync reads the chain."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    probe = FakeProbe(backend, "legacy", blind=True)
    for _ in range(3):
        assert sync(backend, RULES, known, opts=LEGACY, probe=probe).ok
    assert backend.saves == 3 and backend.restores == []


def test_fingerprint_moving_during_the_read_is_not_trusted() -> None:
    """A chain that changed while iptables-save ran is verified, but its fingerprint is not
    kept: the next sync reads again."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    probe = FakeProbe(backend, "legacy")
    readings = iter([Fingerprint(b"before", b"j"), Fingerprint(b"after", b"j")])
    probe.fingerprint = lambda: next(readings)  # type: ignore[method-assign]
    sync(backend, RULES, known, opts=LEGACY, probe=probe)
    assert known.verified and known.fingerprint is None
    sync(backend, RULES, known, opts=LEGACY)
    assert backend.saves == 2


def test_new_rules_are_written_without_reading_first() -> None:
    """Rules that differ from those last verified are written at once: the read could not
    change the decision; the jump is left out because it was there."""
    backend, known, opts = synced("nft")
    new = [*RULES[:1], f"-A {CHAIN} -d 192.168.0.0/16 -j RETURN"]
    outcome = sync(backend, new, known, opts=opts)
    assert outcome.changed and backend.saves == 1
    assert JUMP not in backend.restores[0]


def test_failure_forgets_what_was_known() -> None:
    """After a failed restore the worker reads everything again before deciding."""
    backend, known, opts = synced("nft")
    backend.errors.append(ApplyError("rejected", Kind.REJECTED))
    new = RULES[:1]
    assert not sync(backend, new, known, opts=opts).ok
    assert known.rules is None and not known.verified
    assert sync(backend, new, known, opts=opts).ok
    assert backend.saves == 2


def test_generation_moving_during_the_read_is_not_trusted() -> None:
    """nft: a generation that moved while iptables-save ran means the fingerprint taken
    before it is not kept (nor the generation trusted past the next change)."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    probe = FakeProbe(backend)
    original = backend.save_nat

    def racing_save(*, counters: bool = False, timeout: float = 10.0) -> str:
        backend.generation += 1
        return original(counters=counters, timeout=timeout)

    backend.save_nat = racing_save  # type: ignore[method-assign]
    sync(backend, RULES, known, probe=probe)
    assert known.verified and known.fingerprint is None


def test_the_rules_cross_the_pipe_only_when_they_change() -> None:
    """A command without rules means the rules of the last one that carried them; a worker
    asked so before it has any says so instead of syncing to nothing."""
    parent, child = Pipe()
    parent.send(worker.SyncCommand(None))
    parent.send(worker.SyncCommand(tuple(RULES)))
    parent.send(worker.SyncCommand(None))
    parent.send(None)
    backend = FakeBackend(save_text(RULES))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker, "open_backend", lambda opts: iptables(backend, opts))
        patch.setattr(worker, "KernelProbe", lambda *a: FakeProbe(backend))
        worker.run(OPTS, child)
    first, second, third = (parent.recv() for _ in range(3))
    assert not first.ok and first.kind == Kind.INTERNAL
    assert second.ok and third.ok and not third.changed


def test_a_write_that_trusted_a_jump_deleted_meanwhile_is_not_believed() -> None:
    """nft: a config change rewrites the chain without the jump it last saw; someone deleted
    the jump just before. The write is not verified, so the next check reads the table and
    puts the jump back, instead of trusting the generation forever."""
    backend, known, opts = synced("nft")
    probe = FakeProbe(backend)
    backend.dump = save_text(RULES, jump=False)  # someone deletes our jump
    backend.generation += 1
    changed = RULES[:1]
    assert sync(backend, changed, known, opts=opts, probe=probe).changed
    assert JUMP not in backend.restores[-1]
    worker.settle(probe, known)
    assert not known.verified
    outcome = sync(backend, changed, known, opts=opts, probe=probe)
    assert outcome.ok and outcome.changed and JUMP in backend.restores[-1]
    assert JUMP in backend.dump


def test_a_verified_chain_reports_the_generation_it_was_verified_at() -> None:
    """The runner's drift check trusts that generation while the kernel's stays there."""
    backend, known, opts = synced("nft")
    outcome = sync(backend, RULES, known, opts=opts)
    assert outcome.generation == backend.generation
    backend.dump = save_text(RULES[:1])  # someone changes our chain
    backend.generation += 1
    assert sync(backend, RULES, known, opts=opts).generation is None  # rewritten, not settled


def test_legacy_trusts_the_table_shape_and_looks_deeper_every_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """legacy: while the nat table's shape is as verified, no fingerprint is taken; a rewrite
    of our chain that keeps its size is found by the fingerprint taken at least every
    DEEP_LOOK_EVERY seconds; a change of shape (a flushed chain) is found at once."""
    clock = [1000.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    backend, known, opts = synced("legacy")
    probe = FakeProbe(backend, "legacy")
    sync(backend, RULES, known, opts=opts, probe=probe)  # the read-back of the write
    looks = probe.fingerprints
    assert not sync(backend, RULES, known, opts=opts, probe=probe).changed
    assert probe.fingerprints == looks
    same_size = [RULES[0].replace("10.0.0.0/8", "10.9.0.0/8"), *RULES[1:]]
    assert len(same_size[0]) == len(RULES[0])
    backend.dump = save_text(same_size)  # someone rewrites a rule, every size kept
    assert not sync(backend, RULES, known, opts=opts, probe=probe).changed  # unseen for now
    clock[0] += worker.DEEP_LOOK_EVERY
    assert sync(backend, RULES, known, opts=opts, probe=probe).changed  # the deep look
    backend.dump = save_text(RULES[:1])  # a flush-like change of shape
    assert sync(backend, RULES, known, opts=opts, probe=probe).changed
