"""The nftables backend on the real kernel, IPv4 and IPv6: every golden transaction accepted and
listed back as rendered, the seed's scenarios by packets, the table as `nft list table` prints
it, tampering repaired within 10 s, counters kept, a refused transaction changing nothing, and
cleanup leaving nothing and creating nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from masqd.api.v1 import control_pb2 as pb
from masqd.core import nftlive
from masqd.core.config import parse_config
from masqd.core.model import Family
from masqd.core.nftrules import desired_table
from masqd.core.rules import RenderOptions
from tests.kernel.test_seed_scenarios import EXPECTED_SOURCES, NODE, POD
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.golden import cases
from tests.support.nft import NFTABLES, NftWrapper, element_counters, listing, tables
from tests.support.observability import fetch, scrape
from tests.support.paths import GOLDEN
from tests.support.scenario import REPAIR_BOUND, put, time_until

GOOD = """\
masqueradeCIDRs: [10.10.10.10/32, 2001:db8:1::10/128]
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fc00::/7]
masqOutBound: true
masqOutBoundIPv6: true
"""


@pytest.fixture
def backend() -> str:
    """The topology's iptables mode; masqd itself runs the nftables backend."""
    return "nft"


@pytest.fixture
def start(start_masqd: Callable[..., Masqd]) -> Callable[..., Masqd]:
    """start(config, *flags): masqd with --backend nftables and a 1 s drift check."""
    return lambda config=GOOD, *flags, **kw: start_masqd(config, *NFTABLES, *flags, **kw)


def source(topo: netns.Topology, who: str, v6: bool) -> str:
    return {
        (POD, False): netns.POD_V4,
        (POD, True): netns.POD_V6,
        (NODE, False): netns.NODE_UPLINK_V4,
        (NODE, True): netns.NODE_UPLINK_V6,
    }[(who, v6)]


def matches(ns: str, config: str, family: int) -> bool:
    """Our table in the family is exactly what config renders to."""
    table = desired_table(parse_config(config).config, Family(family), RenderOptions())
    return nftlive.parse_listing(listing(ns, family), Family(family), "masqd").matches(table)


# -- the rendering, round trip ---------------------------------------------------------------

GOLDEN_PAIRS = [(c, f) for c in cases() for f in c.families]


def test_every_golden_transaction_is_accepted_and_listed_back_as_rendered(ns: str) -> None:
    """Each <case>.<family>.nft is accepted by the kernel, twice over (it replaces the table
    it finds), and `nft list table` then reads back as exactly the desired table: what lets a
    sync skip a write when nothing changed."""
    for case, family in GOLDEN_PAIRS:
        text = case.expected_path(family, "nftables").read_text()
        for _ in range(2):
            netns.run(ns, "nft", "-f", "-", input=text)
        table = desired_table(
            parse_config(case.path.read_bytes(), case.parse).config, family, case.render
        )
        listed = netns.run(ns, "nft", "list", "table", *table.spec.split())
        live = nftlive.parse_listing(listed, family, table.name)
        assert nftlive.change(live, table) is None, f"{case.name} {family.label}:\n{listed}"
        netns.run(ns, "nft", "delete", "table", *table.spec.split())


