"""sourceCIDRs, snatToSource/snatToSourceIPv6 and --jump-position: how they are read (errors
naming key, entry and reason), and what they render to on both backends (the golden files hold
the whole renderings; these tests name the behaviour behind them)."""

from __future__ import annotations

import argparse
import ipaddress

import pytest

from masqd.core import flags, nftrules
from masqd.core.config import ConfigError, ParseOptions, config_to_dict, parse_config
from masqd.core.livestate import parse_save
from masqd.core.model import Family
from masqd.core.nftlive import as_live, counted
from masqd.core.rules import RenderOptions, desired_rules, jump_rule, render_restore

NO_IPV6 = ParseOptions(enable_ipv6=False)


def error_of(text: str, options: ParseOptions | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, options)
    return str(info.value)


def rules(text: str, family: Family = Family.IPV4, **opts: object) -> list[str]:
    return desired_rules(parse_config(text).config, family, RenderOptions(**opts))  # type: ignore[arg-type]


def table(text: str, family: Family = Family.IPV4, **opts: object) -> nftrules.Table:
    return nftrules.desired_table(parse_config(text).config, family, RenderOptions(**opts))  # type: ignore[arg-type]


def base_rules(text: str, family: Family = Family.IPV4, **opts: object) -> tuple[str, ...]:
    return next(c for c in table(text, family, **opts).chains if c.declaration).rules


# -- reading the keys ------------------------------------------------------------------------


def test_new_keys_default_to_todays_behaviour() -> None:
    """Absent, sourceCIDRs considers every source and no snatToSource is set."""
    config = parse_config("masqOutBound: true\n").config
    assert config.source_cidrs == ()
    assert config.snat_to_source is None and config.snat_to_source_ipv6 is None


def test_source_cidrs_mix_families_in_file_order() -> None:
    config = parse_config("sourceCIDRs: [10.244.0.0/16, fd00:244::/32, 10.96.0.0/12]\n").config
    assert [str(c) for c in config.source_cidrs] == [
        "10.244.0.0/16",
        "fd00:244::/32",
        "10.96.0.0/12",
    ]


def test_snat_addresses_are_read_per_family() -> None:
    config = parse_config("snatToSource: 192.0.2.100\nsnatToSourceIPv6: 2001:db8::7\n").config
    assert config.snat_to(4) == ipaddress.ip_address("192.0.2.100")
    assert config.snat_to(6) == ipaddress.ip_address("2001:db8::7")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sourceCIDRs: 10.244.0.0/16", "sourceCIDRs: must be a list of CIDRs, not a string"),
        ("sourceCIDRs: [10.244.0.1/16]", "sourceCIDRs[0] '10.244.0.1/16': host bits are set"),
        ("sourceCIDRs: [pods]", "sourceCIDRs[0] 'pods': not a CIDR"),
        ("sourceCIDRs: [10.244.0.0/16, 7]", "sourceCIDRs[1]: 7 must be a CIDR string"),
        ("sourceCIDRs:", "sourceCIDRs: has no value; remove the key to use its default"),
        ("snatToSource: 192.0.2.100/32", "snatToSource '192.0.2.100/32': an address, not a CIDR"),
        ("snatToSource: node", "snatToSource 'node': not an IP address"),
        ("snatToSource: 2001:db8::1", "an IPv6 address; it belongs in snatToSourceIPv6"),
        ("snatToSourceIPv6: 192.0.2.1", "an IPv4 address; it belongs in snatToSource"),
        ("snatToSource: 0.0.0.0", "snatToSource '0.0.0.0': the unspecified address"),
        ("snatToSource: 127.0.0.1", "snatToSource '127.0.0.1': a loopback address"),
        ("snatToSourceIPv6: ff02::1", "snatToSourceIPv6 'ff02::1': a multicast address"),
        ("snatToSource: 255.255.255.255", "the broadcast address"),
        ("snatToSource: [192.0.2.1]", "snatToSource: must be an IPv4 address string, not a list"),
        ("snatToSource: fe80::1%eth0", "snatToSource 'fe80::1%eth0': a scoped address"),
        ("snatToSourceIPv6:", "snatToSourceIPv6: has no value"),
    ],
)
def test_bad_values_are_errors_naming_key_entry_and_reason(text: str, message: str) -> None:
    assert message in error_of(text)


