"""explain's decisions over parsed nat rules, without a kernel: a busy node's real nat table
(../shared/cases/nat-tables: Calico, kube-proxy, Docker, flannel, the CNI bridge), kube-proxy's
nftables table beside ours, attribution to config entries (nested entries, a rule the config
does not have), and the warnings for what decides first, after, or in an undefined order."""

from __future__ import annotations

import ipaddress

import pytest

from masqd.core import natparse, nftrules
from masqd.core.config import MasqConfig, parse_config
from masqd.core.errors import RequestError
from masqd.core.explain import Ours, explain, packet_of, unheld
from masqd.core.model import Family
from masqd.core.natpath import Hook, NatPath, Packet
from masqd.core.rules import RenderOptions, desired_rules, jump_rule
from tests.conftest import IN_CI
from tests.support.paths import SHARED

CHAIN = "IP-MASQ-AGENT"
ENTRIES = """\
masqueradeCIDRs: [10.10.10.10/32]
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fc00::/7]
masqOutBound: true
"""
IPTABLES = Ours("iptables", "iptables-nft", CHAIN, config_path="/etc/config/ip-masq-agent")
NFTABLES = Ours("nftables", "table ip masqd", "postrouting")
KUBE_PROXY = """\
table ip kube-proxy {
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}
	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
}
"""


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def packet(destination: str, source: str | None = "10.244.1.5", mark: int | None = 0) -> Packet:
    return Packet(ip(destination), ip(source) if source else None, mark)


def iptables_path(
    config: MasqConfig, *before: str, after: tuple[str, ...] = (), first: bool = False
) -> NatPath:
    """iptables' nat table with our chain, and other owners' POSTROUTING rules around it."""
    options = RenderOptions(jump_position="first" if first else "append")
    rules = desired_rules(config, Family.IPV4, options)
    postrouting = [*before, jump_rule(CHAIN), *after]
    text = "\n".join(["*nat", ":POSTROUTING ACCEPT", f":{CHAIN} -", *postrouting, *rules, "COMMIT"])
    hook = natparse.iptables_hook(text, "iptables-nft")
    assert hook is not None
    return NatPath(Family.IPV4, (hook,), local=(ip("192.0.2.1"),))


def nft_path(config: MasqConfig, *tables: str, **opts: object) -> NatPath:
    table = nftrules.desired_table(config, Family.IPV4, RenderOptions(**opts))  # type: ignore[arg-type]
    hooks: list[Hook] = natparse.nft_hooks(nftrules.table_block(table), Family.IPV4)
    for text in tables:
        hooks += natparse.nft_hooks(text, Family.IPV4)
    return NatPath(Family.IPV4, tuple(hooks), local=(ip("192.0.2.1"),))


CONFIG = parse_config(ENTRIES).config


# -- a busy node -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy() -> Hook:
    rules = SHARED / "cases" / "nat-tables" / "node-v4.rules"
    if not rules.exists():
        message = f"the shared nat tables are not at {rules.parent}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    hook = natparse.iptables_hook(rules.read_text(), "iptables-nft")
    assert hook is not None
    return hook


def test_on_a_busy_node_flannel_masquerades_what_our_chain_returns(busy: Hook) -> None:
    """The previous agent's chain returns 172.16.0.0/12, but flannel's FLANNEL-POSTRTG after
    it masquerades the pod's connection: that is the answer, and the warning says why (and
    that --jump-position first would make masqd's decision final)."""
    config = parse_config("nonMasqueradeCIDRs: [172.16.0.0/12]\n").config
    path = NatPath(Family.IPV4, (busy,), local=(ip("192.0.2.1"),))
    answer = explain(path, IPTABLES, config, packet("172.16.0.10"))
    assert answer.action == "masquerade"
    assert answer.decided_by.startswith("iptables-nft nat: -A FLANNEL-POSTRTG -s 10.244")
    assert answer.masqd.action == "none"
    assert (
        answer.masqd.decided_by
        == "nonMasqueradeCIDRs[0] 172.16.0.0/12 in /etc/config/ip-masq-agent"
    )
    overridden = [w for w in answer.warnings if "after masqd's rules" in w]
    assert (
        len(overridden) == 1 and "--jump-position first makes the decision final" in overridden[0]
    )
    # Calico's nat-outgoing matches on ipsets masqd does not read: it may masquerade first.
    maybe = [w for w in answer.warnings if "cali-nat-outgoing" in w]
    assert maybe and "may NAT this connection before masqd's rules" in maybe[0]
    assert "--match-set cali40masq-ipam-pools" in maybe[0]
    assert answer.position == "append: our jump is rule 6 of 17 in POSTROUTING"


