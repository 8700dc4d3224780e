"""`masqctl config validate --compat cce|upstream`: what of a config masqd accepts the other
agents would not understand. Pure: the parsed config and the keys the file sets in, warnings
out.

Both agents read the file with Go's encoding/json, which ignores a key it does not know
without a word: a file moved to them silently loses masqd's keys, and a value masqd reads one
way they may read another (or refuse, taking the whole file with it). The keys each knows:
CCE's are the seven its user guide documents (/work/shared/seeds); upstream's are its README's
and its MasqConfig's (nonMasqueradeCIDRs, cidrLimit, masqLinkLocal, masqLinkLocalIPv6,
resyncInterval). Upstream has no masqOutBound: it always masquerades what no
nonMasqueradeCIDRs entry covers.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from masqd.core.config import MasqConfig

CCE, UPSTREAM = "cce", "upstream"
TARGETS = (CCE, UPSTREAM)
AGENTS = {CCE: "cce-ip-masq-agent", UPSTREAM: "upstream ip-masq-agent"}
KNOWN = {
    CCE: frozenset(
        (
            "masqueradeCIDRs",
            "nonMasqueradeCIDRs",
            "masqOutBound",
            "masqOutBoundIPv6",
            "masqLinkLocal",
            "masqLinkLocalIPv6",
            "resyncInterval",
        )
    ),
    UPSTREAM: frozenset(
        ("nonMasqueradeCIDRs", "cidrLimit", "masqLinkLocal", "masqLinkLocalIPv6", "resyncInterval")
    ),
}
# What a file loses when the other agent drops the key.
_LOST = {
    "masqueradeCIDRs": "its destinations follow nonMasqueradeCIDRs and the catch-all instead",
    "masqOutBound": "it always masquerades IPv4 traffic outside nonMasqueradeCIDRs",
    "masqOutBoundIPv6": "it always masquerades IPv6 traffic outside nonMasqueradeCIDRs",
    "sourceCIDRs": "connections from every source are masqueraded, not only these sources'",
    "snatToSource": "masqueraded IPv4 traffic leaves with the outgoing interface's address",
    "snatToSourceIPv6": "masqueraded IPv6 traffic leaves with the outgoing interface's address",
    "cidrLimit": "it is not among the keys the CCE user guide documents (CCE may apply its own)",
}


def warnings(target: str, present: frozenset[str], config: MasqConfig) -> list[str]:
    """What `target`'s agent would not understand in a file setting `present`, parsed by masqd
    as `config`. Empty: the file means the same to it."""
    agent = AGENTS[target]
    found = [
        f"{key}: {agent} does not know this key and ignores it silently: {_lost(key, config)}"
        for key in sorted(present - KNOWN[target], key=_order)
    ]
    if target == UPSTREAM:
        found += _upstream_values(present, config)
    return found


def _lost(key: str, config: MasqConfig) -> str:
    on = {"masqOutBound": config.masq_out_bound, "masqOutBoundIPv6": config.masq_out_bound_ipv6}
    if on.get(key):
        return f"{_LOST[key]}, which is what true means here"
    return _LOST.get(key, "what it says is lost")


def _upstream_values(present: frozenset[str], config: MasqConfig) -> list[str]:
    found = []
    if not config.masq_out_bound and "masqOutBound" not in present:
        found.append(
            "masqOutBound: absent, so masqd leaves IPv4 traffic outside the lists unmasqueraded; "
            "upstream ip-masq-agent masquerades it (it has no such key: always on)"
        )
    lists = (("nonMasqueradeCIDRs", config.non_masquerade_cidrs),)
    for key, entries in lists:
        if key not in present:
            continue
        names = [
            str(e)
            for e in entries
            if not isinstance(e, ipaddress.IPv4Network | ipaddress.IPv6Network)
        ]
        if names:
            found.append(
                f"{key}: {', '.join(names)}: upstream ip-masq-agent takes CIDRs only and "
                "rejects the whole file for a DNS name"
            )
        if any(getattr(e, "version", 4) == 6 for e in entries):
            found.append(
                f"{key}: IPv6 entries: upstream ip-masq-agent rejects the whole file for them "
                "unless it runs with --enable-ipv6 (off by default)"
            )
    return found


def _order(key: str) -> int:
    order = (
        "nonMasqueradeCIDRs", "masqueradeCIDRs", "masqOutBound", "masqOutBoundIPv6",
        "masqLinkLocal", "masqLinkLocalIPv6", "resyncInterval", "cidrLimit", "sourceCIDRs",
        "snatToSource", "snatToSourceIPv6",
    )  # fmt: skip
    return order.index(key) if key in order else len(order)
