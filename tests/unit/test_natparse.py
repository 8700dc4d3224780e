"""Reading the nat path out of what the tools print (iptables-save, nft list as nft 1.0.6 lists
it), and walking it: what is read as a match masqd evaluates, what stays unknown, verdicts,
jumps and gotos, marks, sets, priorities, families."""

from __future__ import annotations

import ipaddress

from masqd.core import natparse
from masqd.core.model import Family
from masqd.core.natpath import (
    DADDR,
    GOTO,
    JUMP,
    KEEP,
    LOCAL,
    MARK,
    MASQUERADE,
    NONE,
    OTHER,
    RETURN,
    SADDR,
    SNAT,
    UNKNOWN,
    NatPath,
    Packet,
    walk,
)


def packet(destination: str, source: str = "10.244.1.5", mark: int | None = 0) -> Packet:
    return Packet(ipaddress.ip_address(destination), ipaddress.ip_address(source), mark)


# -- iptables ------------------------------------------------------------------------------


def test_an_iptables_rule_reads_addresses_negations_and_the_rest_as_text() -> None:
    rule = natparse.iptables_rule(
        '-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "a -d b" '
        "! -o docker0 -m addrtype ! --dst-type LOCAL -j MASQUERADE --random-fully"
    )
    fields = [(m.field, m.negated, m.text) for m in rule.matches]
    assert fields == [
        (SADDR, False, "-s 10.244.0.0/16"),
        (DADDR, True, "! -d 224.0.0.0/4"),
        (OTHER, False, "! -o docker0"),
        (LOCAL, True, "-m addrtype ! --dst-type LOCAL"),
    ]
    assert rule.verdict.kind == MASQUERADE


def test_iptables_targets() -> None:
    def verdict(target: str, chains: set[str] | None = None) -> tuple[str, tuple[str, ...], str]:
        v = natparse.iptables_rule(f"-A POSTROUTING {target}", chains).verdict
        return v.kind, v.chains, v.to

    assert verdict("-j SNAT --to-source 192.0.2.1:1024-2047 --random-fully") == (
        SNAT,
        (),
        "192.0.2.1:1024-2047",
    )
    assert verdict("-j KUBE-POSTROUTING", {"KUBE-POSTROUTING"}) == (JUMP, ("KUBE-POSTROUTING",), "")
    assert verdict("-g FLANNEL") == (GOTO, ("FLANNEL",), "")
    assert verdict("-j FULLCONENAT", {"POSTROUTING"}) == (UNKNOWN, (), "FULLCONENAT")
    assert verdict("-j MARK --xor-mark 0x4000")[0] == NONE
    assert natparse.iptables_rule("-A X -j MARK --xor-mark 0x4000").verdict.mark == (
        "xor",
        0x4000,
        0,
    )


def test_the_mark_is_followed_through_kube_proxys_chain() -> None:
    """KUBE-POSTROUTING: a plain connection returns; a marked one has its mark cleared and is
    masqueraded."""
    text = "\n".join(
        [
            "*nat",
            ":POSTROUTING ACCEPT [0:0]",
            ":KUBE-POSTROUTING - [0:0]",
            "-A POSTROUTING -j KUBE-POSTROUTING",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j RETURN",  # cleared: not met
            "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
            "COMMIT",
        ]
    )
    hook = natparse.iptables_hook(text, "iptables-nft")
    assert hook is not None and hook.priority == 100
    path = NatPath(Family.IPV4, (hook,))
    assert walk(hook, packet("203.0.113.1"), path).stop.kind == RETURN
    marked = walk(hook, packet("203.0.113.1", mark=0x4000), path)
    assert marked.stop.kind == MASQUERADE
    unknown = walk(hook, packet("203.0.113.1", mark=None), path)
    assert unknown.stop.kind == MASQUERADE and unknown.maybe  # the RETURN may have matched


def test_a_goto_chain_that_returns_ends_its_caller() -> None:
    text = (
        "*nat\n:POSTROUTING ACCEPT\n:G -\n-A POSTROUTING -g G\n-A POSTROUTING -j MASQUERADE\n"
        "-A G -d 10.0.0.0/8 -j MASQUERADE\nCOMMIT\n"
    )
    hook = natparse.iptables_hook(text, "iptables-nft")
    assert hook is not None
    path = NatPath(Family.IPV4, (hook,))
    assert walk(hook, packet("10.1.1.1"), path).stop.kind == MASQUERADE
    assert walk(hook, packet("203.0.113.1"), path).stop.kind == RETURN  # never the rule after


def test_a_rule_that_may_match_and_jump_records_what_its_chain_may_do() -> None:
    text = (
        "*nat\n:POSTROUTING ACCEPT\n:LOG-ONLY -\n:NATS -\n"
        "-A POSTROUTING -o eth0 -j LOG-ONLY\n-A POSTROUTING -o eth1 -j NATS\n"
        "-A LOG-ONLY -j LOG\n-A NATS -j MASQUERADE\nCOMMIT\n"
    )
    hook = natparse.iptables_hook(text, "iptables-nft")
    assert hook is not None
    walked = walk(hook, packet("203.0.113.1"), NatPath(Family.IPV4, (hook,)))
    assert [(m.chain, m.effect) for m in walked.maybe] == [
        ("POSTROUTING", RETURN),
        ("POSTROUTING", MASQUERADE),
    ]


