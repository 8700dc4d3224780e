"""The nftables backend's rendering: golden files beside the iptables ones, CIDRs collapsed into
elements that never overlap (and the warnings that says so), the rules in the seed's order, and
the names nft takes. The kernel's round trip is tests/kernel/test_nftables.py's."""

from __future__ import annotations

import ipaddress

import pytest

from masqd.core.cidrs import collapse, covered_warnings
from masqd.core.config import parse_config
from masqd.core.model import Family
from masqd.core.nftrules import (
    BASE_CHAIN,
    MASQ,
    NOMASQ,
    Table,
    desired_table,
    element_key,
    render,
    validate_table_name,
)
from masqd.core.rules import RenderOptions, parse_to_ports
from tests.support.golden import GOLDEN, Case, cases

CASES = cases()
GOLDEN_PAIRS = [(c, f) for c in CASES for f in c.families]


@pytest.mark.parametrize(
    ("case", "family"), GOLDEN_PAIRS, ids=[f"{c.name}-{f.label}" for c, f in GOLDEN_PAIRS]
)
def test_golden_case_renders_exactly_its_nft_file(case: Case, family: Family) -> None:
    """Each tests/golden/<case>.yaml renders, on the nftables backend, to <case>.<family>.nft."""
    expected = case.expected_path(family, "nftables")
    assert expected.exists(), f"missing {expected.name}; run python -m tests.support.golden"
    assert case.rendered(family, "nftables") == expected.read_text()


def test_nft_goldens_have_no_orphans() -> None:
    """Every .nft file belongs to a case and a family it renders."""
    wanted = {c.expected_path(f, "nftables").name for c, f in GOLDEN_PAIRS}
    assert {p.name for p in GOLDEN.glob("*.nft")} == wanted


def table(text: str, family: Family = Family.IPV4, **opts: object) -> Table:
    return desired_table(parse_config(text).config, family, RenderOptions(**opts))  # type: ignore[arg-type]


def elements(t: Table, name: str) -> list[str]:
    return [e.key for s in t.sets if s.name == name for e in s.elements]


def rules(t: Table) -> list[str]:
    (chain,) = [c for c in t.chains if c.name == BASE_CHAIN]
    return list(chain.rules)


# -- collapsing -------------------------------------------------------------------------------


