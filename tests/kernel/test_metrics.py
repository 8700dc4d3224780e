"""masqd's /metrics, /healthz and /readyz, scraped from a real masqd in a node namespace: every
metric moves as the behaviour it names."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from collections.abc import Callable

import pytest
from google.protobuf.duration_pb2 import Duration

from masqd.api.v1 import control_pb2 as pb
from masqd.core.flags import parse_address
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.observability import IptablesWrapper, Samples, fetch, scrape
from tests.support.scenario import put

GOOD = "masqOutBound: true\nnonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n"
OTHER = "masqOutBound: true\nnonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n"
nft_only = pytest.mark.parametrize("backend", ["nft"])


def test_parse_address() -> None:
    """--metrics-address takes host:port, [v6]:port and :port; anything else is refused."""
    assert parse_address("127.0.0.1:9153") == ("127.0.0.1", 9153)
    assert parse_address("[::1]:9153") == ("::1", 9153)
    assert parse_address(":9153") == ("0.0.0.0", 9153)
    for bad in ("9153", "localhost", "host:http", "1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


@nft_only
def test_startup_state_is_scraped(topo: netns.Topology, start_masqd: Callable[..., Masqd]) -> None:
    """After startup: one config loaded, one changed startup sync per family, the rules and
    in-sync per family, the interval, and both probes passing."""
    before = time.time()
    start_masqd(GOOD + "resyncInterval: 45s\n")
    m = scrape(topo.node)
    assert m.value("masqd_config_loads_total", result="success") == 1
    assert m.value("masqd_config_loads_total", result="failure") == 0
    assert m.value("masqd_config_generation") == 1
    assert m.value("masqd_config_rejected") == 0
    assert m.value("masqd_resync_interval_seconds") == 45
    assert m.value("masqd_resync_interval_override") == 0
    for family, version in (("ipv4", 4), ("ipv6", 6)):
        assert m.value("masqd_rules", family=family) == len(topo.chain(version))
        assert m.value("masqd_in_sync", family=family) == 1
        assert m.value("masqd_syncs_total", family=family, reason="startup", result="changed") == 1
        assert m.value("masqd_sync_duration_seconds_count", family=family) == 1
        assert m.value("masqd_resync_requests_total", family=family, source="startup") == 1
        assert m.value("masqd_worker_restarts_total", family=family) == 0
        assert m.value("masqd_sync_pending_seconds", family=family) == 0
        last = m.value("masqd_last_successful_sync_timestamp_seconds", family=family)
        assert before <= last <= time.time()
    assert m.value("process_resident_memory_bytes") > 0
    code, body = fetch(topo.node, "/healthz")
    assert (code, json.loads(body)["healthy"]) == (200, True)
    code, body = fetch(topo.node, "/readyz")
    assert (code, json.loads(body)) == (
        200,
        {"ready": True, "families": {"ipv4": True, "ipv6": True}},
    )


@nft_only
def test_rejected_config_counts_a_failure(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """A rejected file counts one failure and sets config_rejected, leaving the generation;
    a good file afterwards counts a success, a new generation and a config_change request."""
    daemon = start_masqd(GOOD)
    put(daemon.config, "nonMasqueradeCIDRs: [10.0.0.1/8]\n")
    m = wait_until(lambda: _when(scrape(topo.node), "masqd_config_rejected", 1))
    assert m.value("masqd_config_loads_total", result="failure") == 1
    assert m.value("masqd_config_generation") == 1
    assert m.value("masqd_rules", family="ipv4") == 4
    put(daemon.config, OTHER + "masqueradeCIDRs: [10.10.10.10/32]\n")
    m = wait_until(lambda: _when(scrape(topo.node), "masqd_config_generation", 2))
    m = wait_until(lambda: _when(scrape(topo.node), "masqd_rules", 5, family="ipv4"))
    assert m.value("masqd_config_loads_total", result="success") == 2
    assert m.value("masqd_config_loads_total", result="failure") == 1
    assert m.value("masqd_config_rejected") == 0
    assert m.value("masqd_resync_requests_total", family="ipv4", source="config_change") == 1
    assert (
        m.value("masqd_syncs_total", family="ipv4", reason="config_change", result="changed") == 1
    )


@nft_only
def test_config_change_that_keeps_the_rules_requests_no_sync(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """A new config whose rules are the same (only resyncInterval changed) is loaded as a new
    generation, and no family is asked to sync for it."""
    daemon = start_masqd(GOOD)
    put(daemon.config, GOOD + "resyncInterval: 90s\n")
    m = wait_until(lambda: _when(scrape(topo.node), "masqd_config_generation", 2))
    assert m.value("masqd_config_loads_total", result="success") == 2
    requests = m.matching("masqd_resync_requests_total", source="config_change")
    assert sum(requests.values()) == 0
    syncs = m.matching("masqd_syncs_total", reason="config_change")
    assert sum(syncs.values()) == 0


@nft_only
def test_flushed_chain_counts_a_drift_repair(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Flushing our chain counts a drift repair (sync and request) and in-sync is 1 again."""
    start_masqd(GOOD)
    want = topo.chain(4)
    topo.iptables(4, "-t", "nat", "-F", "IP-MASQ-AGENT")
    m = wait_until(
        lambda: _when(
            scrape(topo.node),
            "masqd_syncs_total",
            1,
            family="ipv4",
            reason="drift_repair",
            result="changed",
        )
    )
    assert m.value("masqd_resync_requests_total", family="ipv4", source="drift") == 1
    assert m.value("masqd_resync_requests_total", family="ipv6", source="drift") == 0
    # In sync again once the repair is verified, a moment after it.
    wait_until(lambda: scrape(topo.node).value("masqd_in_sync", family="ipv4") == 1, 2)
    assert topo.chain(4) == want