def test_no_nat_table_is_no_hook() -> None:
    assert natparse.iptables_hook("*filter\n:INPUT ACCEPT\nCOMMIT\n", "iptables-nft") is None


# -- nftables ------------------------------------------------------------------------------

TABLE = """\
table inet other {
	set pods {
		type ipv4_addr
		flags interval
		elements = { 10.244.0.0/16, 10.250.0.1-10.250.0.9 }
	}
	set pairs {
		type ipv4_addr . inet_service
		elements = { 10.0.0.1 . 80 }
	}
	chain postrouting {
		type nat hook postrouting priority srcnat - 5; policy accept;
		meta nfproto ipv6 masquerade
		ip saddr @pairs masquerade
		oifname "eth0" ip saddr { 10.96.0.0/12, 10.97.0.0/16 } snat to 192.0.2.7
		ip saddr @pods ip daddr != 10.0.0.0/8 counter masquerade to :1024-2047 fully-random
		ip daddr 172.16.0.0/12 snat ip to ip saddr
		goto more
	}
	chain more {
		meta l4proto tcp numgen random mod 2 vmap { 0 : jump a, 1 : jump b }
		ip daddr vmap @verdicts
	}
	chain a {
		masquerade
	}
	chain b {
		masquerade
	}
}
"""


def test_nft_rules_read_sets_literals_ranges_and_verdicts() -> None:
    (hook,) = natparse.nft_hooks(TABLE, Family.IPV4)
    assert (hook.owner, hook.chain, hook.priority, hook.table) == (
        "table inet other",
        "postrouting",
        95,
        "inet other",
    )
    rules = hook.chains["postrouting"]
    assert [r.verdict.kind for r in rules] == [MASQUERADE, MASQUERADE, SNAT, MASQUERADE, KEEP, GOTO]
    assert rules[2].matches[0].text == 'oifname "eth0"' and rules[2].verdict.to == "192.0.2.7"
    assert [str(n) for n in rules[2].matches[1].networks] == ["10.96.0.0/12", "10.97.0.0/16"]
    assert rules[3].matches[0].set_name == "pods" and rules[3].matches[1].negated
    assert [m.field for m in rules[3].matches] == [SADDR, DADDR]  # the counter is no match
    pods = hook.sets["pods"]
    assert [str(n) for e in pods for n in e.networks][:2] == ["10.244.0.0/16", "10.250.0.1/32"]
    assert hook.sets["pairs"][0].networks == ()  # a concatenation: unreadable
    more = hook.chains["more"]
    assert more[0].verdict.kind == JUMP and more[0].verdict.chains == ("a", "b")
    assert more[1].verdict.kind == UNKNOWN


def test_walking_an_inet_table_takes_the_familys_rules_only() -> None:
    (hook,) = natparse.nft_hooks(TABLE, Family.IPV4)
    path = NatPath(Family.IPV4, (hook,))
    # nfproto ipv6: not this family; @pairs unreadable: may match; then @pods matches.
    walked = walk(hook, packet("203.0.113.1"), path)
    assert walked.stop.kind == MASQUERADE and walked.stop.at is not None
    assert walked.stop.at.element is not None and walked.stop.at.element.key == "10.244.0.0/16"
    assert [m.why for m in walked.maybe] == ["set @pairs, which masqd cannot read"]
    other = walk(hook, packet("203.0.113.1", "10.96.0.1"), path)
    assert other.stop.kind == RETURN  # the end of `more`, which `goto` took it to
    assert [(m.why, m.effect) for m in other.maybe][1:3] == [
        ('oifname "eth0"', SNAT),
        ("meta l4proto tcp", MASQUERADE),
    ]
    kept = walk(hook, packet("172.16.0.1", "10.99.0.1"), path)
    assert kept.stop.kind == KEEP
    # Both random branches masquerade: what the rule would do, whichever it takes.
    branches = walk(hook, packet("203.0.113.1", "10.200.0.1"), path).maybe
    assert [(m.rule.verdict.chains, m.effect) for m in branches][1:2] == [(("a", "b"), MASQUERADE)]


def test_nft_hooks_see_only_their_family() -> None:
    ip6 = TABLE.replace("table inet other", "table ip6 other")
    assert natparse.nft_hooks(ip6, Family.IPV4) == []
    assert len(natparse.nft_hooks(ip6, Family.IPV6)) == 1


def test_nat_tables_are_found_in_a_chains_listing() -> None:
    listing = (
        "table ip nat {\n\tchain POSTROUTING {\n\t\ttype nat hook postrouting priority srcnat; "
        "policy accept;\n\t}\n}\ntable ip filter {\n\tchain INPUT {\n\t\ttype filter hook input "
        "priority filter; policy accept;\n\t}\n}\ntable ip6 kube-proxy {\n\tchain "
        "nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        "\t}\n\tchain masquerading {\n\t}\n}\n"
    )
    assert natparse.nat_tables(listing) == ["ip nat", "ip6 kube-proxy"]


def test_kube_proxys_mark_statements() -> None:
    rule = natparse.nft_rule("meta mark set meta mark ^ 0x00004000")
    assert rule.verdict.kind == NONE and rule.verdict.mark == ("xor", 0x4000, 0)
    test = natparse.nft_rule("meta mark & 0x00004000 == 0x00000000 return")
    assert test.matches[0].field == MARK and (test.matches[0].mask, test.matches[0].value) == (
        0x4000,
        0,
    )
