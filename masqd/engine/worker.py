"""A worker process: the only writer of one family's chain (or, nftables, table).

It runs in a process of its own (forked before the supervisor imports gRPC, or spawned when it
replaces one that died; either way it carries no gRPC state) and answers the supervisor's
commands over a pipe, one at a time: sync to these rules, or read the live chain. It imports
only what a sync needs. Failures travel back as data: an outcome's error text and its kind.

What it decides (`plan`, `sync`, `settle`) is the same on both backends; how it reads and
writes is its `Backend`'s (`masqd.engine.backends`).
"""

from __future__ import annotations

import enum
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from masqd.core.desired import Desired
from masqd.core.errors import ApplyError, Kind
from masqd.core.fingerprint import Fingerprint
from masqd.core.livestate import ReadOutcome
from masqd.core.model import NFTABLES, Family
from masqd.core.natpath import PathOutcome
from masqd.core.nftrules import Table
from masqd.core.rules import DEFAULT_TABLE
from masqd.engine.backends import Backend, Write, open_backend
from masqd.host import heap
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
    """legacy or nft (the iptables backend), or nftables (masqd.core.model.NFTABLES)."""
    chain: str
    iptables_timeout: float
    """The longest any one command (iptables or nft) may run."""
    lock_wait: int
    retry_deadline: float
    table: str = DEFAULT_TABLE
    """Our table (the nftables backend)."""
    jump_first: bool = False
    """--jump-position first (the iptables backend): our jump must be POSTROUTING's first
    rule. The nftables backend's position is its base chain's priority, in the table."""

    @property
    def probed(self) -> str:
        """What the kernel probe fingerprints: our table (nftables) or our chain."""
        return self.table if self.mode == NFTABLES else self.chain


@dataclass(frozen=True)
class SyncCommand:
    """Make ours hold exactly this: our chain's rules (specs as iptables-save prints them) or,
    nftables, our table.

    None: what the last command that carried it said. The supervisor sends it only when it
    changes: thousands of rules or elements, pickled for every drift check, would cost more
    than the check."""

    rules: Desired | None = None


@dataclass(frozen=True)
class ReadCommand:
    """Report the live chain with counters."""

    def failed(self, error: str, kind: Kind) -> ReadOutcome:
        return ReadOutcome(None, error, kind)


@dataclass(frozen=True)
class PathCommand:
    """Report every owner's nat postrouting chains, for `masqctl explain`."""

    def failed(self, error: str, kind: Kind) -> PathOutcome:
        return PathOutcome(None, error, kind)


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

    rules: Desired | None = None
    """The chain (or table) as last verified or written by us."""
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


class Step(enum.Enum):
    """What a sync does next."""

    IN_SYNC = "nothing: the chain is as desired"
    READ = "read the chain with iptables-save (nftables: nft list table) and compare"
    VERIFY = "read back our last write: not holding it means it did not take"
    WRITE = "write the chain (the jump is in place); nftables: what differs from the known"
    WRITE_WITH_JUMP = "write the chain and the jump"


def plan(
    known: Known, wanted: Desired, probe: Probe, now: float = 0.0, *, blind_writes: bool = True
) -> Step:
    """Decide from what the worker knows and the probe's cheap looks, without an exec.

    - rules different from those last written or verified: the live chain differs from them
      too, so reading it could not change the decision to write (a backend whose writes are
      blind to the kernel's state; the nftables backend writes a diff from the known table,
      so it writes only once the checks below say the kernel still holds it);
    - nft, and the ruleset generation unchanged since a verified state: nothing changed;
    - legacy, and the nat table's shape unchanged since a verified state: nothing changed but,
      at most, a same-size rewrite, which the fingerprint taken at least every
      DEEP_LOOK_EVERY seconds finds;
    - the fingerprint as at a verified state: our chain and jump did not change (someone else
      changed something else in the table);
    - only our chain's fingerprint moved, the jump's did not: someone changed our chain, so
      rewrite it; reading it first could not change that (blind writes only);
    - these rules written and not verified yet, and nothing moved since the write (or the
      probe cannot tell): read them back, and not holding them means the write did not take.
    Anything else, or a probe that cannot tell, means reading the chain.
    """
    if known.rules is None:
        return Step.READ
    if known.rules != wanted and blind_writes:
        return Step.WRITE if known.jump else Step.WRITE_WITH_JUMP
    generation = probe.generation()
    if known.verified and generation is not None and generation == known.generation:
        return _from_known(known, wanted)
    shape = probe.shape()
    if (
        known.verified
        and shape is not None
        and shape == known.shape
        and now - known.looked_at < DEEP_LOOK_EVERY
    ):
        return _from_known(known, wanted)
    current = probe.fingerprint()
    if current is None or known.fingerprint is None:
        return Step.READ if known.verified else Step.VERIFY
    if current == known.fingerprint:
        if not known.verified:
            return Step.VERIFY  # written but never read back
        # Both read before the fingerprint: at worst, too old.
        known.generation, known.shape, known.looked_at = generation, shape, now
        return _from_known(known, wanted)
    if blind_writes and current.jumps == known.fingerprint.jumps and known.jump:
        return Step.WRITE
    return Step.READ


