"""The seed's three scenarios on the real kernel, nft and legacy: the chain the seed shows, and
packets from a pod leaving with the source address the scenario promises."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import netns
from tests.support.daemon import Masqd
from tests.support.paths import GOLDEN

NON_MASQ = (
    '-m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN'
)
MASQ_ALL = (
    '-m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE '
    '(must be last in chain)" -j MASQUERADE'
)
MASQ_SPECIFIC = (
    '-m comment --comment "ip-masq-agent: specific outbound traffic is subject to MASQUERADE" '
    "-j MASQUERADE"
)
SEED_RETURNS_V4 = [
    "169.254.0.0/16",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "100.64.230.0/24",
    "192.168.0.0/16",
]


def returns(cidrs: list[str]) -> list[str]:
    return [f"-A IP-MASQ-AGENT -d {c} {NON_MASQ}" for c in cidrs]


# The seed's `iptables -t nat -L IP-MASQ-AGENT -n` listings, as `iptables -t nat -S` prints them.
SEED_V6 = [*returns(["fe80::/10", "fc00::/7"]), f"-A IP-MASQ-AGENT {MASQ_ALL}"]
EXPECTED_CHAINS = {
    "seed-own-identity": (returns(SEED_RETURNS_V4), SEED_V6),
    "seed-node-identity": (
        [*returns(SEED_RETURNS_V4), f"-A IP-MASQ-AGENT {MASQ_ALL}"],
        SEED_V6,
    ),
    "seed-specific": (
        [f"-A IP-MASQ-AGENT -d 10.10.10.10/32 {MASQ_SPECIFIC}", *returns(SEED_RETURNS_V4)],
        SEED_V6,
    ),
}

POD, NODE = "pod", "node"
# Which source each destination sees, per scenario: the pod's own address or the node's.
EXPECTED_SOURCES = {
    "seed-own-identity": {
        "internet": POD,
        "vpc": POD,
        "vip": POD,
        "cgnat": POD,
        "internet6": NODE,
        "ula6": POD,
    },
    "seed-node-identity": {
        "internet": NODE,
        "vpc": POD,
        "vip": POD,
        "cgnat": POD,
        "internet6": NODE,
        "ula6": POD,
    },
    "seed-specific": {
        "internet": POD,
        "vpc": POD,
        "vip": NODE,
        "cgnat": POD,
        "internet6": NODE,
        "ula6": POD,
    },
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED_CHAINS))
def test_seed_chain_matches_seed_listing(
    scenario: str, topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """iptables/ip6tables -t nat -S IP-MASQ-AGENT show exactly the seed's rules, in order."""
    start_masqd((GOLDEN / f"{scenario}.yaml").read_text())
    want_v4, want_v6 = EXPECTED_CHAINS[scenario]
    assert topo.chain(4) == want_v4
    assert topo.chain(6) == want_v6
    jump = [r for r in topo.postrouting(4) if r.endswith("-j IP-MASQ-AGENT")]
    assert jump == [
        '-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all '
        'non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain" -m addrtype ! '
        "--dst-type LOCAL -j IP-MASQ-AGENT"
    ]
    assert len([r for r in topo.postrouting(6) if r.endswith("-j IP-MASQ-AGENT")]) == 1


@pytest.mark.parametrize("scenario", sorted(EXPECTED_SOURCES))
def test_seed_packets_leave_with_promised_source(
    scenario: str, topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """UDP from the pod reaches each destination with the pod's or the node's address."""
    start_masqd((GOLDEN / f"{scenario}.yaml").read_text())
    addresses = {
        **{name: addr for name, addr in netns.DEST_V4.items()},
        **{f"{name}6": addr for name, addr in netns.DEST_V6.items()},
    }
    seen = {}
    for dest in EXPECTED_SOURCES[scenario]:
        seen[dest] = topo.source_seen(addresses[dest])
    want = {
        dest: {
            (POD, False): netns.POD_V4,
            (POD, True): netns.POD_V6,
            (NODE, False): netns.NODE_UPLINK_V4,
            (NODE, True): netns.NODE_UPLINK_V6,
        }[(who, dest.endswith("6"))]
        for dest, who in EXPECTED_SOURCES[scenario].items()
    }
    assert seen == want
