"""The nftables ruleset generation: one netlink round trip that says whether anything changed.

The kernel bumps a per-namespace generation id on every nftables ruleset change (any table,
any family; iptables-nft writes through it too, one bump per iptables-nft-restore), and never
on packets or counters. A worker in nft mode that saw the generation unchanged since it last
verified its chain knows the chain is still as verified, without reading anything more.
"""

from __future__ import annotations

import socket
import struct

from masqd.host.probe import netlink

NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1


def generation(timeout: float = 1.0) -> int | None:
    """The current nftables generation id of this network namespace, None if unavailable."""
    try:
        replies = netlink.request(NFT_MSG_GETGEN, socket.AF_UNSPEC, timeout=timeout)
        return gen_id(replies[0]) if replies else None
    except OSError:
        return None


def gen_id(reply: bytes) -> int | None:
    """The NFTA_GEN_ID attribute of a NEWGEN reply's attributes; None if absent or garbled."""
    try:
        for kind, payload in netlink.attrs(reply):
            if kind == NFTA_GEN_ID and len(payload) >= 4:
                return int(struct.unpack_from(">I", payload)[0])
    except OSError:
        return None
    return None


def next_generation(generation: int) -> int:
    """The id after one more change (it is a u32 and wraps)."""
    return (generation + 1) & 0xFFFFFFFF
