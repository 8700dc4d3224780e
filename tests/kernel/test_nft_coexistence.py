"""The nftables backend on a busy node: a nat table loaded first from ../shared/cases/nat-tables
(kube-proxy's, Docker's, flannel's, Calico's and the CNI plugins' real rules, with Calico's
ipsets; iptables-nft and iptables-legacy) and a kube-proxy-style nft table of its own at
priority srcnat. Every other owner's rules, sets and tables are byte-identical after masqd's
start, a config change, a repair, SIGTERM and cleanup; the IP-MASQ-AGENT chain an earlier agent
left is taken over; and packets leave with the same source as on the iptables backend."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_root
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.nft import NFTABLES, listing, tables
from tests.support.paths import SHARED
from tests.support.scenario import REPAIR_BOUND, put

NAT_TABLES = SHARED / "cases" / "nat-tables"
CONFIG = """\
masqueradeCIDRs: [10.10.10.10/32]
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7]
masqOutBound: true
"""
NEXT = CONFIG.replace("192.168.0.0/16", "100.64.230.0/24")
# kube-proxy's nftables mode, as its proxier lays out its own table (a nat-postrouting chain at
# srcnat that masquerades what kube-proxy marked), in each family.
KUBE_PROXY = """\
table {family} kube-proxy {{
	comment "rules for kube-proxy"
	set cluster-ips {{
		type {addr}
		comment "Active ClusterIPs"
		elements = {{ {ips} }}
	}}
	chain nat-prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}}
	chain services {{
		{proto} daddr @cluster-ips counter
	}}
	chain nat-postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}}
	chain masquerading {{
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}}
}}
"""
IPTABLES_TABLES = {"nat", "filter", "mangle", "raw", "security"}
CHAIN = "IP-MASQ-AGENT"
_CHAIN_COUNTERS = re.compile(r"\[\d+:\d+\]")


@pytest.fixture(params=["nft", "legacy"])
def backend(request: pytest.FixtureRequest) -> str:
    """The iptables mode the node's other owners wrote their rules with."""
    return str(request.param)


def require_shared() -> None:
    if not (NAT_TABLES / "node-v4.rules").exists():
        message = f"the shared nat tables are not at {NAT_TABLES}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def load_busy_node(topo: netns.Topology) -> None:
    """Calico's ipsets, then the nat table of both families, then kube-proxy's nft tables."""
    require_shared()
    node = topo.node
    netns.run(node, "ipset", "restore", input=(NAT_TABLES / "node.ipset").read_text())
    for family, name in ((4, "node-v4.rules"), (6, "node-v6.rules")):
        tool = f"{'iptables' if family == 4 else 'ip6tables'}-{topo.backend}-restore"
        netns.run(node, tool, input=(NAT_TABLES / name).read_text())
    for family, addr, proto, ips in (
        ("ip", "ipv4_addr", "ip", "10.96.0.1, 10.96.0.10"),
        ("ip6", "ipv6_addr", "ip6", "fd00:96::1, fd00:96::a"),
    ):
        text = KUBE_PROXY.format(family=family, addr=addr, proto=proto, ips=ips)
        netns.run(node, "nft", "-f", "-", input=text)


def others(topo: netns.Topology) -> dict[str, str]:
    """Everything on the node that is not ours: each iptables nat table as its save prints it
    (chain counters left out, as traffic moves them) less the IP-MASQ-AGENT chain and its jump
    (the shared case's own definition of foreign), Calico's ipsets, and every nft table but
    ours (iptables-nft's own tables are the saves above)."""
    found = {}
    for family in (4, 6):
        tool = f"{'iptables' if family == 4 else 'ip6tables'}-{topo.backend}-save"
        text = netns.run(topo.node, tool, "-t", "nat")
        lines = [
            _CHAIN_COUNTERS.sub("", ln)
            for ln in text.splitlines()
            if not ln.startswith("#") and CHAIN not in ln
        ]
        found[f"{tool} -t nat"] = "\n".join(lines)
    found["ipset save"] = netns.run(topo.node, "ipset", "save")
    for name, text in tables(topo.node).items():
        family, table = name.split()
        if table == "masqd" or (family in ("ip", "ip6") and table in IPTABLES_TABLES):
            continue
        found[name] = text
    return found