# -- the seed's scenarios ----------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(EXPECTED_SOURCES))
def test_seed_packets_leave_with_the_promised_source(
    scenario: str, topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """UDP from the pod reaches each destination with the pod's or the node's address, IPv4
    and IPv6, exactly as on the iptables backend."""
    start((GOLDEN / f"{scenario}.yaml").read_text())
    addresses = {**netns.DEST_V4, **{f"{k}6": v for k, v in netns.DEST_V6.items()}}
    seen = {dest: topo.source_seen(addresses[dest]) for dest in EXPECTED_SOURCES[scenario]}
    want = {
        dest: source(topo, who, dest.endswith("6"))
        for dest, who in EXPECTED_SOURCES[scenario].items()
    }
    assert seen == want


SEED_SPECIFIC_V4 = (
    "table ip masqd {\n"
    '\tcomment "managed by masqd (ip-masq-agent): changes to this table are reverted"\n'
    "\tset masq {\n"
    "\t\ttype ipv4_addr\n"
    "\t\tflags interval\n"
    "\t\tcounter\n"
    '\t\telements = { 10.10.10.10 counter comment "masqueradeCIDRs: 10.10.10.10/32" }\n'
    "\t}\n"
    "\n"
    "\tset nomasq {\n"
    "\t\ttype ipv4_addr\n"
    "\t\tflags interval\n"
    "\t\tcounter\n"
    '\t\telements = { 10.0.0.0/8 counter comment "nonMasqueradeCIDRs: 10.0.0.0/8", '
    '100.64.230.0/24 counter comment "nonMasqueradeCIDRs: 100.64.230.0/24",\n'
    '\t\t\t     172.16.0.0/12 counter comment "nonMasqueradeCIDRs: 172.16.0.0/12", '
    '192.168.0.0/16 counter comment "nonMasqueradeCIDRs: 192.168.0.0/16" }\n'
    "\t}\n"
    "\n"
    "\tchain postrouting {\n"
    "\t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n"
    "\t\tfib daddr type local return\n"
    "\t\tip daddr @masq masquerade\n"
    "\t\tip daddr 169.254.0.0/16 counter return\n"
    "\t\tip daddr @nomasq return\n"
    "\t}\n"
    "}\n"
)
SEED_SPECIFIC_V6 = """\
table ip6 masqd {
	comment "managed by masqd (ip-masq-agent): changes to this table are reverted"
	set masq {
		type ipv6_addr
		flags interval
		counter
	}

	set nomasq {
		type ipv6_addr
		flags interval
		counter
		elements = { fc00::/7 counter comment "nonMasqueradeCIDRs: fc00::/7" }
	}

	chain postrouting {
		type nat hook postrouting priority srcnat + 10; policy accept;
		fib daddr type local return
		ip6 daddr @masq masquerade
		ip6 daddr fe80::/10 counter return
		ip6 daddr @nomasq return
		counter masquerade
	}
}
"""


def test_seed_table_is_as_nft_list_table_prints_it(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """The seed's specific-addresses scenario: one table per family, its sets and elements
    with the comments naming the config entries, the base chain at srcnat + 10, as `nft -s
    list table` prints them; nothing of ours in the iptables nat table."""
    start((GOLDEN / "seed-specific.yaml").read_text())
    assert listing(topo.node, 4, stateless=True) == SEED_SPECIFIC_V4
    assert listing(topo.node, 6, stateless=True) == SEED_SPECIFIC_V6
    assert topo.chain(4) == [] and topo.chain(6) == []
    assert not any(r.endswith("-j IP-MASQ-AGENT") for r in topo.postrouting(4))


def test_a_masquerade_entry_nested_in_a_nomasq_range_is_masqueraded(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """10.10.10.10/32 inside 10.0.0.0/8, 2001:db8:1::10/128 inside 2001:db8::/32: masqueraded,
    while the rest of each range keeps the pod's address."""
    start(
        "masqueradeCIDRs: [10.10.10.10/32, 2001:db8:1::10/128]\n"
        "nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]\n"
        "masqOutBound: true\nmasqOutBoundIPv6: true\n"
    )
    assert topo.source_seen(netns.DEST_V4["vip"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V6["internet"]) == netns.NODE_UPLINK_V6
    assert topo.source_seen(netns.DEST_V4["vpc"]) == netns.NODE_UPLINK_V4  # not in any list
    # 10.0.0.0/8 and 2001:db8::/32 otherwise keep the pod's address.
    netns.run(topo.dest, "ip", "addr", "add", "10.20.0.5/32", "dev", "eth0")
    netns.run(topo.node, "ip", "route", "add", "10.20.0.5/32", "via", netns.DEST_UPLINK_V4)
    netns.run(topo.dest, "ip", "-6", "addr", "add", "2001:db8:2::5/128", "dev", "eth0", "nodad")
    netns.run(
        topo.node, "ip", "-6", "route", "add", "2001:db8:2::5/128", "via", netns.DEST_UPLINK_V6
    )
    assert topo.source_seen("10.20.0.5") == netns.POD_V4
    assert topo.source_seen("2001:db8:2::5") == netns.POD_V6


# -- tampering --------------------------------------------------------------------------------

PRIORITY_SRCNAT = """\
flush chain {t} postrouting
delete chain {t} postrouting
table {t} {{
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		masquerade
	}}
}}
"""
TAMPERING = {
    "flushed table": lambda t: f"flush table {t}\n",
    "deleted table": lambda t: f"delete table {t}\n",
    "deleted element": lambda t: (
        f"delete element {t} nomasq {{ 172.16.0.0/12 }}\n"
        if t.startswith("ip ")
        else f"delete element {t} nomasq {{ fc00::/7 }}\n"
    ),
    "changed chain priority": lambda t: PRIORITY_SRCNAT.format(t=t),
    "flushed ruleset": lambda t: "flush ruleset\n",
}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_tampering_is_repaired_within_10s(
    tampering: str, family: int, topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """Someone changes our table (or wipes the ruleset): within 10 s it is as desired again,
    and the pod's traffic is decided by it again."""
    daemon = start()
    table = f"{'ip' if family == 4 else 'ip6'} masqd"
    netns.run(topo.node, "nft", "-f", "-", input=TAMPERING[tampering](table))
    assert not matches(topo.node, GOOD, family)
    seconds = time_until(lambda: matches(topo.node, GOOD, family), REPAIR_BOUND)
    print(f"{tampering} ({family}) repaired in {seconds:.2f}s")
    kept = (
        (netns.DEST_V4["vpc"], netns.POD_V4)
        if family == 4
        else (netns.DEST_V6["ula"], netns.POD_V6)
    )
    assert topo.source_seen(kept[0]) == kept[1]
    assert "drift_repair" in daemon.log()


# -- counters ---------------------------------------------------------------------------------


def test_counters_survive_a_noop_sync_and_an_unrelated_list_change(
    topo: netns.Topology, start: Callable[..., Masqd], tmp_path: Path
) -> None:
    """Traffic through two elements; then a Resync with nothing to change, and a config change
    that adds and removes other entries: neither touches those elements' counters, because
    the first writes nothing and the second only an element diff."""
    daemon = start()
    assert topo.source_seen(netns.DEST_V4["vip"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V4["vpc"]) == netns.POD_V4
    assert topo.source_seen(netns.DEST_V6["ula"]) == netns.POD_V6
    before = {
        4: element_counters(topo.node, 4, "masq"),
        6: element_counters(topo.node, 6, "nomasq"),
    }
    before[4] |= element_counters(topo.node, 4, "nomasq")
    assert before[4]["10.10.10.10"] >= 1 and before[4]["172.16.0.0/12"] >= 1
    assert before[6]["fc00::/7"] >= 1

    response = daemon.stub().Resync(pb.ResyncRequest(), timeout=10)
    assert all(r.ok and not r.changed for r in response.results)
    after_noop = element_counters(topo.node, 4, "masq") | element_counters(topo.node, 4, "nomasq")
    assert after_noop == before[4]

    put(
        daemon.config,
        GOOD.replace("10.0.0.0/8, ", "").replace(
            "fc00::/7", "fc00::/7, 198.51.100.0/24, 2001:db8:ab::/48"
        ),
    )
    wait_until(lambda: "198.51.100.0/24" in listing(topo.node, 4), 5)
    wait_until(lambda: "2001:db8:ab::/48" in listing(topo.node, 6), 5)
    now = element_counters(topo.node, 4, "masq") | element_counters(topo.node, 4, "nomasq")
    assert "10.0.0.0/8" not in now and now["198.51.100.0/24"] == 0
    assert now["10.10.10.10"] == before[4]["10.10.10.10"]
    assert now["172.16.0.0/12"] == before[4]["172.16.0.0/12"]
    assert element_counters(topo.node, 6, "nomasq")["fc00::/7"] == before[6]["fc00::/7"]


# -- a refused transaction ------------------------------------------------------------------


def test_a_refused_transaction_is_not_retried_within_the_sync_and_leaves_the_table(
    topo: netns.Topology,
    start_masqd: Callable[..., Masqd],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel refuses masqd's transaction (here: a loop appended to it): the sync fails
    with kind REJECTED after one attempt, the runner tries again only after its pause (0.5 s,
    then doubling), and the table stays exactly as it was, counters and all."""
    wrapper = NftWrapper.create(tmp_path / "bin")
    monkeypatch.setenv("PATH", wrapper.environ_path())
    daemon = start_masqd(GOOD, "--backend", "nftables", "--drift-check-interval", "600")
    assert topo.source_seen(netns.DEST_V4["vip"]) == netns.NODE_UPLINK_V4
    before = {f: listing(topo.node, f) for f in (4, 6)}
    wrapper.refuse_marker.touch()
    fed = wrapper.transactions()
    put(daemon.config, GOOD.replace("172.16.0.0/12", "192.168.0.0/16"))

    def failed() -> pb.FamilyStatus | None:
        f = next(f for f in daemon.status().families if f.family == pb.FAMILY_IPV4)
        return f if f.last_sync.reason == pb.SYNC_REASON_CONFIG_CHANGE else None

    status = wait_until(failed, 10)
    assert not status.last_sync.ok and status.last_sync.error_kind == pb.ERROR_KIND_REJECTED
    assert (
        "loop" in status.last_sync.error.lower()
        or "too many links" in status.last_sync.error.lower()
    )
    assert wrapper.transactions() == fed + 1, "one attempt for the IPv4 change, no retry in it"
    time.sleep(1.2)  # the runner's first retry comes 0.5 s after the failure, the next 1 s later
    assert wrapper.transactions() == fed + 2, "the runner's retries are spaced out"
    assert listing(topo.node, 4) == before[4]
    assert listing(topo.node, 6) == before[6]


_APPLY = """
import json, sys
from masqd.core.errors import ApplyError
from masqd.core.model import Family
from masqd.host.nftables import Nft
nft = Nft(Family.IPV4, "masqd")
if sys.argv[1] == "prepared":
    nft.prepare()
try:
    nft.apply(sys.stdin.read())
    print(json.dumps("ok"))
except ApplyError as e:
    print(json.dumps({"kind": e.kind.value, "error": str(e)}))
finally:
    nft.close()
"""


@pytest.mark.parametrize("started", ["on the spot", "prepared"])
def test_a_transaction_the_kernel_refuses_changes_nothing(started: str, ns: str) -> None:
    """All of a transaction or none of it, also through an `nft -f -` started ahead."""
    netns.run(ns, "nft", "-f", "-", input=(GOLDEN / "seed-specific.ipv4.nft").read_text())
    before = listing(ns, 4)
    text = (
        "delete element ip masqd nomasq { 10.0.0.0/8 }\n"
        "add chain ip masqd loop\nadd rule ip masqd loop jump loop\n"
        "add rule ip masqd postrouting jump loop\n"
    )
    out = netns.run(
        ns, sys.executable, "-c", _APPLY, "prepared" if started == "prepared" else "", input=text
    )
    result = json.loads(out)
    assert isinstance(result, dict) and result["kind"] == "rejected", result
    assert listing(ns, 4) == before


# -- cleanup, SIGTERM, auto --------------------------------------------------------------------


def cleanup(ns: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "masqd", "cleanup", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cleanup_on_an_empty_node_creates_nothing(ns: str) -> None:
    """Nothing to remove: no nftables table and no legacy table appears (reading legacy
    tables would create them, so a kernel without any is not read)."""
    result = cleanup(ns)
    assert result.returncode == 0, result.stderr
    assert netns.run(ns, "nft", "list", "ruleset") == ""
    for names in ("ip_tables_names", "ip6_tables_names"):
        assert netns.run(ns, "cat", f"/proc/net/{names}") == ""


def test_sigterm_keeps_the_table_and_cleanup_removes_it(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """SIGTERM leaves our tables (traffic keeps its decisions across an upgrade); `masqd
    cleanup` then removes both and nothing else."""
    netns.run(topo.node, "nft", "add", "table", "inet", "someone-else")
    daemon = start()
    assert daemon.stop() < 5.0
    assert set(tables(topo.node)) >= {"ip masqd", "ip6 masqd", "inet someone-else"}
    assert topo.source_seen(netns.DEST_V4["vip"]) == netns.NODE_UPLINK_V4
    result = cleanup(topo.node)
    assert result.returncode == 0, result.stderr
    assert "removed table ip masqd" in result.stdout and "removed table ip6 masqd" in result.stdout
    assert set(tables(topo.node)) == {"inet someone-else"}
    assert cleanup(topo.node).stdout == ""  # twice is once


def test_auto_picks_nftables_beside_kube_proxy_in_nftables_mode(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """--backend auto with kube-proxy's `table ip kube-proxy` present: the nftables backend,
    and status says why; without it, the iptables backend as before."""
    netns.run(topo.node, "nft", "add", "table", "ip", "kube-proxy")
    daemon = start_masqd(GOOD, "--backend", "auto")
    status = daemon.status()
    assert status.table == "masqd" and "kube-proxy runs in nftables mode" in status.backend_choice
    assert {f.backend for f in status.families} == {"nftables"}
    assert "table ip masqd" in listing(topo.node, 4)
    daemon.stop()
    cleanup(topo.node, "--backend", "nftables")
    netns.run(topo.node, "nft", "delete", "table", "ip", "kube-proxy")
    daemon = start_masqd(GOOD, "--backend", "auto")
    assert {f.backend for f in daemon.status().families} == {"nft"}
    assert listing(topo.node, 4) == ""


# -- what masqd reports ---------------------------------------------------------------------


def test_status_rules_and_metrics_show_the_table_with_element_counters(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """masqctl status names the backend; masqctl rules lists each element's counter; the
    metrics' per-CIDR counters come from the set elements."""
    daemon = start()
    assert topo.source_seen(netns.DEST_V4["vip"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4

    def masqctl(*argv: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "masqctl.cli", "--socket", daemon.socket, *argv],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout

    status = masqctl("status")
    assert "table masqd, nftables backend (--backend nftables)" in status.splitlines()[0]
    assert status.count("nftables  idle") == 2
    rules = masqctl("rules", "--family", "ipv4")
    assert rules.startswith("Table ip masqd (ipv4): in sync with the config")
    (vip,) = [line for line in rules.splitlines() if "10.10.10.10 " in line]
    assert int(vip.split()[0]) >= 1
    data = json.loads(masqctl("-o", "json", "rules", "--family", "ipv4"))
    elements = {e["cidr"]: e for e in data["families"][0]["table"]["elements"]}
    assert elements["10.10.10.10"]["set"] == "masq"
    assert int(elements["10.10.10.10"]["packets"]) >= 1

    m = scrape(topo.node)
    assert (
        m.value(
            "masqd_rule_packets_total", family="ipv4", target="MASQUERADE", cidr="10.10.10.10/32"
        )
        >= 1
    )
    assert (
        m.value("masqd_rule_packets_total", family="ipv4", target="MASQUERADE", cidr="0.0.0.0/0")
        >= 1
    )
    assert (
        m.value("masqd_rule_packets_total", family="ipv4", target="RETURN", cidr="172.16.0.0/12")
        == 0
    )
    code, body = fetch(topo.node, "/readyz")
    assert code == 200 and json.loads(body)["ready"] is True


def test_a_table_left_by_an_earlier_nft_table_is_removed(
    topo: netns.Topology, start: Callable[..., Masqd]
) -> None:
    """After --nft-table changes, the next masqd deletes the old tables (they carry our comment)
    in the transaction that writes its own; a table of that name without our comment stays."""
    start(GOOD, "--nft-table", "masqd-old").stop()
    netns.run(topo.node, "nft", "add", "table", "ip", "masqd-foreign")
    assert set(tables(topo.node)) >= {"ip masqd-old", "ip6 masqd-old"}
    daemon = start()
    assert set(tables(topo.node)) == {"ip masqd", "ip6 masqd", "ip masqd-foreign"}
    assert "table ip masqd-old" in daemon.log() and "table ip6 masqd-old" in daemon.log()
    assert topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4


def test_a_table_another_running_masqd_manages_is_not_a_leftover(
    topo: netns.Topology, start: Callable[..., Masqd], tmp_path: Path
) -> None:
    """Two masqds in one network namespace on other tables (and chains): neither deletes the
    other's table as a leftover of an earlier --nft-table; a third on a table in use is
    refused, naming it."""
    start(GOOD)
    start(GOOD, "--nft-table", "masqd-two", "--masq-chain", "TWO-MASQ", "--metrics-address", "")
    time.sleep(2.5)  # drift checks of both (1 s)
    assert {"ip masqd", "ip6 masqd", "ip masqd-two", "ip6 masqd-two"} <= set(tables(topo.node))
    config = tmp_path / "third"
    config.write_text(GOOD)
    argv = ["ip", "netns", "exec", topo.node, sys.executable, "-m", "masqd", *NFTABLES]
    argv += ["--config", str(config), "--socket", str(tmp_path / "third.sock")]
    argv += ["--nft-table", "masqd-two", "--masq-chain", "THREE-MASQ", "--metrics-address", ""]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert "already manages table masqd-two in this network namespace" in refused.stderr
