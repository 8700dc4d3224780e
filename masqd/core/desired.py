"""What a family's worker is asked to make true, and what it finds, on either backend. Pure.

iptables: the rules of our chain (as iptables-save prints them) and, live, the chain and the
POSTROUTING jump (`livestate`). nftables: our table (`nftrules.Table`) and, live, the table as
nft lists it (`nftlive`).
"""

from __future__ import annotations

from masqd.core.livestate import LiveChain
from masqd.core.nftlive import LiveTable
from masqd.core.nftrules import Table
from masqd.core.rules import jump_rule

Desired = tuple[str, ...] | Table
Live = LiveChain | LiveTable


def size(desired: Desired) -> int:
    """How many rules (and, nftables, set elements) it holds."""
    return desired.size if isinstance(desired, Table) else len(desired)


def matches(live: Live, desired: Desired, chain: str, first: bool = False) -> bool:
    """True when the live state is exactly the desired one (iptables: with our jump to chain,
    first in POSTROUTING when `first`)."""
    if isinstance(live, LiveTable):
        return isinstance(desired, Table) and live.matches(desired)
    if isinstance(desired, Table):
        return False
    return live.matches(list(desired), jump_rule(chain), first)