def test_ipv6_values_with_ipv6_disabled_are_errors() -> None:
    """As an IPv6 CIDR is with --enable-ipv6=false."""
    assert "IPv6 is disabled" in error_of("snatToSourceIPv6: 2001:db8::1\n", NO_IPV6)
    assert "IPv6 is disabled" in error_of("sourceCIDRs: [fd00::/8]\n", NO_IPV6)


def test_source_cidrs_without_a_family_warn_that_it_masquerades_nothing() -> None:
    """A family left out of sourceCIDRs is masqueraded by nobody: likely a forgotten pod CIDR."""
    loaded = parse_config("sourceCIDRs: [10.244.0.0/16]\n")
    assert loaded.warnings == (
        "sourceCIDRs: no IPv6 entry, so masqd masquerades no IPv6 connection (add the IPv6 "
        "pod CIDR, or ::/0 for every source)",
    )
    assert parse_config("sourceCIDRs: [10.244.0.0/16]\n", NO_IPV6).warnings == ()


def test_config_to_dict_round_trips_the_new_keys() -> None:
    text = "sourceCIDRs: [10.244.0.0/16, fd00::/8]\nsnatToSource: 192.0.2.9\n"
    spelled = config_to_dict(parse_config(text).config)
    assert spelled["sourceCIDRs"] == ["10.244.0.0/16", "fd00::/8"]
    assert spelled["snatToSource"] == "192.0.2.9"
    assert "snatToSourceIPv6" not in spelled  # not set, so not spelled
    import yaml

    assert parse_config(yaml.safe_dump(spelled)).config == parse_config(text).config


# -- sourceCIDRs -----------------------------------------------------------------------------


def test_source_cidrs_put_every_source_on_every_rule() -> None:
    """Each decision is made once per (collapsed) source; a connection from elsewhere matches
    no rule of ours and leaves the chain untouched."""
    text = (
        "sourceCIDRs: [10.244.0.0/16, 10.244.1.0/24, 10.96.0.0/12]\n"
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqOutBound: true\n"
    )
    sources = [r.split(" -d ")[0].split(" -m ")[0].split("-s ")[1] for r in rules(text)]
    assert sources == ["10.96.0.0/12", "10.244.0.0/16"] * 3  # link-local, 10/8, the catch-all
    assert parse_config(text).warnings == (
        "sourceCIDRs: no IPv6 entry, so masqd masquerades no IPv6 connection (add the IPv6 "
        "pod CIDR, or ::/0 for every source)",
    )


def test_source_cidrs_of_the_other_family_only_leave_this_chain_empty() -> None:
    text = "sourceCIDRs: [10.244.0.0/16]\nmasqOutBoundIPv6: true\n"
    assert rules(text, Family.IPV6) == []
    assert "ip6 saddr != @src return" in base_rules(text, Family.IPV6)  # an empty set: all
    src = next(s for s in table(text, Family.IPV6).sets if s.name == "src")
    assert src.elements == ()


def test_every_source_is_the_same_as_none() -> None:
    """0.0.0.0/0 needs no -s (iptables-save leaves it out, as it does -d 0.0.0.0/0)."""
    everywhere = rules("sourceCIDRs: [0.0.0.0/0, '::/0']\nmasqOutBound: true\n")
    assert everywhere == rules("masqOutBound: true\n")