def test_on_a_busy_node_kube_proxys_mark_decides_service_traffic(busy: Hook) -> None:
    """kube-proxy's KUBE-POSTROUTING returns a plain connection and masquerades one it marked
    (0x4000), before our jump."""
    path = NatPath(Family.IPV4, (busy,))
    plain = explain(path, IPTABLES, CONFIG, packet("172.16.0.10"))
    assert not any("KUBE-POSTROUTING" in w for w in plain.warnings)
    marked = explain(path, IPTABLES, CONFIG, packet("172.16.0.10", mark=0x4000))
    assert marked.action == "masquerade"
    assert "kubernetes service traffic requiring SNAT" in marked.fate.rule
    assert any("before masqd's rules see it" in w for w in marked.warnings)


def test_on_a_busy_node_docker_rules_depend_on_the_interface(busy: Hook) -> None:
    """`-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`: for a Docker container's source it may
    masquerade first; masqd cannot know the outgoing interface."""
    path = NatPath(Family.IPV4, (busy,))
    answer = explain(path, IPTABLES, CONFIG, packet("203.0.113.10", "172.17.0.2"))
    docker = [w for w in answer.warnings if "! -o docker0" in w]
    assert docker and "it depends on ! -o docker0" in docker[0]


# -- iptables: before, after, first ----------------------------------------------------------

FOREIGN = "-A POSTROUTING -s 10.244.0.0/16 -m comment --comment foreign -j MASQUERADE"


def test_a_foreign_masquerade_before_our_jump_decides_and_warns() -> None:
    answer = explain(iptables_path(CONFIG, FOREIGN), IPTABLES, CONFIG, packet("172.16.0.10"))
    assert (answer.action, answer.owner, answer.fate.rule) == (
        "masquerade",
        "iptables-nft",
        FOREIGN,
    )
    assert answer.masqd.entry is not None and answer.masqd.entry.index == 1
    assert answer.warnings == (
        f"iptables-nft nat: {FOREIGN} masquerades this connection before masqd's rules "
        "see it; masqd alone would give it: none (nonMasqueradeCIDRs[1] 172.16.0.0/12 in "
        "/etc/config/ip-masq-agent). The first NAT decision wins. --jump-position first puts "
        "masqd's decision before it.",
    )


def test_first_makes_a_kept_address_final_against_a_catch_all_after_it() -> None:
    path = iptables_path(CONFIG, after=(FOREIGN,), first=True)
    first = Ours("iptables", "iptables-nft", CHAIN, "first")
    answer = explain(path, first, CONFIG, packet("172.16.0.10"))
    assert (answer.action, answer.owner, answer.warnings) == ("none", "masqd", ())
    assert "-j ACCEPT" in answer.fate.rule
    appended = explain(
        iptables_path(CONFIG, after=(FOREIGN,)), IPTABLES, CONFIG, packet("172.16.0.10")
    )
    assert appended.action == "masquerade"


def test_a_first_jump_that_is_not_first_is_a_warning() -> None:
    first = Ours("iptables", "iptables-nft", CHAIN, "first")
    answer = explain(
        iptables_path(CONFIG, "-A POSTROUTING -j KUBE-POSTROUTING"),
        first,
        CONFIG,
        packet("203.0.113.10"),
    )
    assert "masqd's jump is rule 2 of POSTROUTING, not the first" in answer.warnings[-1]
    assert answer.position == "first: our jump is rule 2 of 2 in POSTROUTING"


