"""`masqctl explain` and the keys and flags beyond the anchors, on the real kernel, on every
backend (iptables-nft, iptables-legacy, nftables): explain's answer agrees with the source
address the destination namespace sees, for every kind of entry; a foreign masquerade before
our jump is the answer and a warning; sourceCIDRs leaves another source unmasqueraded;
snatToSource makes the destination see that address; --jump-position first decides before a
foreign catch-all (and leaves kube-proxy's marked connections to it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc
import pytest

from masqctl.cli import main
from masqd.api.v1 import control_pb2 as pb
from tests.kernel.test_nft_coexistence import load_busy_node
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.scenario import REPAIR_BOUND

NODE = {4: netns.NODE_UPLINK_V4, 6: netns.NODE_UPLINK_V6}
POD = {4: netns.POD_V4, 6: netns.POD_V6}
PLANES = ("nft", "legacy", "nftables")
"""The iptables backend in either mode, and the nftables backend."""

ENTRIES = """\
masqueradeCIDRs: [10.10.10.10/32]
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fc00::/7]
masqOutBound: false
masqOutBoundIPv6: true
"""
# Per destination: the action and who decides, as explain says it (ENTRIES).
EVERY_KIND = {
    netns.DEST_V4["vip"]: ("masquerade", "masqueradeCIDRs[0] 10.10.10.10/32"),
    netns.DEST_V4["vpc"]: ("none", "nonMasqueradeCIDRs[1] 172.16.0.0/12"),
    netns.DEST_V4["link_local"]: ("none", "the link-local rule 169.254.0.0/16"),
    netns.DEST_V4["internet"]: ("none", "no entry (masqOutBound: false)"),
    netns.DEST_V6["internet"]: ("masquerade", "the catch-all (masqOutBoundIPv6: true)"),
    netns.DEST_V6["ula"]: ("none", "nonMasqueradeCIDRs[2] fc00::/7"),
}
FOREIGN = ("-s", "10.244.0.0/16", "-m", "comment", "--comment", "foreign catch-all", "-j",
           "MASQUERADE")  # fmt: skip


@pytest.fixture(params=PLANES)
def plane(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(plane: str) -> str:
    """The topology's iptables mode (the nftables backend runs on a node using nft)."""
    return "legacy" if plane == "legacy" else "nft"


@pytest.fixture
def start(plane: str, start_masqd: Callable[..., Masqd]) -> Callable[..., Masqd]:
    nftables = ("--backend", "nftables") if plane == "nftables" else ("--backend", "iptables")
    return lambda config, *flags, **kw: start_masqd(config, *nftables, *flags, **kw)


def explain(daemon: Masqd, destination: str, source: str = "") -> pb.Explanation:
    request = pb.ExplainRequest(destination=destination, source=source)
    return daemon.stub().Explain(request, timeout=15)


def fate(topo: netns.Topology, destination: str, **kw: str) -> str:
    """masquerade or none, by what the destination saw."""
    family = 6 if ":" in destination else 4
    seen = topo.source_seen(destination, **kw)
    source = kw.get("source") or POD[family]
    assert seen in (NODE[family], source), seen
    return "none" if seen == source else "masquerade"


def foreign_nat(topo: netns.Topology, plane: str, *rule: str, first: bool = True) -> None:
    """Another owner's rule in iptables' nat POSTROUTING (the nftables backend's chain runs
    after it: srcnat + 10 against srcnat)."""
    where = ("-I", "POSTROUTING", "1") if first else ("-A", "POSTROUTING")
    topo.iptables(4, "-t", "nat", *where, *rule)


def test_explain_agrees_with_the_packets_for_every_kind_of_entry(
    topo: netns.Topology, start: Callable[..., Masqd], plane: str
) -> None:
    """masqueradeCIDRs, nonMasqueradeCIDRs, the link-local rule, the catch-all, no entry: what
    explain says each destination gets is what the destination sees."""
    daemon = start(ENTRIES)
    for destination, (action, decided) in EVERY_KIND.items():
        answer = explain(daemon, destination, POD[6 if ":" in destination else 4])
        assert (answer.action, answer.owner) == (action, "masqd"), answer
        assert answer.decided_by.startswith(decided), answer.decided_by
        assert answer.masqd.decided_by == answer.decided_by
        assert answer.warnings == [], answer.warnings
        assert fate(topo, destination) == action, destination
    entry = explain(daemon, netns.DEST_V4["vpc"]).entry
    assert (entry.key, entry.index, entry.value) == ("nonMasqueradeCIDRs", 1, "172.16.0.0/12")
    assert entry.file == str(daemon.config)