def test_packets_raise_rule_counters(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Packets from the pod raise the packet and byte counters of the rule they cross: the
    catch-all MASQUERADE for the internet, the RETURN of 172.16.0.0/12 for the VPC."""
    start_masqd(GOOD)
    m = scrape(topo.node)
    masq4 = {"family": "ipv4", "target": "MASQUERADE", "cidr": "0.0.0.0/0"}
    vpc = {"family": "ipv4", "target": "RETURN", "cidr": "172.16.0.0/12"}
    masq6 = {"family": "ipv6", "target": "MASQUERADE", "cidr": "::/0"}
    for labels in (masq4, vpc, masq6):
        assert m.value("masqd_rule_packets_total", **labels) == 0
    assert topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V4["vpc"]) == netns.POD_V4
    assert topo.source_seen(netns.DEST_V6["internet"]) == netns.NODE_UPLINK_V6
    time.sleep(1.1)  # past the scrape cache
    m = scrape(topo.node)
    for labels in (masq4, vpc, masq6):
        assert m.value("masqd_rule_packets_total", **labels) >= 1
        assert m.value("masqd_rule_bytes_total", **labels) >= 28
    assert (
        m.value("masqd_rule_packets_total", family="ipv4", target="RETURN", cidr="10.0.0.0/8") == 0
    )


@nft_only
def test_concurrent_scrapes_read_the_counters_once(
    topo: netns.Topology, wrapper: IptablesWrapper, start_masqd: Callable[..., Masqd]
) -> None:
    """Eight scrapes at once cost one `iptables-save -c` per family, not eight."""
    start_masqd(GOOD)
    time.sleep(1.1)
    before = wrapper.counter_reads()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        scrapes = list(pool.map(lambda _: scrape(topo.node), range(8)))
    assert all(s.matching("masqd_rule_packets_total", family="ipv6") for s in scrapes)
    assert wrapper.counter_reads() - before <= 2 * 2  # a slow start may straddle one expiry


@nft_only
def test_requests_by_source_and_interval_override(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """API and CNI resyncs and interval ticks are counted by source; an override shows as
    the effective interval and override=1 until it is cleared."""
    daemon = start_masqd(GOOD)
    stub = daemon.stub()
    stub.Resync(pb.ResyncRequest(), timeout=10)
    stub.Resync(pb.ResyncRequest(reason=pb.SYNC_REASON_CNI, family=pb.FAMILY_IPV4), timeout=10)
    stub.SetIntervalOverride(
        pb.SetIntervalOverrideRequest(interval=Duration(seconds=1), ttl=Duration(seconds=60)),
        timeout=10,
    )
    m = wait_until(
        lambda: _when(
            scrape(topo.node),
            "masqd_resync_requests_total",
            2,
            at_least=True,
            family="ipv4",
            source="interval",
        ),
        timeout=10,
    )
    assert m.value("masqd_resync_interval_seconds") == 1
    assert m.value("masqd_resync_interval_override") == 1
    assert m.value("masqd_resync_requests_total", family="ipv4", source="api") == 1
    assert m.value("masqd_resync_requests_total", family="ipv6", source="api") == 1
    assert m.value("masqd_resync_requests_total", family="ipv4", source="cni") == 1
    assert m.value("masqd_resync_requests_total", family="ipv6", source="cni") == 0
    unchanged = m.value("masqd_syncs_total", family="ipv4", reason="interval", result="unchanged")
    assert unchanged >= 1
    stub.ClearIntervalOverride(pb.ClearIntervalOverrideRequest(), timeout=10)
    m = scrape(topo.node)
    assert m.value("masqd_resync_interval_override") == 0
    assert m.value("masqd_resync_interval_seconds") == 60


@nft_only
def test_killed_worker_counts_a_restart(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """A worker killed under masqd counts one restart of its family, and the family syncs on."""
    daemon = start_masqd(GOOD)
    pid = next(f.pid for f in daemon.status().families if f.family == pb.FAMILY_IPV6)
    os.kill(pid, signal.SIGKILL)
    m = wait_until(
        lambda: _when(scrape(topo.node), "masqd_worker_restarts_total", 1, family="ipv6")
    )
    assert m.value("masqd_worker_restarts_total", family="ipv4") == 0
    daemon.stub().Resync(pb.ResyncRequest(), timeout=10)
    assert scrape(topo.node).value("masqd_in_sync", family="ipv6") == 1


@nft_only
def test_healthz_fails_while_a_requested_sync_cannot_be_applied(
    topo: netns.Topology, wrapper: IptablesWrapper, start_masqd: Callable[..., Masqd]
) -> None:
    """With iptables-restore failing (the rules refused), a config change stays pending and
    /healthz fails at once, well within the timeout, naming the error; it passes again once
    restore works."""
    daemon = start_masqd(GOOD, "--health-timeout", "60s")
    wrapper.fail_marker.touch()
    put(daemon.config, OTHER)
    m = wait_until(
        lambda: _when(
            scrape(topo.node),
            "masqd_syncs_total",
            1,
            family="ipv4",
            reason="config_change",
            result="failed",
        )
    )
    assert 0 < m.value("masqd_sync_pending_seconds", family="ipv4") < 60
    assert m.value("masqd_healthy", family="ipv4") == 0
    assert m.value("masqd_trouble", family="ipv4", kind="rejected") == 1
    assert m.value("masqd_sync_failures_total", family="ipv4", kind="rejected") >= 1
    code, body = fetch(topo.node, "/healthz")
    assert code == 503
    report = json.loads(body)
    assert report["healthy"] is False
    assert report["families"]["ipv4"]["healthy"] is False
    assert report["families"]["ipv4"]["reason"].startswith("the rules were refused: ")
    assert "line 3 failed" in report["families"]["ipv4"]["lastError"]
    assert report["families"]["ipv6"]["healthy"] is True  # the other family carries on
    assert fetch(topo.node, "/readyz")[0] == 200  # it was ready once; liveness is the alarm
    wrapper.fail_marker.unlink()
    wait_until(lambda: _status(fetch(topo.node, "/healthz"), 200), timeout=10)
    m = wait_until(lambda: (m := scrape(topo.node)).value("masqd_in_sync", family="ipv4") and m, 2)
    assert m.value("masqd_sync_pending_seconds", family="ipv4") == 0
    assert "-A IP-MASQ-AGENT -d 192.168.0.0/16" in "\n".join(topo.chain(4))


@nft_only
def test_brief_lock_contention_keeps_healthz_passing(
    topo: netns.Topology, wrapper: IptablesWrapper, start_masqd: Callable[..., Masqd]
) -> None:
    """The xtables lock held elsewhere for a while delays a sync (pending shows it) but is
    retried, so /healthz keeps passing within its timeout and the sync lands."""
    daemon = start_masqd(GOOD, "--health-timeout", "15s")
    wrapper.lock_marker.touch()
    put(daemon.config, OTHER)
    wait_until(lambda: scrape(topo.node).value("masqd_sync_pending_seconds", family="ipv4") > 1)
    assert fetch(topo.node, "/healthz")[0] == 200
    wrapper.lock_marker.unlink()
    wait_until(lambda: "-A IP-MASQ-AGENT -d 192.168.0.0/16" in "\n".join(topo.chain(4)))
    m = scrape(topo.node)
    assert (
        m.value("masqd_syncs_total", family="ipv4", reason="config_change", result="changed") == 1
    )
    assert m.value("masqd_syncs_total", family="ipv4", reason="config_change", result="failed") == 0
    assert fetch(topo.node, "/healthz")[0] == 200


@nft_only
def test_not_ready_without_a_good_config(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """With a bad file from the start nothing is written: not ready, yet healthy (a restart
    would not help); the first good file makes it ready."""
    daemon = start_masqd("masqOutBound: maybe\n", wait_synced=False)
    wait_until(lambda: fetch(topo.node, "/readyz")[0] == 503)
    assert fetch(topo.node, "/healthz")[0] == 200
    assert scrape(topo.node).value("masqd_config_rejected") == 1
    put(daemon.config, GOOD)
    _, body = wait_until(lambda: _status(fetch(topo.node, "/readyz"), 200))
    assert json.loads(body)["ready"] is True


@nft_only
def test_metrics_address_can_move_or_be_off(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """--metrics-address [::1]:9999 serves there; an empty one serves nothing."""
    start_masqd(GOOD, "--metrics-address", "[::1]:9999")
    assert scrape(topo.node, "[::1]:9999").value("masqd_config_generation") == 1
    with pytest.raises(RuntimeError):
        fetch(topo.node, "/metrics")
    # A second masqd (its own socket and chain: one chain has one masqd), no HTTP.
    start_masqd(GOOD, "--metrics-address", "", "--masq-chain", "OTHER-MASQ")
    with pytest.raises(RuntimeError):
        fetch(topo.node, "/metrics")


def _when(
    m: Samples, name: str, want: float, *, at_least: bool = False, **labels: str
) -> Samples | None:
    """The scrape when its sample has the wanted value (at least it, with at_least), else None."""
    value = m.get_value(name, **labels)
    if value is None:
        return None
    return m if (value >= want if at_least else value == want) else None


def _status(response: tuple[int, str], code: int) -> tuple[int, str] | None:
    return response if response[0] == code else None