def test_without_a_source_a_rule_on_the_source_may_decide() -> None:
    answer = explain(iptables_path(CONFIG, FOREIGN), IPTABLES, CONFIG, packet("172.16.0.10", None))
    assert answer.action == "none" and answer.source == ""
    assert "it depends on its source (-s 10.244.0.0/16)" in answer.warnings[0]
    assert "any source" in answer.notes[0]


def test_a_rule_of_ours_the_config_does_not_have_is_named_so() -> None:
    live = parse_config("nonMasqueradeCIDRs: [192.168.0.0/16]\nmasqOutBound: true\n").config
    answer = explain(iptables_path(live), IPTABLES, CONFIG, packet("192.168.1.1"))
    assert answer.decided_by.startswith("a rule of ours the config in force does not have (-A")


def test_a_missing_jump_or_chain_decides_nothing() -> None:
    text = f"*nat\n:POSTROUTING ACCEPT\n:{CHAIN} -\n{FOREIGN}\nCOMMIT\n"
    hook = natparse.iptables_hook(text, "iptables-nft")
    assert hook is not None
    answer = explain(NatPath(Family.IPV4, (hook,)), IPTABLES, CONFIG, packet("198.51.100.1"))
    assert answer.masqd.decided_by == "not in our chain: our jump is missing from POSTROUTING"
    assert any("jump to IP-MASQ-AGENT is missing" in w for w in answer.warnings)
    gone = explain(NatPath(Family.IPV4, ()), IPTABLES, CONFIG, packet("198.51.100.1"))
    assert gone.action == "none" and "chain IP-MASQ-AGENT is not in the kernel" in gone.warnings[0]


def test_a_foreign_accept_before_our_jump_keeps_our_chain_from_deciding() -> None:
    answer = explain(
        iptables_path(CONFIG, "-A POSTROUTING -d 203.0.113.0/24 -j ACCEPT"),
        IPTABLES,
        CONFIG,
        packet("203.0.113.10"),
    )
    assert (answer.action, answer.owner) == ("none", "iptables-nft")
    assert answer.masqd.decided_by == "the catch-all (masqOutBound: true)"
    assert "ends POSTROUTING before masqd's jump" in answer.warnings[0]


def test_local_destinations_never_reach_postrouting() -> None:
    answer = explain(iptables_path(CONFIG, FOREIGN), IPTABLES, CONFIG, packet("192.0.2.1"))
    assert (answer.action, answer.decided_by) == ("none", "not in our chain: local destination")
    assert answer.warnings == ()


# -- nftables ---------------------------------------------------------------------------------


def test_kube_proxys_table_masquerades_what_it_marked_before_our_chain() -> None:
    """kube-proxy's nat-postrouting at srcnat runs before ours at srcnat + 10: it returns a
    plain connection and masquerades a marked one."""
    path = nft_path(CONFIG, KUBE_PROXY)
    plain = explain(path, NFTABLES, CONFIG, packet("172.16.0.10"))
    assert (plain.action, plain.decided_by, plain.warnings) == (
        "none",
        "nonMasqueradeCIDRs[1] 172.16.0.0/12",
        (),
    )
    marked = explain(path, NFTABLES, CONFIG, packet("172.16.0.10", mark=0x4000))
    assert (marked.action, marked.owner) == ("masquerade", "table ip kube-proxy")
    assert marked.decided_by == "table ip kube-proxy chain masquerading: masquerade fully-random"


def test_nested_entries_are_decided_by_the_element_that_covers_them() -> None:
    """nftables collapses 10.1.0.0/16 into 10.0.0.0/8: the element's entry decides."""
    config = parse_config("nonMasqueradeCIDRs: [10.1.0.0/16, 10.0.0.0/8]\n").config
    answer = explain(nft_path(config), NFTABLES, config, packet("10.1.2.3"))
    assert answer.decided_by == "nonMasqueradeCIDRs[1] 10.0.0.0/8"
    assert answer.fate.rule == "ip daddr @nomasq return"


