"""Whether a family is healthy, decided from its status snapshot alone. Pure.

One verdict serves `/healthz`, the gRPC health service and so `masqctl health` (the
DaemonSet's probe). A family is unhealthy as soon as it is *known* to be out of sync for a
reason waiting will not cure: a hung worker (killed by its deadline), a failing one (a write
refused, a tool that times out or is missing, a write that did not take), no worker that can
be started, a runner loop that fails. Two troubles are only reported while they last less than
the health timeout, because a restart would not help them: the xtables lock held by someone else
(retried), and no valid config loaded yet. Whatever it is, a requested sync not applied within
the timeout is unhealthy too.

`serving` is stricter than `healthy` in one way only: with no valid config ever loaded no rules
are written, so the family is not serving (masqctl health exits 1) although masqd itself is
fine (/healthz passes until the timeout).
"""

from __future__ import annotations

from dataclasses import dataclass

from masqd.core.errors import Kind
from masqd.core.status import FamilyStatus

WAITING_KINDS = frozenset((Kind.LOCK, Kind.NO_CONFIG))
"""Troubles that are only reported until the health timeout: time, not a restart, ends them."""


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    """What /healthz answers: masqd is doing its job for this family, or will without help."""
    serving: bool
    """What the gRPC health service answers: healthy, and writing the rules."""
    reason: str
    """In an operator's words: why not, or what it is doing."""


def assess(f: FamilyStatus, now: float, timeout: float) -> Verdict:
    """The family's verdict at monotonic time `now`, with `timeout` the health timeout."""
    pending = 0.0 if f.pending_since is None else max(0.0, now - f.pending_since)
    late = pending > timeout
    if f.fault is not None and f.fault.ongoing:
        return _bad(f"its runner fails: {f.fault.error} ({f.fault.count} times)")
    trouble = f.trouble
    if f.state == "stopped":
        return _bad("stopped")
    if f.pid == 0:
        why = f": {trouble.message}" if trouble is not None else ""
        return _bad(f"its worker is not running ({f.state}){why}")
    if trouble is not None:
        lasted = max(0.0, now - trouble.since)
        if trouble.kind not in WAITING_KINDS:
            return _bad(f"{_words(trouble.kind)}: {trouble.message}")
        what = (
            "waiting for the xtables lock, held by another process"
            if trouble.kind == Kind.LOCK
            else "no valid config loaded yet"
        )
        text = f"{what} for {lasted:.0f}s"
        if late:
            return _bad(f"{text}, past the {timeout:g}s health timeout: {trouble.message}")
        return Verdict(True, trouble.kind != Kind.NO_CONFIG, f"{text} (within {timeout:g}s)")
    if late:
        return _bad(f"a requested sync has waited {pending:.0f}s, more than {timeout:g}s")
    if f.in_sync:
        return Verdict(True, True, "in sync")
    return Verdict(True, True, f"{f.state}: not verified in sync yet")


def _bad(reason: str) -> Verdict:
    return Verdict(False, False, reason)


def _words(kind: Kind) -> str:
    return {
        Kind.HUNG: "its worker hung",
        Kind.UNVERIFIED: "a write did not take",
        Kind.REJECTED: "the rules were refused",
        Kind.TIMEOUT: "iptables does not finish",
        Kind.MISSING: "a tool is missing",
        Kind.WORKER_GONE: "its worker died",
    }.get(kind, "failing")
