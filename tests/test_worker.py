"""The worker's sync: read the live chain first, write only when it differs, one restore that
adds the jump only when missing, retry what is retryable (with a deadline) and nothing else."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from multiprocessing import Pipe

import pytest

from masqd import worker
from masqd.iptables import IptablesError
from masqd.rules import Family, jump_rule

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


def save_text(rules: list[str], *, chain: bool = True, jump: bool = True) -> str:
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]"]
    if chain:
        lines.append(f":{CHAIN} - [0:0]")
    if jump:
        lines.append(f"[7:420] {JUMP}")
    lines += [f"[3:180] {r}" for r in rules]
    return "\n".join([*lines, "COMMIT", ""])


class FakeBackend:
    """Answers save_nat from a script of dumps and records every restore; errors can be queued."""

    def __init__(self, dump: str, errors: list[IptablesError] | None = None) -> None:
        self.dump = dump
        self.errors = list(errors or [])
        self.restores: list[str] = []
        self.saves = 0

    def save_nat(self, *, counters: bool = False, timeout: float = 10.0) -> str:
        self.saves += 1
        return self.dump

    def restore(self, text: str, *, wait: int = 5, timeout: float = 10.0) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.restores.append(text)
        rules = [line for line in text.splitlines() if line.startswith(f"-A {CHAIN} ")]
        self.dump = save_text(rules)


def sync(backend: FakeBackend, rules: list[str] = RULES) -> worker.SyncOutcome:
    return worker.sync(backend, OPTS, rules)  # type: ignore[arg-type]


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
    lock = IptablesError("lock", retryable=True, stderr="xtables lock")
    backend = FakeBackend(save_text([], chain=False, jump=False), errors=[lock, lock])
    outcome = sync(backend)
    assert outcome.ok and outcome.changed
    assert len(backend.restores) == 1
    assert backend.saves == 3  # the live state is read again before each attempt


def test_rejected_rule_set_is_not_retried() -> None:
    """A non-retryable failure ends the sync at once with the error."""
    rejected = IptablesError("iptables-restore: line 3 failed", retryable=False)
    backend = FakeBackend(save_text([], chain=False), errors=[rejected, rejected])
    outcome = sync(backend)
    assert not outcome.ok and not outcome.in_sync
    assert outcome.error == "iptables-restore: line 3 failed"
    assert backend.saves == 1


def test_retrying_stops_at_the_deadline() -> None:
    """A failure that stays retryable is reported once retry_deadline has passed."""
    lock = IptablesError("lock held", retryable=True)
    backend = FakeBackend(save_text([], chain=False), errors=[lock] * 1000)
    outcome = sync(backend)
    assert not outcome.ok
    assert outcome.error == "lock held"
    assert OPTS.retry_deadline <= outcome.duration < OPTS.retry_deadline + 6.0


def test_read_reports_live_rules_with_counters() -> None:
    """read() gives the live chain with each rule's counters."""
    outcome = worker.read(FakeBackend(save_text(RULES)), OPTS)  # type: ignore[arg-type]
    assert outcome.live is not None
    assert [(r.spec, r.packets, r.bytes) for r in outcome.live.rules] == [
        (RULES[0], 3, 180),
        (RULES[1], 3, 180),
    ]


def test_read_failure_is_reported_not_raised() -> None:
    """A failing iptables-save becomes an error in the outcome."""

    class Failing(FakeBackend):
        def save_nat(self, *, counters: bool = False, timeout: float = 10.0) -> str:
            raise IptablesError("iptables-nft-save exited 1", retryable=False)

    outcome = worker.read(Failing(""), OPTS)  # type: ignore[arg-type]
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
    """The worker loop answers sync and read commands over its pipe and ends on None."""
    backend = FakeBackend(save_text([], chain=False, jump=False))
    monkeypatch.setattr(worker, "Backend", lambda family, mode: backend)
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