def test_source_cidrs_are_a_set_returning_early_on_nftables() -> None:
    text = "sourceCIDRs: [10.244.0.0/16, 10.244.1.0/24]\nmasqOutBound: true\n"
    t = table(text)
    assert base_rules(text)[:2] == ("fib daddr type local return", "ip saddr != @src return")
    src = next(s for s in t.sets if s.name == "src")
    assert [e.comment for e in src.elements] == ["sourceCIDRs: 10.244.0.0/16"]
    assert t.warnings == ("sourceCIDRs: 10.244.1.0/24 lies inside 10.244.0.0/16 and adds nothing",)


# -- snatToSource ----------------------------------------------------------------------------


def test_snat_to_source_replaces_every_masquerade() -> None:
    text = "snatToSource: 192.0.2.100\nmasqueradeCIDRs: [10.10.10.10/32]\nmasqOutBound: true\n"
    targets = [r.split(" -j ")[1] for r in rules(text)]
    assert targets == ["SNAT --to-source 192.0.2.100", "RETURN", "RETURN", "RETURN", "RETURN",
                       "SNAT --to-source 192.0.2.100"]  # fmt: skip
    assert "ip daddr @masq snat to 192.0.2.100" in base_rules(text)
    assert base_rules(text)[-1] == "counter snat to 192.0.2.100"


def test_snat_takes_to_ports_and_random_fully_as_masquerade_does() -> None:
    text = "snatToSourceIPv6: 2001:db8::7\nmasqOutBoundIPv6: true\n"
    ported = rules(text, Family.IPV6, to_ports=((1024, 2047),), random_fully=True)
    assert ported[-4].endswith("-j SNAT --to-source [2001:db8::7]:1024-2047 --random-fully")
    assert ported[-1].endswith("-j SNAT --to-source 2001:db8::7 --random-fully")
    nft = base_rules(text, Family.IPV6, to_ports=((1024, 2047),), random_fully=True)
    assert "meta l4proto tcp counter snat to [2001:db8::7]:1024-2047 fully-random" in nft
    assert nft[-1] == "counter snat to 2001:db8::7 fully-random"


def test_snat_is_per_family() -> None:
    """snatToSource changes only IPv4's rules; IPv6 still masquerades."""
    text = "snatToSource: 192.0.2.100\nmasqOutBoundIPv6: true\n"
    assert rules(text, Family.IPV6)[-1].endswith("-j MASQUERADE")


def test_snat_counters_count_as_snat() -> None:
    """masqctl rules and the metrics say SNAT for what is SNATed, RETURN for what is kept."""
    text = "snatToSource: 192.0.2.100\nmasqueradeCIDRs: [10.10.10.10/32]\nmasqOutBound: true\n"
    targets = {(c.target, c.destination) for c in counted(as_live(table(text)))}
    assert ("SNAT", "10.10.10.10") in targets
    assert ("SNAT", "") in targets
    assert ("RETURN", "169.254.0.0/16") in targets
    first = {c.target for c in counted(as_live(table(text, jump_position="first")))}
    assert first == {"SNAT", "RETURN"}


# -- --jump-position -------------------------------------------------------------------------

FIRST_TEXT = "masqueradeCIDRs: [10.10.10.10/32]\nnonMasqueradeCIDRs: [10.0.0.0/8]\n"


def test_first_makes_kept_addresses_final_and_leaves_kube_proxys_marks_to_it() -> None:
    """ACCEPT instead of RETURN: no rule after our jump masquerades what we keep. kube-proxy's
    marked connections (NodePort, hairpin) return to its rules, which must masquerade them."""
    first = rules(FIRST_TEXT, jump_position="first")
    append = rules(FIRST_TEXT)
    assert first[0] == (
        "-A IP-MASQ-AGENT -m mark --mark 0x4000/0x4000 -m comment --comment "
        '"ip-masq-agent: connections kube-proxy marked for masquerade are left to it" -j RETURN'
    )
    assert first[1:] == [r.replace("-j RETURN", "-j ACCEPT") for r in append]