def _from_known(known: Known, wanted: Desired) -> Step:
    """The kernel holds what the worker knows: in sync, or a write from there."""
    return Step.IN_SYNC if known.rules == wanted else Step.WRITE


def sync(
    backend: Backend,
    probe: Probe,
    opts: WorkerOptions,
    rules: Desired | Sequence[str],
    known: Known | None = None,
    *,
    report: Callable[[Attempt], None] = lambda _a: None,
) -> SyncOutcome:
    """Make ours hold `rules`, rewriting it only when it differs (see `plan`).

    Every sync looks the same way, the interval's too: the cheap looks of `plan` first, and
    a read only when they say something changed or cannot tell. `in_sync` in the outcome
    means verified: read back, or nft: written with the generation moving by exactly one and
    the jump (nftables: the base chain) written by that write. Any other write is verified
    by the next sync (the runner asks for it soon after, off the answer's path), which
    `settle` prepares. Each failed attempt that is retried is reported before the retry; no
    attempt starts after retry_deadline, and no command runs past it by more than
    iptables_timeout.
    """
    start = time.monotonic()
    budget = _Budget(opts, start)
    known = known if known is not None else Known()
    wanted: Desired = rules if isinstance(rules, (tuple, Table)) else tuple(rules)
    changed = False
    removed: tuple[str, ...] = ()
    settle(probe, known)  # if the caller did not, after the last write

    def attempt() -> bool:
        """One try; whether ours is now verified as desired."""
        nonlocal changed, removed
        step = plan(known, wanted, probe, time.monotonic(), blind_writes=backend.blind_writes)
        if step == Step.IN_SYNC:
            return True
        if step in (Step.READ, Step.VERIFY):
            verifying = step == Step.VERIFY
            write = _read_and_compare(backend, budget, probe, known, wanted, verifying)
        else:
            assert known.rules is not None
            with_jump = step == Step.WRITE_WITH_JUMP
            write = backend.change_from(known.rules, wanted, with_jump=with_jump)
        if write is None:
            return True
        verified = _write(backend, budget, probe, known, wanted, write)
        changed, removed = True, write.removed
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
    if changed and backend.settles_at_once:
        settle(probe, known)
        in_sync = in_sync or known.verified
    verified_at = known.generation if known.verified else None
    duration = time.monotonic() - start
    return SyncOutcome(
        True,
        changed,
        duration,
        in_sync=in_sync,
        generation=verified_at,
        removed=removed,
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
    probe: Probe,
    known: Known,
    wanted: Desired,
    verifying: bool,
) -> Write | None:
    """Read ours; None when it is as desired (and now verified) with nothing left by an earlier
    --masq-chain or --nft-table, else the write that makes it so (iptables: with our jump when
    it is missing, removing the leftovers). Verifying our last write, a kernel that does not
    hold it though no one changed anything since is an unverified failure."""
    # Probed before the read: a change during the read shows up next time.
    generation, shape = probe.generation(), probe.shape()
    before = probe.fingerprint()
    live = backend.read(timeout=budget.timeout())
    write = backend.change(live, wanted)
    # A write that took, followed by someone's change (say, deleting the jump it trusted), is
    # written again as after any read; only a kernel left as the write left it, without what
    # was written, means the write did not take.
    if (
        write is not None
        and verifying
        and known.rules is not None
        and not backend.holds(live, known.rules)
        and _untouched(known, probe)
    ):
        raise ApplyError(
            "what was read back after our write does not hold what was written: the write did "
            "not take (it exited 0)",
            Kind.UNVERIFIED,
        )
    # The fingerprint counts only if nothing moved while the read ran: nft tells by its
    # generation, legacy by a second fingerprint.
    if generation is not None:
        settled = before is not None and probe.generation() == generation
    else:
        settled = before is not None and probe.fingerprint() == before
    if write is not None:
        if not write.with_jump:
            # The write trusts the jump this read saw in place: it must still be that one.
            known.jumps = before.jumps if settled and before is not None else None
        return write
    known.rules, known.verified, known.jump = wanted, True, True
    known.fingerprint, known.generation = (before if settled else None), generation
    known.jumps = before.jumps if settled and before is not None else None
    if settled:
        known.shape, known.looked_at = shape, time.monotonic()
    return None