def test_run_ends_when_the_pipe_closes(
    monkeypatch: pytest.MonkeyPatch, keep_signal_handlers: None
) -> None:
    """A closed pipe (the supervisor is gone) ends the worker loop."""
    monkeypatch.setattr(worker, "Backend", lambda family, mode: FakeBackend(""))
    parent, child = Pipe()
    parent.close()
    worker.run(OPTS, child)


# -- what the worker remembers between syncs -------------------------------------------------


@pytest.fixture
def generation(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The nft ruleset generation the worker sees; tests bump it to say 'something changed'."""
    current = [41]
    monkeypatch.setattr(worker.nftgen, "generation", lambda timeout=1.0: current[0])
    return current


def test_unchanged_generation_skips_the_read(generation: list[int]) -> None:
    """nft: rules as last verified and the ruleset generation unchanged — no iptables exec."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    assert worker.sync(backend, OPTS, RULES, known).ok  # type: ignore[arg-type]
    assert backend.saves == 1
    outcome = worker.sync(backend, OPTS, RULES, known)  # type: ignore[arg-type]
    assert outcome.ok and outcome.in_sync and not outcome.changed
    assert backend.saves == 1 and backend.restores == []


def test_changed_generation_reads_and_repairs(generation: list[int]) -> None:
    """nft: a bumped generation (someone flushed our chain) means read, compare and repair."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    worker.sync(backend, OPTS, RULES, known)  # type: ignore[arg-type]
    backend.dump = save_text([])
    generation[0] += 1
    outcome = worker.sync(backend, OPTS, RULES, known)  # type: ignore[arg-type]
    assert outcome.changed and backend.saves == 2 and len(backend.restores) == 1


def test_full_sync_reads_even_with_unchanged_generation(generation: list[int]) -> None:
    """An interval sync (full) reads the chain whatever the worker remembers."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    worker.sync(backend, OPTS, RULES, known)  # type: ignore[arg-type]
    worker.sync(backend, OPTS, RULES, known, full=True)  # type: ignore[arg-type]
    assert backend.saves == 2


def test_legacy_mode_always_reads() -> None:
    """legacy has no generation id: every sync reads the chain."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    legacy = worker.WorkerOptions(Family.IPV4, "legacy", CHAIN, 5.0, 5, 1.0)
    for _ in range(3):
        assert worker.sync(backend, legacy, RULES, known).ok  # type: ignore[arg-type]
    assert backend.saves == 3 and backend.restores == []


def test_new_rules_are_written_without_reading_first(generation: list[int]) -> None:
    """Rules that differ from those last verified are written at once: the read could not
    change the decision; the jump is left out because it was there."""
    backend = FakeBackend(save_text(RULES))
    known = worker.Known()
    worker.sync(backend, OPTS, RULES, known)  # type: ignore[arg-type]
    new = [*RULES[:1], f"-A {CHAIN} -d 192.168.0.0/16 -j RETURN"]
    outcome = worker.sync(backend, OPTS, new, known)  # type: ignore[arg-type]
    assert outcome.changed and backend.saves == 1
    assert JUMP not in backend.restores[0]
    # Written, not verified: the next sync with the same rules reads them back.
    worker.sync(backend, OPTS, new, known)  # type: ignore[arg-type]
    assert backend.saves == 2 and len(backend.restores) == 1


def test_failure_forgets_what_was_known(generation: list[int]) -> None:
    """After a failed restore the worker reads everything again before deciding."""
    rejected = IptablesError("rejected", retryable=False)
    backend = FakeBackend(save_text(RULES), errors=[rejected])
    known = worker.Known()
    worker.sync(backend, OPTS, RULES, known)  # type: ignore[arg-type]
    new = RULES[:1]
    assert not worker.sync(backend, OPTS, new, known).ok  # type: ignore[arg-type]
    assert known.rules is None
    assert worker.sync(backend, OPTS, new, known).ok  # type: ignore[arg-type]
    assert backend.saves == 2
