"""--config-dir on a real kernel: two files merge into the seed's "some addresses" rules, a bad
file keeps its own last good content while another file's change applies, a conflict is
refused and shown, files appear and disappear, and the kubelet's `..data` swap is followed.
The merge does not depend on the iptables backend, so these run on nft alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from masqctl.cli import main
from masqd.api.v1 import control_pb2 as pb
from tests.support import netns
from tests.support.daemon import Masqd, running, wait_until
from tests.support.observability import scrape
from tests.support.paths import GOLDEN
from tests.support.scenario import CONFIG_CHANGE_BOUND, desired, project, put, time_until

SEED = (GOLDEN / "seed-specific.yaml").read_text()
# The seed's "some addresses" config as a cloud-managed file and a user's file.
CLOUD = """\
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 100.64.230.0/24]
masqLinkLocal: false
masqLinkLocalIPv6: false
"""
USER = """\
masqueradeCIDRs: [10.10.10.10/32]
nonMasqueradeCIDRs: [172.16.0.0/12, 192.168.0.0/16, 'fc00::/7']
masqOutBound: false
masqOutBoundIPv6: true
resyncInterval: 60s
"""
STATE = pb.ConfigFile.State


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.mkdir()
    return path


@pytest.fixture
def daemon(topo: netns.Topology, tmp_path: Path, confdir: Path) -> Iterator[Masqd]:
    put(confdir / "ip-masq-agent-cloud", CLOUD)
    put(confdir / "ip-masq-agent-user", USER)
    with running(
        topo.node, tmp_path, None, "--config-dir", str(confdir), "--iptables-mode", topo.backend
    ) as d:
        yield d


def files(daemon: Masqd) -> dict[str, tuple[int, str]]:
    return {f.name: (f.state, f.error) for f in daemon.status().config.files}


@pytest.mark.parametrize("backend", ["nft"])
def test_two_files_merge_into_the_seeds_rules(
    topo: netns.Topology, daemon: Masqd, capsys: pytest.CaptureFixture[str]
) -> None:
    assert topo.chain(4) == desired(SEED, 4) and topo.chain(6) == desired(SEED, 6)
    assert topo.source_seen(netns.DEST_V4["vip"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V4["cgnat"]) == netns.POD_V4
    status = daemon.status().config
    assert status.directory and not status.error
    assert files(daemon) == {
        "ip-masq-agent-cloud": (STATE.APPLIED, ""),
        "ip-masq-agent-user": (STATE.APPLIED, ""),
    }
    rules = daemon.stub().GetRules(pb.GetRulesRequest(), timeout=10).families[0]
    origins = {r.destination: r.origin for r in rules.live}
    assert origins["100.64.230.0/24"] == "nonMasqueradeCIDRs 100.64.230.0/24 in ip-masq-agent-cloud"
    assert origins["10.10.10.10/32"] == "masqueradeCIDRs 10.10.10.10/32 in ip-masq-agent-user"
    assert main(["--socket", daemon.socket, "rules", "--family", "ipv4"]) == 0
    listed = capsys.readouterr().out
    assert (
        "100.64.230.0/24 /* ip-masq-agent: local traffic is not subject to MASQUERADE */  <- "
        in listed
    )
    assert "<- nonMasqueradeCIDRs 100.64.230.0/24 in ip-masq-agent-cloud" in listed


@pytest.mark.parametrize("backend", ["nft"])
def test_a_bad_file_keeps_its_content_while_another_files_change_applies(
    topo: netns.Topology, daemon: Masqd, confdir: Path
) -> None:
    put(confdir / "ip-masq-agent-cloud", "nonMasqueradeCIDRs: [10.0.0.1/8]\n")
    wait_until(lambda: files(daemon)["ip-masq-agent-cloud"][0] == STATE.KEPT, 3)
    assert "host bits are set" in daemon.status().config.error
    put(confdir / "ip-masq-agent-user", USER.replace("10.10.10.10/32", "203.0.113.10/32"))
    expected = desired(SEED.replace("10.10.10.10/32", "203.0.113.10/32"), 4)
    took = time_until(lambda: topo.chain(4) == expected, CONFIG_CHANGE_BOUND)
    print(f"\n[{topo.backend}] one file's change beside a bad file in the kernel in {took:.3f}s")
    assert topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V4["cgnat"]) == netns.POD_V4  # the bad file's last good
    assert "ip-masq-agent-cloud" in daemon.log() and "last good content" in daemon.log()


@pytest.mark.parametrize("backend", ["nft"])
def test_a_conflict_is_refused_and_shown(
    topo: netns.Topology, daemon: Masqd, confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both files set masqOutBound; the later one (by name) changes it: refused, kept as it was."""
    cloud = CLOUD.replace("100.64.230.0/24", "100.64.230.0/24, 198.51.100.0/24")
    put(confdir / "ip-masq-agent-cloud", cloud + "masqOutBound: false\n")
    wait_until(lambda: daemon.status().config.generation == 2, 3)
    wait_until(lambda: any("198.51.100.0/24" in r for r in topo.chain(4)), 3)
    before = topo.chain(4)
    put(confdir / "ip-masq-agent-user", USER.replace("masqOutBound: false", "masqOutBound: true"))
    wait_until(lambda: files(daemon)["ip-masq-agent-user"][0] == STATE.KEPT, 3)
    error = files(daemon)["ip-masq-agent-user"][1]
    assert error == (
        "masqOutBound is true here but false in ip-masq-agent-cloud, which comes first; "
        "set it in one file only"
    )
    assert "ip-masq-agent-user: masqOutBound is true here" in daemon.status().config.error
    assert main(["--socket", daemon.socket, "status"]) == 0
    out = capsys.readouterr().out
    assert "file    ip-masq-agent-cloud: applied" in out
    assert (
        "file    ip-masq-agent-user: REFUSED, its last good content stays in force: "
        "masqOutBound is true here" in out
    )
    assert topo.chain(4) == before and daemon.status().config.generation == 2
    m = scrape(topo.node)
    assert m.value("masqd_config_file_state", file="ip-masq-agent-user", state="kept") == 1
    assert m.value("masqd_config_file_state", file="ip-masq-agent-user", state="applied") == 0
    assert m.value("masqd_config_file_state", file="ip-masq-agent-cloud", state="applied") == 1
    assert m.value("masqd_config_rejected") == 1
    assert topo.source_seen(netns.DEST_V4["internet"]) == netns.POD_V4