def test_explain_of_a_local_destination_says_it_is_not_in_our_chain(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """The node's own address is delivered to the node: nat POSTROUTING never sees it."""
    daemon = start(ENTRIES.replace("masqOutBound: false", "masqOutBound: true"))
    answer = explain(daemon, "10.244.1.1", netns.POD_V4)
    assert (answer.action, answer.decided_by) == ("none", "not in our chain: local destination")
    assert topo.source_seen("10.244.1.1", at=topo.node) == netns.POD_V4


def test_a_foreign_masquerade_before_our_jump_is_the_answer_and_a_warning(
    topo: netns.Topology, start: Callable[..., Masqd], plane: str
) -> None:
    """`-s 10.244.0.0/16 -j MASQUERADE` before our jump masquerades what masqd keeps: explain
    says so (the first NAT decision wins), and the packets agree."""
    daemon = start(ENTRIES)
    foreign_nat(topo, plane, *FOREIGN)
    vpc = netns.DEST_V4["vpc"]
    answer = explain(daemon, vpc, netns.POD_V4)
    assert answer.action == "masquerade"
    assert answer.owner == ("iptables-legacy" if plane == "legacy" else "iptables-nft")
    assert "foreign catch-all" in answer.rule
    assert (answer.masqd.action, answer.masqd.decided_by) == (
        "none",
        f"nonMasqueradeCIDRs[1] 172.16.0.0/12 in {daemon.config}",
    )
    assert len(answer.warnings) == 1
    assert "before masqd's rules see it" in answer.warnings[0]
    assert "The first NAT decision wins" in answer.warnings[0]
    assert fate(topo, vpc) == "masquerade"
    # Without a source it may or may not match: a warning that says it may.
    anyone = explain(daemon, vpc)
    assert anyone.action == "none" and "may NAT this connection before" in anyone.warnings[0]


def test_source_cidrs_leave_another_source_unmasqueraded(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """With masqOutBound on, a pod inside sourceCIDRs is masqueraded and a source outside them
    is left alone, in both families; explain says which and why."""
    topo.add_other_source()
    daemon = start(
        "sourceCIDRs: [10.244.0.0/16, fd00:244::/32]\nmasqOutBound: true\nmasqOutBoundIPv6: true\n"
    )
    for family, internet in ((4, netns.DEST_V4["internet"]), (6, netns.DEST_V6["internet"])):
        other = netns.OTHER_V4 if family == 4 else netns.OTHER_V6
        assert fate(topo, internet) == "masquerade"
        assert fate(topo, internet, source=other) == "none"
        answer = explain(daemon, internet, other)
        assert (answer.action, answer.decided_by) == (
            "none",
            "not in our chain: the source is not in sourceCIDRs",
        )
        assert explain(daemon, internet, POD[family]).action == "masquerade"
    # No source given: one of sourceCIDRs is assumed, and said.
    answer = explain(daemon, netns.DEST_V4["internet"])
    assert answer.action == "masquerade" and answer.source == "10.244.0.1"


def test_snat_to_source_is_the_address_the_destination_sees(
    topo: netns.Topology, start: Callable[..., Masqd], capsys: pytest.CaptureFixture[str]
) -> None:
    """snatToSource instead of MASQUERADE's choice; an address the node does not hold is a
    warning in status (not an error), gone once the node holds it."""
    daemon = start(
        "snatToSource: 192.0.2.100\nsnatToSourceIPv6: 2001:db8:ff::100\n"
        "masqOutBound: true\nmasqOutBoundIPv6: true\nresyncInterval: 1s\n"
    )
    warnings = {f.family: list(f.warnings) for f in daemon.status().families}
    assert "snatToSource 192.0.2.100 is not an address of this node" in warnings[1][0]
    assert "snatToSourceIPv6 2001:db8:ff::100 is not an address" in warnings[2][0]
    assert main(["--socket", daemon.socket, "status"]) == 0
    assert "ipv4 warning: snatToSource 192.0.2.100 is not an address" in capsys.readouterr().out
    answer = explain(daemon, netns.DEST_V4["internet"], netns.POD_V4)
    assert (answer.action, answer.snat_to) == ("snat", "192.0.2.100")
    assert any("not an address of this node" in w for w in answer.warnings)
    assert topo.source_seen(netns.DEST_V4["internet"]) == "192.0.2.100"
    assert topo.source_seen(netns.DEST_V6["internet"]) == "2001:db8:ff::100"
    netns.run(topo.node, "ip", "addr", "add", "192.0.2.100/32", "dev", "up0")
    netns.run(topo.node, "ip", "-6", "addr", "add", "2001:db8:ff::100/128", "dev", "up0", "nodad")
    wait_until(lambda: not any(f.warnings for f in daemon.status().families), 10)
    assert explain(daemon, netns.DEST_V4["internet"], netns.POD_V4).warnings == []


def test_first_decides_before_a_foreign_catch_all_masquerade(
    topo: netns.Topology, start: Callable[..., Masqd], plane: str
) -> None:
    """--jump-position first: what masqd keeps stays kept though a foreign catch-all follows
    (the decision is final), and what masqd masquerades is masqueraded; explain reports the
    position in force."""
    foreign_nat(topo, plane, *FOREIGN)
    daemon = start(ENTRIES, "--jump-position", "first")
    if plane != "nftables":
        assert topo.postrouting(4)[0].endswith("-j IP-MASQ-AGENT")
        assert topo.postrouting(6)[0].endswith("-j IP-MASQ-AGENT")
    vpc = netns.DEST_V4["vpc"]
    answer = explain(daemon, vpc, netns.POD_V4)
    assert (answer.action, answer.owner) == ("none", "masqd"), answer
    assert answer.warnings == [], answer.warnings
    position = "priority srcnat - 10" if plane == "nftables" else "our jump is rule 1 of 2"
    assert answer.position.startswith("first: ") and position in answer.position
    assert fate(topo, vpc) == "none"
    assert fate(topo, netns.DEST_V4["vip"]) == "masquerade"
    # What no entry decides is still left to the others: their catch-all masquerades it.
    internet = explain(daemon, netns.DEST_V4["internet"], netns.POD_V4)
    assert internet.action == "masquerade" and internet.owner != "masqd"
    assert fate(topo, netns.DEST_V4["internet"]) == "masquerade"


def test_first_leaves_kube_proxys_marked_connections_to_it(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """A connection kube-proxy marked for masquerade (mark 0x4000: NodePort, hairpin) goes on
    to its rules even where masqd keeps the address: KUBE-POSTROUTING masquerades it."""
    vpc, marked = netns.DEST_V4["vpc"], 40001
    mangle = ("-t", "mangle", "-A", "PREROUTING", "-s", netns.POD_V4, "-d", vpc, "-p", "udp")
    topo.iptables(4, *mangle, "--dport", str(marked), "-j", "MARK", "--set-xmark", "0x4000/0x4000")
    topo.iptables(4, "-t", "nat", "-N", "KUBE-POSTROUTING")
    for rule in (
        ("-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"),
        ("-j", "MARK", "--xor-mark", "0x4000"),
        ("-j", "MASQUERADE"),
    ):
        topo.iptables(4, "-t", "nat", "-A", "KUBE-POSTROUTING", *rule)
    topo.iptables(4, "-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING")
    daemon = start(ENTRIES, "--jump-position", "first")
    assert topo.source_seen(vpc, marked) == netns.NODE_UPLINK_V4  # marked: kube-proxy's
    assert fate(topo, vpc) == "none"  # unmarked (another port): masqd's, final
    assert explain(daemon, vpc, netns.POD_V4).action == "none"  # a plain connection's fate


@pytest.mark.parametrize("plane", ["nft", "legacy"])
def test_first_moves_our_jump_back_when_a_rule_is_put_before_it(
    topo: netns.Topology, start: Callable[..., Masqd], plane: str
) -> None:
    """A jump not first when it must be is drift: repaired within the bound, the other
    owner's rule kept (second)."""
    start(ENTRIES, "--jump-position", "first")
    foreign_nat(topo, plane, *FOREIGN)
    assert "foreign catch-all" in topo.postrouting(4)[0]
    wait_until(lambda: topo.postrouting(4)[0].endswith("-j IP-MASQ-AGENT"), REPAIR_BOUND)
    rules = topo.postrouting(4)
    assert len(rules) == 2 and "foreign catch-all" in rules[1]
    assert fate(topo, netns.DEST_V4["vpc"]) == "none"


@pytest.mark.parametrize("position", ["append", "first"])
def test_on_a_busy_node_explain_agrees_with_the_packets(
    topo: netns.Topology, start: Callable[..., Masqd], plane: str, position: str
) -> None:
    """The shared busy node (kube-proxy, Calico, Docker, flannel, the CNI bridge, a previous
    ip-masq-agent; kube-proxy's nft tables): flannel's masquerade of the pod CIDR decides a
    destination masqd keeps, after our RETURN (or, nftables, before our chain), and explain
    says so; with --jump-position first (iptables), masqd's decision is final."""
    load_busy_node(topo)
    daemon = start(ENTRIES, "--jump-position", position)
    vpc = netns.DEST_V4["vpc"]
    answer = explain(daemon, vpc, netns.POD_V4)
    assert answer.masqd.decided_by.startswith("nonMasqueradeCIDRs[1] 172.16.0.0/12")
    if position == "first":  # before every other owner's rule, and final
        assert (answer.action, answer.owner, answer.warnings) == ("none", "masqd", [])
    else:
        assert answer.action == "masquerade" and "flanneld masq" in answer.rule
        where = "before masqd's rules see it" if plane == "nftables" else "after masqd's rules"
        assert any(where in w for w in answer.warnings), answer.warnings
        assert any("cali40masq-ipam-pools" in w for w in answer.warnings)  # may: an ipset
    assert fate(topo, vpc) == answer.action


# -- the API's edges and masqctl ------------------------------------------------------------


@pytest.fixture
def ipv4_only(topo: netns.Topology, start: Callable[..., Masqd]) -> Iterator[Masqd]:
    yield start(ENTRIES.replace(", fc00::/7", ""), "--enable-ipv6=false")


@pytest.mark.parametrize("plane", ["nft"])
def test_explain_refuses_what_it_cannot_answer(ipv4_only: Masqd) -> None:
    """Not an address, a source of the other family, a family not enabled: each a gRPC
    status that says what is wrong."""
    cases = [
        (pb.ExplainRequest(destination="nowhere"), grpc.StatusCode.INVALID_ARGUMENT, "not an IP"),
        (
            pb.ExplainRequest(destination="192.0.2.9", source="fd00::1"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "different families",
        ),
        (
            pb.ExplainRequest(destination="192.0.2.9", family=pb.FAMILY_IPV6),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not an ipv6 address",
        ),
        (pb.ExplainRequest(destination="2001:db8::1"), grpc.StatusCode.FAILED_PRECONDITION, "ipv6"),
    ]
    for request, code, words in cases:
        with pytest.raises(grpc.RpcError) as info:
            ipv4_only.stub().Explain(request, timeout=10)
        assert info.value.code() == code
        assert words in info.value.details()


@pytest.mark.parametrize("plane", ["nft"])
def test_masqctl_explain_prints_the_answer_and_stable_json(
    topo: netns.Topology, start: Callable[..., Masqd], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = start(ENTRIES)
    foreign_nat(topo, "nft", *FOREIGN)
    vip = netns.DEST_V4["vip"]
    assert main(["--socket", daemon.socket, "explain", vip, "--source", netns.POD_V4]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{vip} from {netns.POD_V4} (ipv4): masquerade")
    assert "  masqd alone masquerade (masqueradeCIDRs[0] 10.10.10.10/32" in out
    assert "warning: " in out
    argv = ["--socket", daemon.socket, "explain", netns.DEST_V4["vpc"], "-o", "json"]
    assert main([*argv, "--source", netns.POD_V4]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["action"] == "masquerade"
    assert data["decidedBy"].startswith("iptables-nft nat: -A POSTROUTING -s 10.244")
    assert data["masqd"]["decidedBy"].startswith("nonMasqueradeCIDRs[1] 172.16.0.0/12")
    assert isinstance(data["warnings"], list) and data["warnings"]
    assert main(["--socket", daemon.socket, "explain", "not an address"]) == 1
    assert "not a name that resolves" in capsys.readouterr().err


@pytest.mark.parametrize("plane", ["nft"])
def test_explain_reads_no_legacy_nat_table_the_node_lacks(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """A node with a legacy filter table but no legacy nat table (a firewall, say): explain
    leaves the legacy nat table unread, so it does not create it (iptables-legacy-save would)."""
    netns.run(topo.node, "iptables-legacy", "-t", "filter", "-S")  # makes the filter table
    assert "filter" in netns.run(topo.node, "cat", "/proc/net/ip_tables_names").split()
    daemon = start(ENTRIES)
    assert explain(daemon, netns.DEST_V4["vip"]).action == "masquerade"
    assert "nat" not in netns.run(topo.node, "cat", "/proc/net/ip_tables_names").split()
