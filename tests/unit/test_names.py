"""masqd.core.names: the last good answer kept, min(TTL, interval), names expanded in place."""

from __future__ import annotations

import ipaddress

from masqd.core.config import parse_config
from masqd.core.model import Family
from masqd.core.names import Answer, Lookup, expand, refresh_in, settle
from masqd.core.rules import RenderOptions, desired_rules

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def nets(*texts: str) -> tuple[object, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def test_a_good_answer_holds_all_addresses_sorted_as_host_networks() -> None:
    lookup = Lookup((V4("192.0.2.9"), V4("192.0.2.3")), (V6("2001:db8::1"),), ttl=30)
    answer = settle(Answer("db.example.com"), lookup, now=100.0)
    assert answer.addresses == nets("192.0.2.3/32", "192.0.2.9/32", "2001:db8::1/128")
    assert answer.answered_at == 100.0 and answer.ttl == 30 and not answer.error


def test_a_failed_lookup_keeps_the_last_good_answer_and_says_why() -> None:
    good = settle(Answer("db.example.com"), Lookup((V4("192.0.2.3"),), ()), now=100.0)
    failed = settle(good, Lookup(None, None, error="no answer in time"), now=160.0)
    assert failed.addresses == good.addresses and failed.answered_at == 100.0
    assert failed.error == "no answer in time" and failed.error_at == 160.0
    nx = settle(good, Lookup((), (), error="no such name (NXDOMAIN)"), now=170.0)
    assert nx.addresses == good.addresses and "NXDOMAIN" in nx.error


def test_a_family_whose_query_failed_keeps_its_addresses() -> None:
    good = settle(Answer("n.example"), Lookup((V4("192.0.2.3"),), (V6("2001:db8::3"),)), 1.0)
    half = settle(good, Lookup((V4("192.0.2.4"),), None, error="AAAA: timeout"), 2.0)
    assert half.addresses == nets("192.0.2.4/32", "2001:db8::3/128")


def test_never_resolved_is_not_resolved() -> None:
    answer = settle(Answer("n.example"), Lookup(None, None, error="timeout"), 1.0)
    assert not answer.resolved and answer.addresses == ()


def test_refresh_after_min_of_ttl_and_interval_retry_sooner_after_a_failure() -> None:
    good = Answer("n.example", nets("192.0.2.3/32"), 1.0, ttl=30)  # type: ignore[arg-type]
    assert refresh_in(good, 60.0) == 30
    assert refresh_in(good, 10.0) == 10
    assert refresh_in(Answer("n.example", (), 1.0, ttl=0), 60.0) == 1.0
    assert refresh_in(Answer("n.example", error="x"), 60.0) == 5.0
    assert refresh_in(Answer("n.example", error="x"), 2.0) == 2.0


def test_expand_puts_a_names_addresses_where_it_stands_and_skips_repeats() -> None:
    config = parse_config(
        "masqueradeCIDRs: [192.0.2.3/32, db.example.com, gone.example.com, 198.51.100.1/32]\n"
        "nonMasqueradeCIDRs: [10.0.0.0/8, db.example.com]\n"
    ).config
    answers = {
        "db.example.com": Answer(
            "db.example.com",
            nets("192.0.2.3/32", "192.0.2.4/32", "2001:db8::4/128"),  # type: ignore[arg-type]
            1.0,
        ),
        "gone.example.com": Answer("gone.example.com", error="NXDOMAIN"),
    }
    expanded = expand(config, answers)
    assert expanded.masquerade_cidrs == nets(
        "192.0.2.3/32", "192.0.2.4/32", "2001:db8::4/128", "198.51.100.1/32"
    )
    assert expanded.non_masquerade_cidrs == nets(
        "10.0.0.0/8", "192.0.2.3/32", "192.0.2.4/32", "2001:db8::4/128"
    )
    v6 = desired_rules(expanded, Family.IPV6, RenderOptions())
    assert any("-d 2001:db8::4/128" in r and "MASQUERADE" in r for r in v6)


def test_a_name_still_in_the_config_renders_no_rule() -> None:
    config = parse_config("masqueradeCIDRs: [db.example.com]\n").config
    assert not any(
        "-j MASQUERADE" in r for r in desired_rules(config, Family.IPV4, RenderOptions())
    )