@pytest.mark.parametrize("backend", ["nft"])
def test_files_appearing_and_disappearing(
    topo: netns.Topology, daemon: Masqd, confdir: Path
) -> None:
    extra = confdir / "ip-masq-extra"
    put(extra, "masqueradeCIDRs: [172.16.0.10/32]\n")
    time_until(lambda: topo.source_seen(netns.DEST_V4["vpc"], timeout=1) == netns.NODE_UPLINK_V4, 5)
    assert "ip-masq-extra" in files(daemon)
    extra.unlink()
    time_until(lambda: topo.chain(4) == desired(SEED, 4), CONFIG_CHANGE_BOUND)
    assert topo.source_seen(netns.DEST_V4["vpc"]) == netns.POD_V4
    assert "ip-masq-extra" not in files(daemon)


@pytest.mark.parametrize("backend", ["nft"])
def test_the_kubelets_data_swap_of_a_projected_volume(topo: netns.Topology, tmp_path: Path) -> None:
    root = tmp_path / "projected"
    root.mkdir()
    project(root, {"ip-masq-agent-cloud": CLOUD, "ip-masq-agent-user": USER}, 1)
    with running(
        topo.node, tmp_path, None, "--config-dir", str(root), "--iptables-mode", topo.backend
    ):
        assert topo.chain(4) == desired(SEED, 4)
        project(root, {"ip-masq-agent-cloud": CLOUD + "masqOutBound: true\n"}, 2)
        expected = desired(CLOUD + "masqOutBound: true\n", 4)
        took = time_until(lambda: topo.chain(4) == expected, CONFIG_CHANGE_BOUND)
        print(f"\n[{topo.backend}] a ..data swap in the kernel in {took:.3f}s")
        assert topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4
