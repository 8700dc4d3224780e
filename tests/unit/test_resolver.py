"""masqd.engine.resolver: names looked up off the caller's thread, one hanging look-up delaying
no other, a change reported once, names no longer in the config forgotten."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable

import pytest

from masqd.core.entries import HostName
from masqd.core.names import Lookup
from masqd.engine.resolver import Resolver
from tests.support.daemon import wait_until

V4 = ipaddress.IPv4Address


class FakeDns:
    """Answers per name; a name in `hanging` blocks its look-up until released."""

    def __init__(self) -> None:
        self.records: dict[str, Lookup] = {}
        self.hanging: dict[str, threading.Event] = {}
        self.asked: list[str] = []

    def lookup(self, name: str) -> Lookup:
        self.asked.append(name)
        gate = self.hanging.get(name)
        if gate is not None:
            gate.wait(30)
        return self.records.get(name, Lookup((), (), error="no such name (NXDOMAIN)"))


@pytest.fixture
def dns_and_resolver() -> Callable[..., tuple[FakeDns, Resolver, list[int]]]:
    made: list[Resolver] = []

    def make() -> tuple[FakeDns, Resolver, list[int]]:
        fake = FakeDns()
        changes: list[int] = []
        resolver = Resolver(lambda: changes.append(1), lookup=fake.lookup)
        made.append(resolver)
        return fake, resolver, changes

    yield make
    for r in made:
        r.stop()


def names(*texts: str) -> list[HostName]:
    return [HostName(t) for t in texts]


def test_track_returns_at_once_and_the_answer_arrives_with_a_change(
    dns_and_resolver: Callable[..., tuple[FakeDns, Resolver, list[int]]],
) -> None:
    fake, resolver, changes = dns_and_resolver()
    fake.records["db.example.com"] = Lookup((V4("192.0.2.3"),), (), ttl=300)
    gate = fake.hanging["db.example.com"] = threading.Event()
    start = time.monotonic()
    resolver.track(names("db.example.com"), 60.0)
    assert time.monotonic() - start < 0.5  # the look-up hangs, the caller does not
    assert not resolver.answers()["db.example.com"].resolved
    gate.set()
    wait_until(lambda: resolver.answers()["db.example.com"].resolved, 5)
    assert [str(n) for n in resolver.answers()["db.example.com"].addresses] == ["192.0.2.3/32"]
    wait_until(lambda: changes == [1], 5)


def test_a_hanging_name_delays_no_other_name(
    dns_and_resolver: Callable[..., tuple[FakeDns, Resolver, list[int]]],
) -> None:
    fake, resolver, _ = dns_and_resolver()
    fake.hanging["slow.example.com"] = threading.Event()
    fake.records["fast.example.com"] = Lookup((V4("192.0.2.4"),), ())
    resolver.track(names("slow.example.com", "fast.example.com"), 60.0)
    wait_until(lambda: resolver.answers()["fast.example.com"].resolved, 2)
    assert not resolver.answers()["slow.example.com"].resolved
    fake.hanging["slow.example.com"].set()


def test_the_same_answer_again_is_no_change_and_a_failure_keeps_it(
    dns_and_resolver: Callable[..., tuple[FakeDns, Resolver, list[int]]],
) -> None:
    fake, resolver, changes = dns_and_resolver()
    fake.records["db.example.com"] = Lookup((V4("192.0.2.3"),), (), ttl=0)  # again in 1 s
    resolver.track(names("db.example.com"), 60.0)
    wait_until(lambda: fake.asked.count("db.example.com") >= 2, 5)
    assert changes == [1]
    fake.records["db.example.com"] = Lookup(None, None, error="no answer in time")
    wait_until(lambda: resolver.answers()["db.example.com"].error, 5)
    answer = resolver.answers()["db.example.com"]
    assert [str(n) for n in answer.addresses] == ["192.0.2.3/32"] and changes == [1]


def test_a_name_dropped_from_the_config_is_forgotten(
    dns_and_resolver: Callable[..., tuple[FakeDns, Resolver, list[int]]],
) -> None:
    fake, resolver, _ = dns_and_resolver()
    resolver.track(names("a.example.com", "b.example.com"), 60.0)
    wait_until(lambda: len(fake.asked) == 2, 5)
    resolver.track(names("b.example.com"), 60.0)
    assert list(resolver.answers()) == ["b.example.com"]
