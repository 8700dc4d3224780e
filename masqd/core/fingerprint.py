"""What a worker remembers of the kernel's view of its chain, to tell cheaply whether it changed.

Read in-process (legacy: the x_tables blob, masqd/host/probe/xtchain.py; nft: a netlink rule dump,
masqd/host/probe/nftchain.py), never by exec-ing iptables-save: no process to start, and only
our chain and POSTROUTING to read (`python -m bench.fingerprint_cost`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fingerprint:
    chain: bytes | None
    """A digest of our chain's rules, counters left out; None when the chain does not exist.
    nftables: of our whole table."""
    jumps: bytes
    """A digest of the POSTROUTING rules that jump to our chain (empty: there are none).
    nftables: of our base chain's hook (empty: there is none)."""


def jump_place(index: int) -> bytes:
    """What a jump's place in POSTROUTING adds to the jumps' digest: whether it is the first
    rule (--jump-position first must see a rule slipped in before ours), not its exact index
    (a rule added or removed elsewhere in POSTROUTING changes nothing of ours)."""
    return b"\x01" if index == 0 else b"\x00"
