"""A worker process: the only writer of one family's chain.

It runs in a process of its own (forked before the supervisor imports gRPC, or spawned when it
replaces one that died; either way it carries no gRPC state) and answers the supervisor's
commands over a pipe, one at a time: sync to these rules, or read the live chain. It imports
only what a sync needs. Failures travel back as data: an outcome's error text and its kind.
"""

from __future__ import annotations

import enum
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from masqd.core.errors import ApplyError, Kind
from masqd.core.fingerprint import Fingerprint
from masqd.core.leftovers import Leftovers, find_leftovers
from masqd.core.livestate import ReadOutcome, parse_save
from masqd.core.model import Family
from masqd.core.rules import jump_rule, render_restore
from masqd.host import heap
from masqd.host.iptables import Backend
from masqd.host.probe import KernelProbe, Probe, nftgen

NO_RULES = "the worker was asked for the rules it has, and has none"
DEEP_LOOK_EVERY = 60.0
"""legacy: the longest a verified chain is trusted on the nat table's shape alone. A rewrite of
our chain that keeps every entry's size (a rule replaced by one of the same length) leaves the
shape as it was; the fingerprint taken this often finds it. Any other change (a flush, a
deleted or added rule or jump, the table wiped) changes the shape and is found at the next
drift check."""
TIDY_AFTER = 0.001
"""Seconds a worker leaves the supervisor to pass its answer on before it tidies up: on a small
node the tidying otherwise competes with the answer on its way back (bench/README.md)."""
ANSWER_MARGIN = 2.0
"""Seconds past a command's own bound within which its answer must reach the supervisor: the
in-process probes, the pipe, and a node under load. Past that the worker counts as hung."""


@dataclass(frozen=True)
class WorkerOptions:
    family: Family
    mode: str
    chain: str
    iptables_timeout: float
    lock_wait: int
    retry_deadline: float


@dataclass(frozen=True)
class SyncCommand:
    """Make our chain hold exactly these rules (specs as iptables-save prints them).

    None: the rules of the last command that carried them. The supervisor sends the rules only
    when they change: thousands of them, pickled for every drift check, would cost more than
    the check."""

    rules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReadCommand:
    """Report the live chain with counters."""


@dataclass(frozen=True)
class Attempt:
    """Sent before the answer, for each failed attempt a sync retries: what went wrong."""

    kind: Kind
    error: str
    number: int


def answer_deadline(command: object, opts: WorkerOptions) -> float:
    """Seconds within which the worker answers `command`, or counts as hung.

    A sync retries until `retry_deadline` (no attempt starts later), and every iptables command
    of its last attempt ends by `iptables_timeout` after that (`_Budget`); a read is one
    iptables-save.
    """
    if isinstance(command, SyncCommand):
        return opts.retry_deadline + opts.iptables_timeout + ANSWER_MARGIN
    return opts.iptables_timeout + ANSWER_MARGIN


class _Budget:
    """The time a sync's iptables commands may still take: each at most iptables_timeout, and
    all of them over by retry_deadline + iptables_timeout from the sync's start."""

    def __init__(self, opts: WorkerOptions, start: float) -> None:
        self._cap = opts.iptables_timeout
        self._end = start + opts.retry_deadline + opts.iptables_timeout

    def timeout(self) -> float:
        left = min(self._cap, self._end - time.monotonic())
        if left <= 0:
            raise ApplyError("the sync ran out of time for another iptables command", Kind.TIMEOUT)
        return left


@dataclass(frozen=True)
class SyncOutcome:
    ok: bool
    changed: bool
    duration: float
    error: str = ""
    in_sync: bool = False
    kind: Kind | None = None
    """What kind of failure `error` is (it crosses the pipe as data); None when ok."""
    generation: int | None = None
    """nft: the ruleset generation at which the chain was verified as desired; while the
    kernel's stays there, nothing changed (the runner's drift check then asks no one)."""
    removed: tuple[str, ...] = ()
    """Leftovers of an earlier --masq-chain removed by this sync (chains, then jumps)."""


