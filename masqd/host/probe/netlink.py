"""The few netlink pieces masqd needs: one request, its replies, and attribute walking.

Used by nftgen.py (the ruleset generation), nftchain.py and nfttable.py (dumps of rules,
chains and sets), and addresses.py (the node's addresses, over rtnetlink).
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NLM_F_REQUEST = 0x1
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

NFTA_EXPR_NAME = 1

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian)
NLATTR = struct.Struct("=HH")  # len, type
_RECV_SIZE = 1 << 16


# A counter expression as the kernel dumps it: its name, then NFTA_EXPR_DATA (nested) holding
# NFTA_COUNTER_BYTES and NFTA_COUNTER_PACKETS, 8 bytes each; in a rule's expressions and in a
# set element's alike. One pattern per spelling of the nested flag, each replaced by a
# constant (no group references: ten thousand elements' counters are then blanked in C, where
# a template or a function would run Python per match). A layout these do not match (a kernel
# that pads u64 attributes) leaves the values in, so a fingerprint moves with traffic: slower
# (the worker then reads the slow way), never wrong.
_COUNTER_NAME = NLATTR.pack(12, 1) + b"counter\0"
_BYTES, _PACKETS = NLATTR.pack(12, 1), NLATTR.pack(12, 2)
_COUNTERS = [
    (
        re.compile(re.escape(head) + rb".{8}" + re.escape(_PACKETS) + rb".{8}", re.DOTALL),
        head + bytes(8) + _PACKETS + bytes(8),
    )
    for head in (_COUNTER_NAME + NLATTR.pack(28, data) + _BYTES for data in (0x0002, 0x8002))
]


def blank_counters(data: bytes) -> bytes:
    """data with the values of every counter expression in it zeroed."""
    for pattern, blanked in _COUNTERS:
        data = pattern.sub(blanked, data)
    return data


def nft_type(msg: int) -> int:
    return (NFNL_SUBSYS_NFTABLES << 8) | msg


def attr(kind: int, payload: bytes) -> bytes:
    data = NLATTR.pack(NLATTR.size + len(payload), kind) + payload
    return data.ljust((len(data) + 3) & ~3, b"\0")


def attrs(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(data, pos)
        if length < NLATTR.size or pos + length > end:
            raise OSError("malformed netlink attribute")
        yield kind & NLA_TYPE_MASK, data[pos + NLATTR.size : pos + length]
        pos += (length + 3) & ~3


def request(
    msg: int, family: int, payload: bytes = b"", *, dump: bool = False, timeout: float = 1.0
) -> list[bytes]:
    """Send one nftables request; the attribute bytes of each reply message, in order.

    Raises OSError when the kernel answers with an error, or a dump was interrupted by a
    ruleset change (the caller then knows nothing and reads the slow way).
    """
    body = NFGENMSG.pack(family, 0, 0) + payload
    replies = exchange(NETLINK_NETFILTER, nft_type(msg), body, dump=dump, timeout=timeout)
    return [reply[NFGENMSG.size :] for reply in replies]


def exchange(
    protocol: int, kind: int, body: bytes, *, dump: bool = False, timeout: float = 1.0
) -> list[bytes]:
    """One netlink request of any protocol (nfnetlink, rtnetlink): each reply's payload (its
    family header, then its attributes), in order. OSError as `request` says."""
    seq = os.getpid() & 0xFFFF
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    message = NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body
    replies: list[bytes] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol) as sock:
        sock.settimeout(timeout)
        sock.send(message)
        while True:
            data = sock.recv(_RECV_SIZE)
            pos = 0
            while pos + NLMSGHDR.size <= len(data):
                length, kind, mflags, _seq, _pid = NLMSGHDR.unpack_from(data, pos)
                if length < NLMSGHDR.size:
                    raise OSError("malformed netlink message")
                if mflags & NLM_F_DUMP_INTR:
                    raise OSError("the ruleset changed during the dump")
                if kind == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, pos + NLMSGHDR.size)
                    if error:
                        raise OSError(-error, os.strerror(-error))
                    return replies  # an acknowledgement
                if kind == NLMSG_DONE:
                    return replies
                replies.append(data[pos + NLMSGHDR.size : pos + length])
                if not dump:
                    return replies
                pos += (length + 3) & ~3