@pytest.fixture
def busy(topo: netns.Topology) -> Iterator[netns.Topology]:
    require_root()
    load_busy_node(topo)
    yield topo


def cleanup(ns: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "masqd",
            "cleanup",
            "--backend",
            "nftables",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_other_owner_stays_byte_identical(
    busy: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Start, a config change, a repair, SIGTERM, cleanup: the other owners' nat tables, sets
    and nft tables never change by a byte."""
    before = others(busy)
    assert "ip kube-proxy" in before and "ip6 kube-proxy" in before
    assert "KUBE-SERVICES" in before[f"iptables-{busy.backend}-save -t nat"]

    daemon = start_masqd(CONFIG, *NFTABLES)
    assert "table ip masqd" in listing(busy.node, 4) and "table ip6 masqd" in listing(busy.node, 6)
    assert others(busy) == before, "after start"
    # The iptables backend's chain (here the previous ip-masq-agent's) is taken over: left in
    # place it would go on masquerading by its old config before our table is reached.
    wait_until(lambda: not busy.chain(4) and not busy.chain(6), 5)
    assert not any(CHAIN in rule for rule in busy.postrouting(4) + busy.postrouting(6))

    put(daemon.config, NEXT)
    wait_until(lambda: "100.64.230.0/24" in listing(busy.node, 4), 5)
    assert others(busy) == before, "after a config change"

    netns.run(busy.node, "nft", "delete", "element", "ip", "masqd", "nomasq", "{ 10.0.0.0/8 }")
    wait_until(lambda: "10.0.0.0/8" in listing(busy.node, 4), REPAIR_BOUND)
    netns.run(busy.node, "nft", "flush", "table", "ip6", "masqd")
    wait_until(lambda: "fc00::/7" in listing(busy.node, 6), REPAIR_BOUND)
    assert others(busy) == before, "after repairs"

    assert daemon.stop() < 5.0
    assert "table ip masqd" in listing(busy.node, 4)
    assert others(busy) == before, "after SIGTERM"

    result = cleanup(busy.node)
    assert result.returncode == 0, result.stderr
    assert listing(busy.node, 4) == "" and listing(busy.node, 6) == ""
    assert others(busy) == before, "after cleanup"


DESTINATIONS = [
    *netns.DEST_V4.values(),
    *netns.DEST_V6.values(),
]


def sources(topo: netns.Topology) -> dict[str, str]:
    return {dest: topo.source_seen(dest) for dest in DESTINATIONS}


def test_packets_get_the_same_source_on_both_backends(
    busy: netns.Topology, start_masqd: Callable[..., Masqd], tmp_path: Path
) -> None:
    """The same config on the same busy node: every destination sees the same source address
    whether masqd runs the nftables backend or the iptables one."""
    daemon = start_masqd(CONFIG, *NFTABLES)
    on_nftables = sources(busy)
    daemon.stop()
    assert cleanup(busy.node).returncode == 0
    with netns.topology(busy.backend) as other:
        load_busy_node(other)
        config = tmp_path / "iptables-config"
        config.write_text(CONFIG)
        workdir = tmp_path / "iptables"
        workdir.mkdir()
        flags = ("--backend", "iptables", "--iptables-mode", other.backend)
        iptables_daemon = Masqd(other.node, workdir, config, *flags)
        try:
            iptables_daemon.start()
            on_iptables = sources(other)
        finally:
            iptables_daemon.stop()
    assert on_nftables == on_iptables
    assert on_nftables[netns.DEST_V4["internet"]] == netns.NODE_UPLINK_V4