def _write(
    backend: Backend, budget: _Budget, probe: Probe, known: Known, wanted: Desired, write: Write
) -> bool:
    """One atomic transaction (iptables-restore of our chain and jump, removing an earlier
    --masq-chain's leftovers; or nft -f); returns whether it is verified.

    nft: one generation step across the write was our transaction alone, so the kernel holds
    what we wrote; when the write put the jump (nftables: the base chain) in itself, that is
    all there is to verify. No step means the write committed nothing though it exited 0: it
    did not take. Anything else (more steps, a jump trusted rather than written, legacy) is
    verified by the next sync: `settle`, which the worker runs after it has answered (or, a
    backend that settles at once, before), fingerprints the result.
    """
    jumps = known.jumps  # without the jump in the write, it must still be this one
    known.forget()  # unknown until the transaction succeeds
    before = probe.generation()
    backend.apply(write.text, timeout=budget.timeout())
    after = probe.generation()
    if before is not None and after == before:
        raise ApplyError(
            f"the write exited 0 but the nft ruleset did not change (generation {before}): "
            "the write did not take",
            Kind.UNVERIFIED,
        )
    known.rules, known.jump = wanted, True
    known.unsettled = Unsettled(before, after, jumps, appended=write.with_jump)
    known.after_write = (after, probe.shape())  # a getsockopt: no table blob is read
    return write.with_jump and before is not None and after == nftgen.next_generation(before)


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


def read(backend: Backend) -> ReadOutcome:
    """The live state with counters, or why it cannot be read."""
    try:
        return ReadOutcome(backend.read(counters=True))
    except ApplyError as e:
        return ReadOutcome(None, str(e), e.kind)


def read_path(opts: WorkerOptions) -> PathOutcome:
    """The nat path as the kernel has it (imported here: most workers are never asked)."""
    from masqd.host import nattables

    try:
        return PathOutcome(nattables.read(opts.family, opts.iptables_timeout))
    except ApplyError as e:
        return PathOutcome(None, str(e), e.kind)


def run(opts: WorkerOptions, conn: Connection) -> None:
    """The worker's main loop: one command at a time until the pipe closes or says stop."""
    # Ctrl-C in a terminal reaches the whole process group; the supervisor decides shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the supervisor's handlers; SIGTERM must simply end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    backend = open_backend(opts)
    probe = KernelProbe(opts.family, opts.mode, opts.probed)
    known = Known()
    wanted: Desired | None = None
    try:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                return
            if command is None:
                return
            busy = True  # worth handing freed heap back after
            synced = False
            if isinstance(command, SyncCommand):
                wanted = command.rules if command.rules is not None else wanted
                if wanted is None:
                    outcome = SyncOutcome(False, False, 0.0, NO_RULES, kind=Kind.INTERNAL)
                else:
                    outcome = sync(backend, probe, opts, wanted, known, report=conn.send)
                busy = outcome.changed or command.rules is not None
                synced = outcome.ok
                conn.send(outcome)
            elif isinstance(command, ReadCommand):
                conn.send(read(backend))
            elif isinstance(command, PathCommand):
                conn.send(read_path(opts))
            # Tidy up off the caller's path: once the answer had a moment to reach the caller
            # without this process competing for the CPU, and only if no command is waiting (a
            # sync settles first by itself).
            if conn.poll(TIDY_AFTER):
                continue
            settle(probe, known)
            backend.prepare()  # the next write's restore (or nft), started idle
            if synced:
                backend.synced()
            if busy:
                heap.trim()
    finally:
        backend.close()