@dataclass
class Known:
    """What this worker last wrote or verified; lets a sync skip work that cannot change its
    outcome. Forgotten after any failure, so the next sync reads everything again."""

    rules: tuple[str, ...] | None = None
    """The chain as last verified or written by us."""
    verified: bool = False
    """`rules` were read back from the kernel (or, nft, written with no other change between)."""
    jump: bool = False
    """Our jump was in POSTROUTING then."""
    fingerprint: Fingerprint | None = None
    """The kernel's chain and jump at that moment, as the probe reads them."""
    generation: int | None = None
    """nft: the ruleset generation at that moment."""
    jumps: bytes | None = None
    """The POSTROUTING part of the fingerprint when our jump was last seen in place."""
    shape: bytes | None = None
    """legacy: the nat table's shape at that moment (see the probe's shape())."""
    looked_at: float = float("-inf")
    """When (time.monotonic()) a fingerprint or a read last found the chain as verified."""
    unsettled: Unsettled | None = None
    """After a write: what `settle` needs to verify it."""
    after_write: tuple[int | None, bytes | None] | None = None
    """The generation (nft) and table shape (legacy) right after our last write: while they
    are still so, the table is as the restore left it, and a chain read back without our rules
    means the write did not take (rather than that someone changed it since)."""

    def forget(self) -> None:
        self.rules, self.verified, self.fingerprint, self.generation = None, False, None, None
        self.jumps, self.unsettled, self.shape, self.looked_at = None, None, None, float("-inf")
        self.after_write = None


@dataclass(frozen=True)
class Unsettled:
    """A write not yet fingerprinted."""

    before: int | None
    after: int | None
    """nft: the generations around the restore."""
    jumps: bytes | None
    """What POSTROUTING's part of the fingerprint must be: the jumps as last seen in place
    (None: never seen, so the write cannot be verified this way)."""
    appended: bool
    """The write appended our jump itself: then any jump will do."""


@dataclass(frozen=True)
class Mismatch:
    """How the chain read differs from the rules wanted."""

    chain_holds_them: bool
    """Our chain holds exactly the rules (so only the jump or leftovers are amiss)."""
    needs_jump: bool
    """Our jump is not in POSTROUTING: the restore must add it."""
    leftovers: Leftovers
    """What an earlier --masq-chain left: the restore removes it."""


class Step(enum.Enum):
    """What a sync does next."""

    IN_SYNC = "nothing: the chain is as desired"
    READ = "read the chain with iptables-save and compare"
    VERIFY = "read back our last write: a mismatch means it did not take"
    WRITE = "write the chain (the jump is in place)"
    WRITE_WITH_JUMP = "write the chain and the jump"


def plan(known: Known, wanted: tuple[str, ...], probe: Probe, now: float = 0.0) -> Step:
    """Decide from what the worker knows and the probe's cheap looks, without an exec.

    - rules different from those last written or verified: the live chain differs from them
      too, so reading it could not change the decision to write;
    - nft, and the ruleset generation unchanged since a verified state: nothing changed;
    - legacy, and the nat table's shape unchanged since a verified state: nothing changed but,
      at most, a same-size rewrite, which the fingerprint taken at least every
      DEEP_LOOK_EVERY seconds finds;
    - the fingerprint as at a verified state: our chain and jump did not change (someone else
      changed something else in the table);
    - only our chain's fingerprint moved, the jump's did not: someone changed our chain, so
      rewrite it; reading it first could not change that;
    - these rules written and not verified yet, and nothing moved since the write (or the
      probe cannot tell): read them back, and a mismatch means the write did not take.
    Anything else, or a probe that cannot tell, means reading the chain.
    """
    if known.rules is None:
        return Step.READ
    if known.rules != wanted:
        return Step.WRITE if known.jump else Step.WRITE_WITH_JUMP
    generation = probe.generation()
    if known.verified and generation is not None and generation == known.generation:
        return Step.IN_SYNC
    shape = probe.shape()
    if (
        known.verified
        and shape is not None
        and shape == known.shape
        and now - known.looked_at < DEEP_LOOK_EVERY
    ):
        return Step.IN_SYNC
    current = probe.fingerprint()
    if current is None or known.fingerprint is None:
        return Step.READ if known.verified else Step.VERIFY
    if current == known.fingerprint:
        if not known.verified:
            return Step.VERIFY  # written but never read back
        # Both read before the fingerprint: at worst, too old.
        known.generation, known.shape, known.looked_at = generation, shape, now
        return Step.IN_SYNC
    if current.jumps == known.fingerprint.jumps and known.jump:
        return Step.WRITE
    return Step.READ