def test_first_on_nftables_runs_before_srcnat_and_binds_kept_connections() -> None:
    """A `return` would leave the connection to the nat chains after ours; `snat to ip saddr`
    binds it to its own address, and the kernel runs no nat chain after a binding."""
    t = table(FIRST_TEXT, jump_position="first")
    chain = next(c for c in t.chains if c.declaration)
    assert chain.declaration == "type nat hook postrouting priority srcnat - 10; policy accept;"
    assert chain.rules == (
        "fib daddr type local return",
        "meta mark & 0x00004000 == 0x00004000 return",
        "ip daddr @masq masquerade",
        "ip daddr 169.254.0.0/16 counter snat to ip saddr",
        "ip daddr @nomasq snat to ip saddr",
    )
    ipv6 = base_rules(FIRST_TEXT, Family.IPV6, jump_position="first")
    assert ipv6[-2:] == ("ip6 daddr @nomasq snat to ip6 saddr", "counter masquerade")


def test_masquerade_bit_names_kube_proxys_mark() -> None:
    first = rules(FIRST_TEXT, jump_position="first", masquerade_bit=0)
    assert "-m mark --mark 0x1/0x1 " in first[0]
    nft = base_rules(FIRST_TEXT, jump_position="first", masquerade_bit=31)
    assert "meta mark & 0x80000000 == 0x80000000 return" in nft


def test_first_jump_is_inserted_and_a_misplaced_one_moved_in_one_restore() -> None:
    jump = jump_rule("IP-MASQ-AGENT")
    text = render_restore([], "IP-MASQ-AGENT", first=True, moved=2)
    lines = text.splitlines()
    assert lines[2:5] == ["-D" + jump[2:], "-D" + jump[2:], "-I POSTROUTING 1" + jump[14:]]
    assert render_restore([], "IP-MASQ-AGENT").splitlines()[2] == jump


def test_a_jump_not_first_is_not_in_place_when_first_is_asked() -> None:
    jump = jump_rule("IP-MASQ-AGENT")
    kube = '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'
    after = parse_save(f"*nat\n:IP-MASQ-AGENT - [0:0]\n{kube}\n{jump}\nCOMMIT\n", "IP-MASQ-AGENT")
    before = parse_save(f"*nat\n:IP-MASQ-AGENT - [0:0]\n{jump}\n{kube}\nCOMMIT\n", "IP-MASQ-AGENT")
    assert after.matches([], jump) and not after.matches([], jump, first=True)
    assert before.matches([], jump, first=True)


@pytest.mark.parametrize(
    ("offset", "spelled"),
    [(10, "srcnat + 10"), (-10, "srcnat - 10"), (1, "srcnat + 1"), (30, "130"),
     (-50, "security"), (-101, "filter - 1"), (-250, "mangle"), (-299, "-199")],
)  # fmt: skip
def test_priorities_are_spelled_as_nft_lists_them(offset: int, spelled: str) -> None:
    """(Each checked against nft 1.0.6; the golden round trip checks those in use.)"""
    assert nftrules.priority_text(100 + offset) == spelled
    assert nftrules.priority_value(spelled) == 100 + offset


def parse_flags(*argv: str) -> RenderOptions:
    parser = argparse.ArgumentParser(exit_on_error=False)
    flags.add_render_flags(parser)
    return flags.render_options(parser.parse_args(list(argv)))


def test_nft_priority_follows_the_jump_position_unless_given() -> None:
    assert parse_flags().priority_offset == 10
    assert parse_flags("--jump-position", "first").priority_offset == -10
    assert parse_flags("--jump-position", "first", "--nft-priority", "-30").priority_offset == -30
    assert parse_flags("--nft-priority", "srcnat + 5").priority_offset == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nft-priority", "0"], "exactly srcnat, where its order"),
        (["--nft-priority", "-300"], "out of range"),
        (["--nft-priority", "early"], "not an offset from srcnat"),
        (["--kube-proxy-masquerade-bit", "32"], "not a bit of a 32-bit mark"),
        (["--jump-position", "last"], "invalid choice"),
    ],
)
def test_bad_position_flags_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(argparse.ArgumentError, match=message):
        parse_flags(*argv)