def test_first_on_nftables_binds_before_the_chains_after_it() -> None:
    masquerade_all = KUBE_PROXY.replace("jump masquerading", "masquerade")
    first = Ours("nftables", "table ip masqd", "postrouting", "first")
    path = nft_path(CONFIG, masquerade_all, jump_position="first")
    answer = explain(path, first, CONFIG, packet("172.16.0.10"))
    assert (answer.action, answer.fate.rule, answer.warnings) == (
        "none",
        "ip daddr @nomasq snat to ip saddr",
        (),
    )
    assert answer.position == "first: our chain at priority srcnat - 10"
    appended = explain(nft_path(CONFIG, masquerade_all), NFTABLES, CONFIG, packet("172.16.0.10"))
    assert appended.action == "masquerade"  # kube-proxy's chain, before ours


def test_an_equal_priority_is_a_warning_when_the_other_may_nat() -> None:
    same = KUBE_PROXY.replace("priority srcnat;", "priority srcnat + 10;").replace(
        "jump masquerading", "ip saddr 10.244.0.0/16 masquerade"
    )
    answer = explain(nft_path(CONFIG, same), NFTABLES, CONFIG, packet("203.0.113.10"))
    assert any("same priority as masqd's (srcnat + 10)" in w for w in answer.warnings)


def test_source_cidrs_on_nftables_name_the_source_as_the_reason() -> None:
    config = parse_config("sourceCIDRs: [10.244.0.0/16]\nmasqOutBound: true\n").config
    answer = explain(nft_path(config), NFTABLES, config, packet("203.0.113.10", "10.99.0.1"))
    assert answer.decided_by == "not in our chain: the source is not in sourceCIDRs"
    assumed = explain(nft_path(config), NFTABLES, config, packet("203.0.113.10", None))
    assert (assumed.action, assumed.source) == ("masquerade", "10.244.0.1")


def test_snat_to_an_address_the_node_does_not_hold_is_a_warning() -> None:
    config = parse_config("snatToSource: 198.51.100.7\nmasqOutBound: true\n").config
    answer = explain(nft_path(config), NFTABLES, config, packet("203.0.113.10"))
    assert (answer.action, answer.fate.snat_to) == ("snat", "198.51.100.7")
    assert answer.warnings == unheld(config, Family.IPV4, (ip("192.0.2.1"),))
    assert unheld(config, Family.IPV4, (ip("198.51.100.7"),)) == ()


# -- the request -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "source", "family", "message"),
    [
        ("example", "", None, "destination 'example' is not an IP address"),
        ("192.0.2.1", "pod", None, "source 'pod' is not an IP address"),
        ("192.0.2.1", "fd00::1", None, "of different families"),
        ("192.0.2.1", "", Family.IPV6, "is not an ipv6 address"),
    ],
)
def test_a_bad_request_says_what_is_wrong(
    destination: str, source: str, family: Family | None, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        packet_of(destination, source, family)


def test_a_dns_name_and_its_file_name_the_entry() -> None:
    """A rule rendered from a name's answer is that name's entry; with --config-dir, in the
    file it came from."""
    from masqd.core.config import Origin
    from masqd.core.explain import entries_of
    from masqd.core.names import Answer, expand

    loaded = parse_config("masqueradeCIDRs: [db.example.com]\nnonMasqueradeCIDRs: [10.0.0.0/8]\n")
    name = loaded.config.masquerade_cidrs[0]
    answers = {
        "db.example.com": Answer("db.example.com", (ipaddress.ip_network("10.1.2.3/32"),), 1.0)
    }
    config = expand(loaded.config, answers)
    origins = (Origin("masqueradeCIDRs", name, "ip-masq-db"),)
    entries = entries_of(loaded.config, answers, origins, "/etc/config")
    answer = explain(iptables_path(config), IPTABLES, config, packet("10.1.2.3"), entries)
    assert answer.action == "masquerade"
    assert answer.decided_by == "masqueradeCIDRs[0] db.example.com (10.1.2.3/32) in ip-masq-db"
    other = explain(iptables_path(config), IPTABLES, config, packet("10.9.9.9"), entries)
    assert other.decided_by == "nonMasqueradeCIDRs[0] 10.0.0.0/8 in /etc/config"
