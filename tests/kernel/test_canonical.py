"""A CIDR in a form iptables prints differently is written once and then left alone, on a
real masqd, both backends. Before, `::ffff:10.0.0.0/104` rendered as Python prints it
(`::ffff:a00:0/104`), read back in ip6tables' form, looked changed at every check and was
rewritten for ever, its counters reset each time. (Every accepted form's round trip through
the kernel is tests/unit/test_rules.py's.)"""

from __future__ import annotations

import time
from collections.abc import Callable

from masqd.api.v1 import control_pb2 as pb
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.observability import scrape

CONFIG = """\
nonMasqueradeCIDRs: ['::ffff:10.0.0.0/104', '2001:0DB8:0:0::/64', 10.0.0.0/8]
masqOutBoundIPv6: true
"""


def writes(topo: netns.Topology, family: str) -> float:
    m = scrape(topo.node)
    return sum(
        v for labels, v in m.matching("masqd_syncs_total", family=family, result="changed").items()
    )


def test_a_mapped_ipv6_cidr_is_written_once_and_left_alone(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Drift checks every second and interval syncs (which read everything) every second for
    five seconds: not one more write, and the chain holds the form ip6tables prints."""
    daemon = start_masqd(CONFIG)
    assert "-A IP-MASQ-AGENT -d ::ffff:10.0.0.0/104 " in "\n".join(topo.chain(6)) + " "
    assert any(r.startswith("-A IP-MASQ-AGENT -d 2001:db8::/64 ") for r in topo.chain(6))
    first = writes(topo, "ipv6")
    assert first == 1  # the startup write
    daemon.stub().SetIntervalOverride(
        pb.SetIntervalOverrideRequest(interval={"seconds": 1}, ttl={"seconds": 60}), timeout=5
    )
    time.sleep(5)
    status = daemon.status()
    ipv6 = next(f for f in status.families if f.family == pb.FAMILY_IPV6)
    interval = next(c.count for c in ipv6.sync_counts if c.reason == pb.SYNC_REASON_INTERVAL)
    assert interval >= 3 and ipv6.in_sync
    assert writes(topo, "ipv6") == first
    wait_until(lambda: daemon.status().config.generation == 1)