def nets(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


def test_an_entry_inside_another_is_covered_by_it() -> None:
    """Nested CIDRs become one element, the outer one; the inner is mapped to it."""
    collapsed = collapse(nets("10.1.0.0/16", "10.0.0.0/8", "10.1.2.0/24", "192.168.0.0/16"))
    assert [str(e) for e in collapsed.elements] == ["10.0.0.0/8", "192.168.0.0/16"]
    covered = [(str(a), str(b)) for a, b in collapsed.covered]
    assert covered == [("10.1.0.0/16", "10.0.0.0/8"), ("10.1.2.0/24", "10.0.0.0/8")]
    assert [str(c) for c in collapsed.covers(ipaddress.ip_network("10.0.0.0/8"))] == [
        "10.1.0.0/16",
        "10.1.2.0/24",
    ]


def test_adjacent_entries_stay_two_elements() -> None:
    """Two neighbouring /8s are not merged: each is an entry with a counter of its own."""
    collapsed = collapse(nets("11.0.0.0/8", "10.0.0.0/8"))
    assert [str(e) for e in collapsed.elements] == ["10.0.0.0/8", "11.0.0.0/8"]
    assert collapsed.covered == ()


def test_a_zero_length_prefix_covers_everything_of_its_family() -> None:
    collapsed = collapse(nets("10.0.0.0/8", "0.0.0.0/0", "203.0.113.0/24"))
    assert [str(e) for e in collapsed.elements] == ["0.0.0.0/0"]
    assert len(collapsed.covered) == 2


def test_covered_entries_warn_and_duplicates_are_left_to_the_parser() -> None:
    """An entry inside another is a warning; one listed twice is the config parser's warning
    already and is not repeated."""
    collapsed = collapse(nets("10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8"))
    assert [str(e) for e in collapsed.elements] == ["10.0.0.0/8"]
    assert covered_warnings("nonMasqueradeCIDRs", collapsed) == [
        "nonMasqueradeCIDRs: 10.1.0.0/16 lies inside 10.0.0.0/8 and adds nothing"
    ]


def test_collapsing_ten_thousand_entries_keeps_every_disjoint_one() -> None:
    """The sweep is exact at the issue's size: 10,000 disjoint /24s, 10,000 elements."""
    cidrs = [ipaddress.ip_network(f"10.{i >> 8}.{i & 255}.0/24") for i in range(10000)]
    assert len(collapse(reversed(cidrs)).elements) == 10000


# -- the table ----------------------------------------------------------------------------------


def test_rules_come_in_the_seeds_order() -> None:
    """local return, @masq masquerade, link-local return, @nomasq return, catch-all."""
    t = table("masqOutBound: true\nmasqueradeCIDRs: [10.10.10.10/32]\n")
    assert rules(t) == [
        "fib daddr type local return",
        "ip daddr @masq masquerade",
        "ip daddr 169.254.0.0/16 counter return",
        "ip daddr @nomasq return",
        "counter masquerade",
    ]


def test_link_local_and_catch_all_follow_the_config_per_family() -> None:
    text = "masqLinkLocal: true\nmasqOutBound: false\nmasqOutBoundIPv6: true\n"
    assert "ip daddr 169.254.0.0/16 counter return" not in rules(table(text))
    assert not rules(table(text))[-1].endswith("masquerade")
    v6 = rules(table(text, Family.IPV6))
    assert "ip6 daddr fe80::/10 counter return" in v6 and v6[-1] == "counter masquerade"


def test_nested_masquerade_entry_is_an_element_of_masq_inside_a_nomasq_element() -> None:
    """A masqueradeCIDRs entry inside a nonMasqueradeCIDRs range stays an element of masq:
    the @masq rule comes first, so it wins (the seed's specific-addresses scenario)."""
    t = table("masqueradeCIDRs: [10.10.10.10/32]\nnonMasqueradeCIDRs: [10.0.0.0/8]\n")
    assert elements(t, MASQ) == ["10.10.10.10"]
    assert elements(t, NOMASQ) == ["10.0.0.0/8"]
    assert t.warnings == ()


def test_each_family_gets_only_its_entries_with_comments_naming_them() -> None:
    text = "nonMasqueradeCIDRs: [fc00::/7, 10.0.0.0/8, 2001:db8::1/128]\n"
    v4, v6 = table(text), table(text, Family.IPV6)
    assert elements(v4, NOMASQ) == ["10.0.0.0/8"]
    assert elements(v6, NOMASQ) == ["2001:db8::1", "fc00::/7"]
    (nomasq,) = [s for s in v6.sets if s.name == NOMASQ]
    assert [e.comment for e in nomasq.elements] == [
        "nonMasqueradeCIDRs: 2001:db8::1/128",
        "nonMasqueradeCIDRs: fc00::/7",
    ]


def test_covered_entries_are_mapped_and_warned_in_the_table() -> None:
    t = table("nonMasqueradeCIDRs: [10.0.0.0/8, 10.1.0.0/16]\nmasqueradeCIDRs: [10.1.0.0/16]\n")
    assert t.covered == ((NOMASQ, "10.1.0.0/16", "10.0.0.0/8"),)
    (warning,) = t.warnings
    assert warning == "nonMasqueradeCIDRs: 10.1.0.0/16 lies inside 10.0.0.0/8 and adds nothing"


def test_random_fully_and_one_port_range_per_protocol() -> None:
    t = table("masqOutBound: true\n", random_fully=True, to_ports=parse_to_ports("1024-29999"))
    assert rules(t)[-4:] == [
        "meta l4proto tcp counter masquerade to :1024-29999 fully-random",
        "meta l4proto udp counter masquerade to :1024-29999 fully-random",
        "meta l4proto sctp counter masquerade to :1024-29999 fully-random",
        "counter masquerade fully-random",
    ]
    assert "ip daddr @masq masquerade fully-random" in rules(t)


def test_several_port_ranges_are_chosen_by_numgen_over_every_port() -> None:
    """One chain per range, chosen by `numgen random` in proportion to the range's size, so
    every port is equally likely (upstream's chained probabilities, in one draw)."""
    t = table("masqOutBound: true\n", to_ports=parse_to_ports("1024-29999,32768-65535,40000"))
    sizes = [28976, 32768, 1]
    (choice,) = [r for r in rules(t) if "numgen" in r]
    assert choice == (
        "meta l4proto { tcp, udp, sctp } numgen random mod 61745 vmap { 0-28975 : jump "
        "to-ports-0, 28976-61743 : jump to-ports-1, 61744 : jump to-ports-2 }"
    )
    assert sum(sizes) == 61745
    assert [c.name for c in t.chains] == ["to-ports-0", "to-ports-1", "to-ports-2", BASE_CHAIN]
    assert t.chains[2].rules[0] == "meta l4proto tcp counter masquerade to :40000"


def test_render_replaces_the_table_in_one_transaction() -> None:
    """The input declares the table (so the delete is valid when there is none), deletes it,
    and declares it whole: one transaction."""
    text = render(parse_config("").config, Family.IPV6, RenderOptions(table="t1"))
    assert text.startswith("table ip6 t1 {\n}\ndelete table ip6 t1\ntable ip6 t1 {\n")
    assert "\t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n" in text


def test_element_keys_are_as_nft_lists_them() -> None:
    assert element_key(ipaddress.ip_network("10.10.10.10/32")) == "10.10.10.10"
    assert element_key(ipaddress.ip_network("2001:db8::1/128")) == "2001:db8::1"
    assert element_key(ipaddress.ip_network("0.0.0.0/0")) == "0.0.0.0/0"


@pytest.mark.parametrize("name", ["masqd", "masqd-v2", "Edge_1", "a" * 32])
def test_table_name_accepted(name: str) -> None:
    assert validate_table_name(name) == name


@pytest.mark.parametrize("name", ["", "9lives", "has space", "a" * 33, "masquerade", "ip", "x;y"])
def test_table_name_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid nftables table name"):
        validate_table_name(name)


def test_an_element_from_a_dns_name_names_it_in_its_comment() -> None:
    """A name's addresses become elements whose comment names the config entry: the name."""
    config = parse_config("nonMasqueradeCIDRs: [10.0.0.0/8, 192.0.2.5/32]\n").config
    names = {ipaddress.ip_network("192.0.2.5/32"): "metadata.example.com"}
    t = desired_table(config, Family.IPV4, RenderOptions(), names)
    (nomasq,) = [s for s in t.sets if s.name == NOMASQ]
    assert dict(zip(nomasq.keys, nomasq.comments, strict=True)) == {
        "10.0.0.0/8": "nonMasqueradeCIDRs: 10.0.0.0/8",
        "192.0.2.5": "nonMasqueradeCIDRs: metadata.example.com",
    }