def sync(
    backend: Backend,
    probe: Probe,
    opts: WorkerOptions,
    rules: Sequence[str],
    known: Known | None = None,
    *,
    report: Callable[[Attempt], None] = lambda _a: None,
) -> SyncOutcome:
    """Make the live chain hold `rules`, rewriting it only when it differs (see `plan`).

    Every sync looks the same way, the interval's too: the cheap looks of `plan` first, and
    iptables-save only when they say something changed or cannot tell. `in_sync` in the
    outcome means verified: read back, or nft: written with the generation moving by exactly
    one and the jump appended by that write. Any other write is verified by the next sync
    (the runner asks for it soon after, off the answer's path), which `settle` prepares. Each
    failed attempt that is retried is reported before the retry; no attempt starts after
    retry_deadline, and no iptables command runs past it by more than iptables_timeout.
    """
    start = time.monotonic()
    budget = _Budget(opts, start)
    known = known if known is not None else Known()
    wanted = rules if isinstance(rules, tuple) else tuple(rules)
    changed = False
    removed = Leftovers()
    settle(probe, known)  # if the caller did not, after the last write

    def attempt() -> bool:
        """One try; whether the chain is now verified as desired."""
        nonlocal changed, removed
        step = plan(known, wanted, probe, time.monotonic())
        if step == Step.IN_SYNC:
            return True
        leftovers = Leftovers()
        if step in (Step.READ, Step.VERIFY):
            mismatch = _read_and_compare(backend, budget, opts, probe, known, wanted)
            if mismatch is None:
                return True
            if step == Step.VERIFY and not mismatch.chain_holds_them and _untouched(known, probe):
                raise ApplyError(
                    "the chain read back after our write does not hold what was written: "
                    "the write did not take (iptables-restore exited 0)",
                    Kind.UNVERIFIED,
                )
            # (Otherwise the write took and someone changed the table since, say deleted the
            # jump the write trusted: write again, as after any read.)
            with_jump, leftovers = mismatch.needs_jump, mismatch.leftovers
        else:
            with_jump = step == Step.WRITE_WITH_JUMP
        verified = _write(backend, budget, opts, probe, known, wanted, with_jump, leftovers)
        changed, removed = True, leftovers
        return verified

    try:
        try:
            in_sync = attempt()
        except ApplyError as e:
            if not e.retryable:
                raise
            in_sync = _retry(attempt, e, opts.retry_deadline - (time.monotonic() - start), report)
    except ApplyError as e:
        known.forget()
        return SyncOutcome(False, changed, time.monotonic() - start, str(e), kind=e.kind)
    verified_at = known.generation if known.verified else None
    duration = time.monotonic() - start
    return SyncOutcome(
        True,
        changed,
        duration,
        in_sync=in_sync,
        generation=verified_at,
        removed=(*removed.chains, *removed.jumps),
    )


def _retry(
    attempt: Callable[[], bool],
    failure: ApplyError,
    deadline: float,
    report: Callable[[Attempt], None],
) -> bool:
    """Try again with exponential backoff and jitter while the failure stays retryable, as
    long as another attempt can start within deadline seconds; each failure is reported before
    its retry, and the last one is raised. tenacity is imported only here: most syncs never
    fail, and a worker that never retries never loads it."""
    from tenacity import (
        RetryCallState,
        Retrying,
        retry_if_exception,
        stop_before_delay,
        wait_exponential_jitter,
    )

    failures = [failure]

    def again() -> bool:
        if failures:  # the failure that brought us here: the backoff comes before the retry
            raise failures.pop()
        return attempt()

    def retried(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, ApplyError):
            report(Attempt(error.kind, str(error), state.attempt_number))

    return Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, ApplyError) and e.retryable),
        wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.5),
        stop=stop_before_delay(max(0.0, deadline)),  # no attempt starts past the deadline
        before_sleep=retried,
        reraise=True,
    )(again)


def _read_and_compare(
    backend: Backend,
    budget: _Budget,
    opts: WorkerOptions,
    probe: Probe,
    known: Known,
    wanted: tuple[str, ...],
) -> Mismatch | None:
    """Read the nat table; None when our chain is as desired (and now verified) with nothing
    left by an earlier --masq-chain, else what differs."""
    # Probed before the read: a change during the read shows up next time.
    generation, shape = probe.generation(), probe.shape()
    before = probe.fingerprint()
    text = backend.save_nat(timeout=budget.timeout())
    live = parse_save(text, opts.chain)
    leftovers = find_leftovers(text, opts.chain)
    jump = jump_rule(opts.chain)
    if not live.matches(list(wanted), jump) or leftovers:
        holds = live.chain_exists and live.specs == list(wanted)
        return Mismatch(holds, jump not in live.jump_rules, leftovers)
    # The fingerprint counts only if nothing moved while iptables-save ran: nft tells by its
    # generation, legacy by a second fingerprint.
    if generation is not None:
        settled = before is not None and probe.generation() == generation
    else:
        settled = before is not None and probe.fingerprint() == before
    known.rules, known.verified, known.jump = wanted, True, True
    known.fingerprint, known.generation = (before if settled else None), generation
    known.jumps = before.jumps if settled and before is not None else None
    if settled:
        known.shape, known.looked_at = shape, time.monotonic()
    return None


