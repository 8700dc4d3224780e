"""masqd.core.health: one verdict for /healthz and the health service. Unhealthy at once when a
family is known to be failing; a held lock and a missing config only past the timeout; a
bad file with a good one in force, or a sync on its way, is fine."""

from __future__ import annotations

import pytest

from masqd.core.errors import Kind
from masqd.core.health import assess
from masqd.core.model import Family
from masqd.core.status import FamilyStatus, Fault, Trouble

NOW = 1000.0
TIMEOUT = 60.0


def family(**changes: object) -> FamilyStatus:
    fields: dict[str, object] = dict(
        family=Family.IPV4, pid=42, state="idle", restarts=0, in_sync=True, last_result=None
    )
    fields.update(changes)
    return FamilyStatus(**fields)  # type: ignore[arg-type]


def test_in_sync_is_healthy_and_serving() -> None:
    verdict = assess(family(), NOW, TIMEOUT)
    assert (verdict.healthy, verdict.serving, verdict.reason) == (True, True, "in sync")


def test_a_sync_on_its_way_is_healthy() -> None:
    """Not verified yet (a legacy write read back a moment later), nothing known wrong."""
    verdict = assess(family(in_sync=False, state="syncing", pending_since=NOW - 2), NOW, TIMEOUT)
    assert verdict.healthy and verdict.serving
    assert verdict.reason == "syncing: not verified in sync yet"


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (Kind.HUNG, "its worker hung"),
        (Kind.UNVERIFIED, "a write did not take"),
        (Kind.REJECTED, "the rules were refused"),
        (Kind.TIMEOUT, "iptables does not finish"),
        (Kind.MISSING, "a tool is missing"),
        (Kind.INTERNAL, "failing"),
    ],
)
def test_a_known_failure_is_unhealthy_at_once(kind: Kind, words: str) -> None:
    trouble = Trouble(kind, "what happened", since=NOW - 0.1)
    verdict = assess(family(in_sync=False, trouble=trouble, pending_since=NOW), NOW, TIMEOUT)
    assert not verdict.healthy and not verdict.serving
    assert verdict.reason == f"{words}: what happened"


def test_a_held_lock_is_reported_and_healthy_within_the_timeout() -> None:
    trouble = Trouble(Kind.LOCK, "Another app is holding the xtables lock", since=NOW - 20)
    status = family(in_sync=False, trouble=trouble, pending_since=NOW - 20)
    verdict = assess(status, NOW, TIMEOUT)
    assert verdict.healthy and verdict.serving
    assert verdict.reason == (
        "waiting for the xtables lock, held by another process for 20s (within 60s)"
    )
    late = assess(status, NOW + 41, TIMEOUT)
    assert not late.healthy and "past the 60s health timeout" in late.reason


def test_no_config_yet_is_healthy_but_not_serving_until_the_timeout() -> None:
    """masqd is fine, but writes nothing: /healthz passes, masqctl health does not."""
    trouble = Trouble(Kind.NO_CONFIG, "no valid config loaded yet", since=NOW - 5)
    verdict = assess(family(in_sync=False, trouble=trouble, pending_since=NOW - 5), NOW, TIMEOUT)
    assert verdict.healthy and not verdict.serving


def test_a_request_pending_past_the_timeout_is_unhealthy() -> None:
    verdict = assess(family(in_sync=False, pending_since=NOW - 61), NOW, TIMEOUT)
    assert not verdict.healthy
    assert verdict.reason == "a requested sync has waited 61s, more than 60s"


def test_no_worker_is_unhealthy_saying_why() -> None:
    trouble = Trouble(Kind.WORKER_GONE, "cannot start a worker: [Errno 24]", since=NOW)
    verdict = assess(family(pid=0, state="backoff", trouble=trouble), NOW, TIMEOUT)
    assert not verdict.healthy
    assert verdict.reason == (
        "its worker is not running (backoff): cannot start a worker: [Errno 24]"
    )


def test_a_failing_runner_is_unhealthy_and_a_recovered_one_is_not() -> None:
    failing = Fault("the ipv4 runner", "OSError: [Errno 24]", at=0.0, count=3, ongoing=True)
    verdict = assess(family(fault=failing), NOW, TIMEOUT)
    assert not verdict.healthy
    assert verdict.reason == "its runner fails: OSError: [Errno 24] (3 times)"
    recovered = Fault("the ipv4 runner", "OSError", at=0.0, count=3, ongoing=False)
    assert assess(family(fault=recovered), NOW, TIMEOUT).healthy
