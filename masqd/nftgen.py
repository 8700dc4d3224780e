"""The nftables ruleset generation: one netlink round trip that says whether anything changed.

The kernel bumps a per-namespace generation id on every nftables ruleset change (any table,
any family; iptables-nft writes through it too), and never on packets or counters. A worker in
nft mode that saw the generation unchanged since it last read and verified its chain knows the
chain is still as verified, without exec-ing iptables-save (milliseconds, and hundreds of them
beside a kube-proxy-sized nat table).
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NFTA_GEN_ID = 1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian, unused here)
_NLATTR = struct.Struct("=HH")  # len, type


def generation(timeout: float = 1.0) -> int | None:
    """The current nftables generation id of this network namespace, None if unavailable."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(timeout)
            sock.send(_request(seq=os.getpid() & 0xFFFF))
            return _parse(sock.recv(4096))
    except OSError:
        return None


def _request(seq: int) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
    msg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST, seq, 0) + body


def _parse(data: bytes) -> int | None:
    """The NFTA_GEN_ID attribute of a NEWGEN reply."""
    if len(data) < _NLMSGHDR.size + _NFGENMSG.size:
        return None
    length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data)
    if msg_type != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
        return None
    pos = _NLMSGHDR.size + _NFGENMSG.size
    end = min(length, len(data))
    while pos + _NLATTR.size <= end:
        attr_len, attr_type = _NLATTR.unpack_from(data, pos)
        if attr_len < _NLATTR.size:
            return None
        if attr_type & 0x7FFF == NFTA_GEN_ID and attr_len >= _NLATTR.size + 4:
            return int(struct.unpack_from(">I", data, pos + _NLATTR.size)[0])
        pos += (attr_len + 3) & ~3
    return None
