"""masqd's life on a node: defaults without a file, SIGTERM/SIGINT leave the rules and exit
within 5 s, a restart with the same config rewrites nothing (counters survive), `masqd
cleanup` leaves no trace in either family or backend and removes nothing that is not ours
(nor creates legacy tables), and one chain has one masqd per network namespace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from masqd.core.config import parse_config
from masqd.core.model import Family
from masqd.core.rules import RenderOptions, desired_rules, jump_rule, render
from tests.conftest import BACKENDS
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.paths import SHARED
from tests.support.scenario import GOOD, desired, put, save_nat, send_traffic, snapshot

CHAIN = "IP-MASQ-AGENT"
EXIT_BOUND = 5.0


def defaults(family: int) -> list[str]:
    return desired_rules(parse_config(b"").config, Family(family), RenderOptions())


def cleanup(topo: netns.Topology, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", topo.node, sys.executable, "-m", "masqd", "cleanup", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def traces(topo: netns.Topology, chain: str) -> list[str]:
    """Every line naming chain in the nat table of both families and both backends."""
    found = []
    for mode in BACKENDS:
        for tool in ("iptables", "ip6tables"):
            out = netns.run(topo.node, f"{tool}-{mode}-save", "-t", "nat")
            found += [f"{tool}-{mode}: {line}" for line in out.splitlines() if chain in line]
    return found


def test_missing_file_means_defaults_and_absent_keys_return_to_them(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """No file: defaults. A file: its rules. The file removed, or a key dropped: defaults again."""
    daemon = start_masqd(None)
    assert topo.chain(4) == defaults(4) and topo.chain(6) == defaults(6)
    assert daemon.status().config.using_defaults
    put(daemon.config, GOOD)
    wait_until(lambda: topo.chain(4) == desired(GOOD, 4), 3)
    daemon.config.unlink()
    wait_until(lambda: topo.chain(4) == defaults(4) and topo.chain(6) == defaults(6), 3)
    assert daemon.status().config.using_defaults
    put(daemon.config, "masqOutBound: true\nmasqLinkLocal: true\n")
    wait_until(lambda: topo.chain(4) == desired("masqOutBound: true\nmasqLinkLocal: true\n", 4), 3)
    put(daemon.config, "masqOutBound: true\n")  # masqLinkLocal dropped: back to false
    wait_until(lambda: topo.chain(4) == desired("masqOutBound: true\n", 4), 3)
    assert topo.chain(4)[0].startswith(f"-A {CHAIN} -d 169.254.0.0/16 ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_exits_within_5s_leaving_rules(
    sig: signal.Signals, topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """SIGTERM or SIGINT: masqd exits 0 within 5 s and the rules and counters stay in place."""
    daemon = start_masqd(GOOD)
    send_traffic(topo)
    before = snapshot(topo)
    took = daemon.stop(sig)
    print(f"\n[{topo.backend}] {sig.name} -> exit in {took:.3f}s")
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.log()
    assert took <= EXIT_BOUND
    assert snapshot(topo) == before
    assert "stopping; the rules stay in place" in daemon.log()
    # Nothing of masqd (supervisor or workers) is left running in the node's namespace.
    assert netns.run(None, "ip", "netns", "pids", topo.node).split() == []


def test_restart_with_unchanged_config_does_not_rewrite_the_chain(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """A new masqd with the same config finds the chain in sync: no restore, counters survive."""
    first = start_masqd(GOOD)
    send_traffic(topo)
    first.stop()
    before = snapshot(topo)
    counted = [line for line in before[4] if CHAIN in line and not line.startswith("[0:0]")]
    assert counted, "the test needs non-zero counters on our chain"
    second = start_masqd(GOOD)
    status = second.status()
    assert all(f.last_sync.ok and not f.last_sync.changed for f in status.families)
    time.sleep(1.2)  # a drift check too leaves it alone
    assert snapshot(topo) == before


def test_cleanup_leaves_no_trace_in_either_family_or_backend(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """After masqd ran, `masqd cleanup` removes chains and jumps everywhere; twice is a no-op."""
    daemon = start_masqd(GOOD)
    # The other backend holds our rules too, as after a node switched modes.
    other = "legacy" if topo.backend == "nft" else "nft"
    for family in Family:
        tool = f"{'iptables' if family == Family.IPV4 else 'ip6tables'}-{other}-restore"
        text = render(parse_config(GOOD).config, family, RenderOptions())
        netns.run(topo.node, tool, "--noflush", input=text)
    daemon.stop()
    assert len(traces(topo, CHAIN)) > 4
    result = cleanup(topo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"removed {CHAIN}") == 4
    assert traces(topo, CHAIN) == []
    again = cleanup(topo)
    assert (again.returncode, again.stdout) == (0, "")


@pytest.mark.parametrize("backend", ["nft"])
def test_cleanup_with_masq_chain_removes_only_that_chain(topo: netns.Topology) -> None:
    """`masqd cleanup --masq-chain X` removes X and its jump, and nothing of another chain."""
    for chain in (CHAIN, "OTHER-MASQ"):
        for family in Family:
            tool = f"{'iptables' if family == Family.IPV4 else 'ip6tables'}-nft-restore"
            text = render(parse_config(GOOD).config, family, RenderOptions(chain=chain))
            netns.run(topo.node, tool, "--noflush", input=text)
    result = cleanup(topo, "--masq-chain", "OTHER-MASQ")
    assert result.returncode == 0, result.stderr
    assert traces(topo, "OTHER-MASQ") == []
    assert topo.chain(4) == desired(GOOD, 4)
    assert [r for r in topo.postrouting(6) if r.endswith(f"-j {CHAIN}")] == [jump_rule(CHAIN)]


def test_foreign_rules_survive_masqd_and_cleanup(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Rules outside our chain and jump (kube-proxy's) are untouched by syncs and by cleanup."""
    topo.iptables(4, "-t", "nat", "-N", "KUBE-POSTROUTING")
    topo.iptables(4, "-t", "nat", "-A", "KUBE-POSTROUTING", "-j", "RETURN")
    topo.iptables(4, "-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING")
    foreign = [line for line in save_nat(topo, 4) if "KUBE-" in line]
    daemon = start_masqd(GOOD)
    put(daemon.config, "masqOutBound: false\n")
    wait_until(lambda: topo.chain(4) == desired("masqOutBound: false\n", 4), 3)
    assert [line for line in save_nat(topo, 4) if "KUBE-" in line] == foreign
    daemon.stop()
    assert cleanup(topo).returncode == 0
    assert [line for line in save_nat(topo, 4) if "KUBE-" in line] == foreign