def _write(
    backend: Backend,
    budget: _Budget,
    opts: WorkerOptions,
    probe: Probe,
    known: Known,
    wanted: tuple[str, ...],
    with_jump: bool,
    leftovers: Leftovers,
) -> bool:
    """One atomic iptables-restore of our chain (and jump), removing the leftovers in the same
    transaction; returns whether it is verified.

    nft: one generation step across the restore was our transaction alone, so the kernel
    holds what we wrote; when the write appended the jump itself, that is all there is to
    verify. No step means the restore committed nothing though it exited 0: it did not take.
    Anything else (more steps, a jump trusted rather than written, legacy) is verified by the
    next sync: `settle`, which the worker runs after it has answered, fingerprints the result.
    """
    text = render_restore(
        list(wanted), opts.chain, with_jump=with_jump, removals=leftovers.restore_lines()
    )
    jumps = known.jumps  # without the jump in the restore, it must still be this one
    known.forget()  # unknown until the restore succeeds
    before = probe.generation()
    backend.restore(text, wait=opts.lock_wait, timeout=budget.timeout())
    after = probe.generation()
    if before is not None and after == before:
        raise ApplyError(
            f"iptables-restore exited 0 but the nft ruleset did not change (generation "
            f"{before}): the write did not take",
            Kind.UNVERIFIED,
        )
    known.rules, known.jump = wanted, True
    known.unsettled = Unsettled(before, after, jumps, appended=with_jump)
    known.after_write = (after, probe.shape())  # a getsockopt: no table blob is read
    return with_jump and before is not None and after == nftgen.next_generation(before)


def _untouched(known: Known, probe: Probe) -> bool:
    """Whether the table is still as our last write left it, as far as the probe can tell (a
    probe that cannot tell anything says yes: the read-back is then the only evidence)."""
    if known.after_write is None:
        return False
    return known.after_write == (None, None) or (
        (probe.generation(), probe.shape()) == known.after_write
    )


def settle(probe: Probe, known: Known) -> None:
    """Fingerprint what the last write left in the kernel.

    nft: exactly one generation step across the restore means no one else wrote meanwhile,
    the same generation after the fingerprint means it shows our write, and the jump is as it
    must be (the one last seen, which a write without it trusted; or, when the write appended
    it, there): verified. Otherwise the next sync that finds this fingerprint reads the chain
    back once.
    """
    unsettled, known.unsettled = known.unsettled, None
    if unsettled is None:
        return
    fingerprint = probe.fingerprint()
    jump_in_place = fingerprint is not None and (
        bool(fingerprint.jumps)
        if unsettled.appended
        else unsettled.jumps is not None and fingerprint.jumps == unsettled.jumps
    )
    verified = (
        unsettled.before is not None
        and unsettled.after == nftgen.next_generation(unsettled.before)
        and jump_in_place
        and probe.generation() == unsettled.after
    )
    known.fingerprint, known.verified = fingerprint, verified
    known.generation = unsettled.after if verified else None
    known.jumps = fingerprint.jumps if verified and fingerprint is not None else None


def read(backend: Backend, opts: WorkerOptions) -> ReadOutcome:
    try:
        text = backend.save_nat(counters=True, timeout=opts.iptables_timeout)
    except ApplyError as e:
        return ReadOutcome(None, str(e), e.kind)
    return ReadOutcome(parse_save(text, opts.chain))


def run(opts: WorkerOptions, conn: Connection) -> None:
    """The worker's main loop: one command at a time until the pipe closes or says stop."""
    # Ctrl-C in a terminal reaches the whole process group; the supervisor decides shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the supervisor's handlers; SIGTERM must simply end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    backend = Backend(opts.family, opts.mode)
    probe = KernelProbe(opts.family, opts.mode, opts.chain)
    known = Known()
    wanted: tuple[str, ...] | None = None
    try:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                return
            if command is None:
                return
            busy = True  # worth handing freed heap back after
            if isinstance(command, SyncCommand):
                wanted = command.rules if command.rules is not None else wanted
                if wanted is None:
                    outcome = SyncOutcome(False, False, 0.0, NO_RULES, kind=Kind.INTERNAL)
                else:
                    outcome = sync(backend, probe, opts, wanted, known, report=conn.send)
                busy = outcome.changed or command.rules is not None
                conn.send(outcome)
            elif isinstance(command, ReadCommand):
                conn.send(read(backend, opts))
            # Tidy up off the caller's path: once the answer had a moment to reach the caller
            # without this process competing for the CPU, and only if no command is waiting (a
            # sync settles first by itself).
            if conn.poll(TIDY_AFTER):
                continue
            settle(probe, known)
            backend.prepare_restore(opts.lock_wait)  # the next write's restore, started idle
            if busy:
                heap.trim()
    finally:
        backend.close()
