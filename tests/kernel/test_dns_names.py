"""DNS names in the CIDR lists (CCE), against a real DNS server: dnsmasq in the test's dest
namespace, the node namespace's resolver pointed at it. A name masquerades its address by
packets; a changed answer moves the rule within one resyncInterval; DNS stopped keeps the last
good answer; A and AAAA land in both families; a name that does not resolve leaves the other
entries working; a look-up that hangs delays no config change. Rendering does not depend on
the iptables backend, so these run on nft alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from masqctl.cli import main
from masqd.api.v1 import control_pb2 as pb
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.dns import DnsServer, dns_server, node_resolver
from tests.support.observability import scrape
from tests.support.paths import ROOT
from tests.support.scenario import CONFIG_CHANGE_BOUND, put, time_until

VIP = netns.DEST_V4["vip"]  # inside 10.0.0.0/8, so unmasqueraded unless a rule says otherwise
VPC = netns.DEST_V4["vpc"]
INTERNET_V4, INTERNET_V6 = netns.DEST_V4["internet"], netns.DEST_V6["internet"]
INTERVAL = 2.0
DROPPING_SERVER = "198.51.100.53"  # routed to dest, which drops it: a server that never answers
pytestmark = pytest.mark.parametrize("backend", ["nft"])


@pytest.fixture
def dns(topo: netns.Topology) -> Iterator[DnsServer]:
    with (
        node_resolver(topo.node, netns.DEST_UPLINK_V4),
        dns_server(topo.dest, netns.DEST_UPLINK_V4) as server,
    ):
        yield server


def names(daemon: Masqd) -> dict[str, pb.DnsName]:
    return {n.name: n for n in daemon.status().names}


def masquerades(topo: netns.Topology, family: int, cidr: str) -> bool:
    return any(f"-d {cidr}" in r and "-j MASQUERADE" in r for r in topo.chain(family))


def test_a_name_in_masquerade_cidrs_masquerades_its_address(
    topo: netns.Topology, dns: DnsServer, start_masqd: Callable[..., Masqd]
) -> None:
    dns.answer({"vip.masq.test": [VIP]})
    daemon = start_masqd("masqueradeCIDRs: [vip.masq.test]\n")
    wait_until(lambda: masquerades(topo, 4, f"{VIP}/32"), 5)
    assert topo.source_seen(VIP) == netns.NODE_UPLINK_V4
    name = names(daemon)["vip.masq.test"]
    assert name.resolved and list(name.addresses) == [f"{VIP}/32"] and not name.error
    assert name.ttl.seconds == 300
    rules = daemon.stub().GetRules(pb.GetRulesRequest(), timeout=10).families[0]
    assert [r.origin for r in rules.live if r.target == "MASQUERADE"] == [
        "masqueradeCIDRs vip.masq.test"
    ]


def test_a_changed_answer_moves_the_rule_within_one_resync_interval(
    topo: netns.Topology, dns: DnsServer, start_masqd: Callable[..., Masqd]
) -> None:
    """The TTL (300 s) is longer than resyncInterval (2 s): the interval bounds the move."""
    dns.answer({"vip.masq.test": [VIP]})
    daemon = start_masqd(f"masqueradeCIDRs: [vip.masq.test]\nresyncInterval: {INTERVAL:g}s\n")
    wait_until(lambda: masquerades(topo, 4, f"{VIP}/32"), 5)
    dns.answer({"vip.masq.test": [VPC]})
    took = time_until(
        lambda: masquerades(topo, 4, f"{VPC}/32") and not masquerades(topo, 4, f"{VIP}/32"),
        INTERVAL + CONFIG_CHANGE_BOUND,
    )
    assert took <= INTERVAL + CONFIG_CHANGE_BOUND
    print(f"\n[{topo.backend}] a changed answer in the kernel in {took:.3f}s (interval 2s)")
    assert topo.source_seen(VPC) == netns.NODE_UPLINK_V4
    assert topo.source_seen(VIP) == netns.POD_V4
    ipv4 = daemon.status().families[0]
    counts = {c.reason: c.count for c in ipv4.sync_counts}
    assert counts[pb.SYNC_REASON_DNS_CHANGE] >= 1
    assert daemon.log().count(f"vip.masq.test resolves to {VPC}") == 1


def test_dns_stopped_keeps_the_last_good_answer(
    topo: netns.Topology,
    dns: DnsServer,
    start_masqd: Callable[..., Masqd],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dns.answer({"vip.masq.test": [VIP]})
    daemon = start_masqd(f"masqueradeCIDRs: [vip.masq.test]\nresyncInterval: {INTERVAL:g}s\n")
    wait_until(lambda: masquerades(topo, 4, f"{VIP}/32"), 5)
    dns.stop()
    wait_until(lambda: names(daemon)["vip.masq.test"].error, 20)
    name = names(daemon)["vip.masq.test"]
    assert name.resolved and list(name.addresses) == [f"{VIP}/32"]
    wait_until(lambda: names(daemon)["vip.masq.test"].age.seconds >= 2 * INTERVAL, 10)
    assert masquerades(topo, 4, f"{VIP}/32")
    assert topo.source_seen(VIP) == netns.NODE_UPLINK_V4
    assert daemon.log().count("cannot resolve vip.masq.test") == 1  # once, not every retry
    assert main(["--socket", daemon.socket, "status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "vip.masq.test" in x)
    assert line.startswith(f"dns       vip.masq.test: {VIP} (answered ")
    assert "; last look-up FAILED: " in line
    m = scrape(topo.node)
    assert m.value("masqd_dns_name_resolved", name="vip.masq.test") == 1
    assert m.value("masqd_dns_name_addresses", name="vip.masq.test") == 1
    assert m.value("masqd_dns_lookup_failing", name="vip.masq.test") == 1
    assert m.value("masqd_dns_answer_age_seconds", name="vip.masq.test") >= 2 * INTERVAL


def test_a_name_with_a_and_aaaa_answers_lands_in_both_families(
    topo: netns.Topology, dns: DnsServer, start_masqd: Callable[..., Masqd]
) -> None:
    dns.answer({"out.masq.test": [INTERNET_V4, INTERNET_V6]})
    start_masqd(
        "nonMasqueradeCIDRs: [10.0.0.0/8, out.masq.test]\n"
        "masqOutBound: true\nmasqOutBoundIPv6: true\n"
    )
    wait_until(lambda: any(f"-d {INTERNET_V6}/128" in r for r in topo.chain(6)), 5)
    assert any(f"-d {INTERNET_V4}/32" in r and "RETURN" in r for r in topo.chain(4))
    assert topo.source_seen(INTERNET_V4) == netns.POD_V4
    assert topo.source_seen(INTERNET_V6) == netns.POD_V6
    assert topo.source_seen(VPC) == netns.NODE_UPLINK_V4  # everything else: masqueraded


def test_a_name_that_does_not_resolve_leaves_the_other_entries_working(
    topo: netns.Topology, dns: DnsServer, start_masqd: Callable[..., Masqd]
) -> None:
    daemon = start_masqd(f"masqueradeCIDRs: [nowhere.masq.test, {VIP}/32]\n")
    assert masquerades(topo, 4, f"{VIP}/32")
    assert topo.source_seen(VIP) == netns.NODE_UPLINK_V4
    wait_until(lambda: names(daemon)["nowhere.masq.test"].error, 5)
    name = names(daemon)["nowhere.masq.test"]
    assert not name.resolved and not name.addresses and "NXDOMAIN" in name.error
    assert "it contributes no rule until it resolves" in daemon.log()
    m = scrape(topo.node)
    assert m.value("masqd_dns_name_resolved", name="nowhere.masq.test") == 0
    assert m.get_value("masqd_dns_answer_age_seconds", name="nowhere.masq.test") is None


def test_a_lookup_that_hangs_does_not_delay_a_config_change(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    netns.run(topo.node, "ip", "route", "add", f"{DROPPING_SERVER}/32", "via", netns.DEST_UPLINK_V4)
    netns.run(topo.dest, "ip", "route", "add", "blackhole", f"{DROPPING_SERVER}/32")
    with node_resolver(topo.node, DROPPING_SERVER):
        daemon = start_masqd("masqueradeCIDRs: [hang.masq.test]\n")
        name = names(daemon)["hang.masq.test"]
        assert not name.resolved and not name.error  # its look-up is still waiting
        put(daemon.config, f"masqueradeCIDRs: [hang.masq.test, {VIP}/32]\n")
        took = time_until(lambda: masquerades(topo, 4, f"{VIP}/32"), CONFIG_CHANGE_BOUND)
        print(f"\n[{topo.backend}] a config change beside a hanging look-up in {took:.3f}s")
        name = names(daemon)["hang.masq.test"]
        assert not name.resolved and not name.error  # still waiting: nothing waited for it
        assert topo.source_seen(VIP) == netns.NODE_UPLINK_V4
        wait_until(lambda: "in time" in names(daemon)["hang.masq.test"].error, 15)


def test_config_render_shows_names_as_they_resolve_now(
    topo: netns.Topology, dns: DnsServer, tmp_path: Path
) -> None:
    dns.answer({"vip.masq.test": [VIP]})
    path = tmp_path / "ip-masq-agent"
    path.write_text("masqueradeCIDRs: [vip.masq.test, nowhere.masq.test]\n")
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            topo.node,
            sys.executable,
            "-m",
            "masqctl.cli",
            "config",
            "render",
            str(path),
            "--family",
            "ipv4",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert f"-A IP-MASQ-AGENT -d {VIP}/32 -m comment" in out.stdout
    assert f"# vip.masq.test resolves to {VIP}" in out.stdout
    assert "# nowhere.masq.test: could not resolve (no such name (NXDOMAIN))" in out.stdout