@pytest.mark.parametrize("backend", ["nft"])
def test_killed_supervisor_leaves_no_orphan_workers(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """SIGKILL of masqd itself: its workers exit too, leaving no process in the namespace."""
    daemon = start_masqd(GOOD)
    assert all(f.pid > 0 for f in daemon.status().families)
    daemon.stop(signal.SIGKILL)
    try:
        wait_until(lambda: netns.run(None, "ip", "netns", "pids", topo.node).split() == [], 5)
    finally:
        for pid in netns.run(None, "ip", "netns", "pids", topo.node).split():
            subprocess.run(["kill", "-9", pid], check=False)
    assert topo.chain(4) == desired(GOOD, 4)


# -- cleanup that cannot hurt, and one masqd per chain ---------------------------------------


def load_busy_node(topo: netns.Topology) -> dict[int, list[str]]:
    """The busy node's nat table (kube-proxy, Calico, a CNI's portmap, ip-masq-agent) from
    ../shared, loaded into the node namespace; returns its rules as iptables-save prints them."""
    tables = SHARED / "cases" / "nat-tables"
    netns.run(topo.node, "ipset", "restore", "-exist", input=(tables / "node.ipset").read_text())
    for family in (4, 6):
        text = (tables / f"node-v{family}.rules").read_text()
        topo.iptables(family, "-t", "nat", "-F")  # (only the builtin chains exist yet)
        netns.run(
            topo.node,
            f"{'iptables' if family == 4 else 'ip6tables'}-{topo.backend}-restore",
            input=text,
        )
    return {family: rules(topo, family) for family in (4, 6)}


def rules(topo: netns.Topology, family: int) -> list[str]:
    """The nat table's chains and rules, without counters."""
    tool = f"{'iptables' if family == 4 else 'ip6tables'}-{topo.backend}-save"
    out = netns.run(topo.node, tool, "-t", "nat")
    return [line for line in out.splitlines() if line.startswith(("-A", ":"))]


def test_cleanup_of_kube_proxys_chain_leaves_it_intact(topo: netns.Topology) -> None:
    """`masqd cleanup --masq-chain KUBE-POSTROUTING` beside kube-proxy: its chain and jump
    carry no masqd comment, so nothing is removed (before, both were deleted); a plain
    cleanup then removes our chain and jump and not one of the other owners' rules."""
    before = load_busy_node(topo)
    result = cleanup(topo, "--masq-chain", "KUBE-POSTROUTING", "--iptables-mode", topo.backend)
    assert result.returncode == 0, result.stderr
    assert {family: rules(topo, family) for family in (4, 6)} == before
    assert "KUBE-POSTROUTING left in place: no POSTROUTING jump to it carries masqd's comment" in (
        result.stdout
    )
    assert "removed" not in result.stdout
    assert cleanup(topo, "--iptables-mode", topo.backend).returncode == 0
    for family in (4, 6):
        left = rules(topo, family)
        assert left == [line for line in before[family] if CHAIN not in line]
        assert len(left) > 300


@pytest.mark.parametrize("backend", ["nft"])
def test_cleanup_on_an_nft_only_node_creates_no_legacy_table(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Before, cleanup read the legacy tables too and so created empty legacy nat tables,
    after which every iptables-nft-save on the node warned that legacy tables are present."""
    start_masqd(GOOD).stop()
    names = ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")
    read = ["cat", *names]
    assert netns.run(topo.node, *read).split() == []
    result = cleanup(topo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"removed {CHAIN}") == 2  # both families, nft
    assert netns.run(topo.node, *read).split() == []
    saved = netns.run(topo.node, "iptables-nft-save", "-t", "nat")
    assert "legacy tables present" not in saved and CHAIN not in saved


@pytest.mark.parametrize("backend", ["nft"])
def test_a_second_masqd_on_the_same_chain_is_refused_naming_the_first(
    topo: netns.Topology, start_masqd: Callable[..., Masqd], tmp_path: Path
) -> None:
    """Two masqds on different sockets in one network namespace would fight over one chain:
    the second refuses (exit 1) naming the first's pid; on another chain it runs."""
    first = start_masqd(GOOD)
    workdir = tmp_path / "second"
    workdir.mkdir()
    config = workdir / "ip-masq-agent"
    config.write_text(GOOD)
    argv = ["ip", "netns", "exec", topo.node, sys.executable, "-m", "masqd", "--config"]
    argv += [str(config), "--socket", str(workdir / "masqd.sock"), "--metrics-address", ""]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert f"another masqd (pid {first.pid}: " in refused.stdout + refused.stderr
    assert "already manages chain IP-MASQ-AGENT in this network namespace" in (
        refused.stdout + refused.stderr
    )
    other = start_masqd(GOOD, "--masq-chain", "OTHER-MASQ", "--metrics-address", "")
    assert other.status().chain == "OTHER-MASQ"
    # Neither takes the other's chain for a leftover of an earlier --masq-chain: both stay.
    time.sleep(2.5)  # drift checks of both (1 s), and the first's repair if it had removed it
    postrouting = topo.postrouting(4)
    assert jump_rule("OTHER-MASQ") in postrouting and jump_rule(CHAIN) in postrouting
    assert topo.chain(4) == desired(GOOD, 4) and topo.chain(4, "OTHER-MASQ")


_CLAIMS = """
import sys
from masqd.host import chainlock
claim = chainlock.claim("MINE")
looks = [chainlock.held("MINE") for _ in range(40)]  # more than the claim's backlog of 16
assert all(looks) and not chainlock.held("OTHER") and not chainlock.held_table("MINE")
try:
    chainlock.claim("MINE")
except chainlock.ChainInUse as e:
    print(e)
claim.close()
print(chainlock.held("MINE"))
"""


def test_asking_whether_a_chain_is_held_leaves_nothing_behind(ns: str) -> None:
    """held() tells a claimed chain from another, in this network namespace, however often it
    is asked, and leaves the holder's pid readable to a second masqd's refusal."""
    result = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _CLAIMS],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    *refusal, after = result.stdout.strip().splitlines()  # the pid's command line has newlines
    assert "another masqd (pid " in refusal[0]
    assert "already manages chain MINE in this network namespace" in refusal[-1]
    assert after == "False"
