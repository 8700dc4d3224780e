"""A worker process: the only writer of one family's chain.

It runs in a process of its own (started with `spawn`, so it carries no gRPC state) and answers
the supervisor's commands over a pipe: sync to these rules, or read the live chain. It imports
only what a sync needs.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from masqd import nftgen
from masqd.iptables import Backend, IptablesError
from masqd.livestate import LiveChain, parse_save
from masqd.rules import Family, jump_rule, render_restore


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
    """Make our chain hold exactly these rules (specs as iptables-save prints them)."""

    rules: tuple[str, ...]
    full: bool = False
    """Read the live state even where the worker's memory says nothing changed."""


@dataclass(frozen=True)
class ReadCommand:
    """Report the live chain with counters."""


@dataclass(frozen=True)
class SyncOutcome:
    ok: bool
    changed: bool
    duration: float
    error: str = ""
    in_sync: bool = False


@dataclass(frozen=True)
class ReadOutcome:
    live: LiveChain | None
    error: str = ""


@dataclass
class Known:
    """What this worker last verified or wrote; lets a sync skip work that cannot change its
    outcome. Forgotten after any failure, so the next sync reads everything again."""

    rules: tuple[str, ...] | None = None
    """The chain as last verified or written by us."""
    jump: bool = False
    """Our jump was in POSTROUTING then."""
    generation: int | None = None
    """nft mode: the ruleset generation at the last read that matched."""


def sync(
    backend: Backend,
    opts: WorkerOptions,
    rules: list[str],
    known: Known | None = None,
    *,
    full: bool = False,
) -> SyncOutcome:
    """Compare the live chain with the rules and rewrite it only when they differ.

    Two shortcuts, each safe because our restore replaces the whole chain:
    - nft mode, rules as last verified, and the ruleset generation unchanged since: nothing in
      the kernel changed, so there is nothing to read (one netlink round trip, no exec);
    - rules different from what we last verified or wrote: the live chain differs from them
      too, so reading it could not change the decision to write.
    """
    start = time.monotonic()
    known = known if known is not None else Known()
    wanted = tuple(rules)
    jump = jump_rule(opts.chain)
    nft = opts.mode == "nft"
    changed = False

    unchanged_since_verified = (
        not full and nft and known.generation is not None and known.rules == wanted
    )
    if unchanged_since_verified and nftgen.generation() == known.generation:
        return SyncOutcome(True, False, time.monotonic() - start, in_sync=True)

    def attempt() -> None:
        nonlocal changed
        if not full and known.rules is not None and known.rules != wanted:
            text = render_restore(rules, opts.chain, with_jump=not known.jump)
        else:
            # The generation before the read: a change during the read shows up next time.
            generation = nftgen.generation() if nft else None
            live = parse_save(backend.save_nat(timeout=opts.iptables_timeout), opts.chain)
            if live.matches(rules, jump):
                known.rules, known.jump, known.generation = wanted, True, generation
                return
            text = render_restore(rules, opts.chain, with_jump=jump not in live.jump_rules)
        known.rules = None  # unknown until the restore succeeds
        backend.restore(text, wait=opts.lock_wait, timeout=opts.iptables_timeout)
        # Written, not verified: the next sync with the same rules reads the chain back.
        known.rules, known.jump, known.generation = wanted, True, None
        changed = True

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, IptablesError) and e.retryable),
        wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.5),
        stop=stop_after_delay(opts.retry_deadline),
        reraise=True,
    )
    try:
        retrying(attempt)
    except IptablesError as e:
        known.rules, known.generation = None, None
        return SyncOutcome(False, changed, time.monotonic() - start, str(e))
    return SyncOutcome(True, changed, time.monotonic() - start, in_sync=True)


def read(backend: Backend, opts: WorkerOptions) -> ReadOutcome:
    try:
        text = backend.save_nat(counters=True, timeout=opts.iptables_timeout)
    except IptablesError as e:
        return ReadOutcome(None, str(e))
    return ReadOutcome(parse_save(text, opts.chain))


def run(opts: WorkerOptions, conn: Connection) -> None:
    """The worker's main loop: one command at a time until the pipe closes or says stop."""
    # Ctrl-C in a terminal reaches the whole process group; the supervisor decides shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the supervisor's handlers; SIGTERM must simply end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    backend = Backend(opts.family, opts.mode)
    known = Known()
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            return
        if command is None:
            return
        if isinstance(command, SyncCommand):
            conn.send(sync(backend, opts, list(command.rules), known, full=command.full))
        elif isinstance(command, ReadCommand):
            conn.send(read(backend, opts))
