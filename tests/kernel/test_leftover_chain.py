"""No chain left behind (kubernetes#64212): after --masq-chain changes, the next masqd removes
the old chain and its POSTROUTING jump, in both families and on both backends, in the same
restore that writes its own; a chain of that name that masqd did not write stays."""

from __future__ import annotations

from collections.abc import Callable

from masqd.core.rules import jump_rule
from tests.support import netns
from tests.support.daemon import Masqd
from tests.support.scenario import GOOD, desired

OLD = "MASQ-OLD"


def test_a_chain_left_by_an_earlier_masq_chain_is_removed_with_its_jump(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    old = start_masqd(GOOD, "--masq-chain", OLD)
    for family in (4, 6):
        assert topo.chain(family, OLD) == [
            r.replace("IP-MASQ-AGENT", OLD) for r in desired(GOOD, family)
        ]
        assert jump_rule(OLD) in topo.postrouting(family)
    old.stop()
    new = start_masqd(GOOD)
    for family in (4, 6):
        assert topo.chain(family) == desired(GOOD, family)
        postrouting = topo.postrouting(family)
        assert postrouting == [jump_rule("IP-MASQ-AGENT")], postrouting
        listed = topo.iptables(family, "-t", "nat", "-S")
        assert OLD not in listed, listed
        assert traffic_is_masqueraded(topo)
    assert "removed what an earlier --masq-chain or --nft-table left" in new.log()


def traffic_is_masqueraded(topo: netns.Topology) -> bool:
    """GOOD masquerades the internet: one datagram through the new chain."""
    return topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4


def test_a_foreign_chain_of_that_name_without_our_comment_is_left_alone(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    foreign_jump = f"-A POSTROUTING -d 198.51.100.0/24 -j {OLD}"
    foreign_rule = f"-A {OLD} -d 198.51.100.7/32 -j RETURN"
    topo.iptables(4, "-t", "nat", "-N", OLD)
    topo.iptables(4, "-t", "nat", *foreign_rule.split())
    topo.iptables(4, "-t", "nat", *foreign_jump.split())
    start_masqd(GOOD)
    assert topo.chain(4, OLD) == [foreign_rule]
    assert foreign_jump in topo.postrouting(4)
    assert topo.postrouting(4)[-1] == jump_rule("IP-MASQ-AGENT")


def test_our_old_jump_goes_but_a_chain_someone_else_uses_stays(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """The old chain is also jumped to from elsewhere: only our jump to it is removed."""
    old = start_masqd(GOOD, "--masq-chain", OLD)
    old.stop()
    topo.iptables(4, "-t", "nat", "-I", "POSTROUTING", "-d", "198.51.100.0/24", "-j", OLD)
    start_masqd(GOOD)
    assert jump_rule(OLD) not in topo.postrouting(4)
    assert topo.chain(4, OLD) == [r.replace("IP-MASQ-AGENT", OLD) for r in desired(GOOD, 4)]
    assert topo.chain(6, OLD) == [] and OLD not in topo.iptables(6, "-t", "nat", "-S")
