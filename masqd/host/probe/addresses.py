"""The node's own addresses, over rtnetlink (one RTM_GETADDR dump), without exec-ing `ip`.

What the kernel counts as local for `--dst-type LOCAL` and `fib daddr type local`, and what
an snatToSource address must be one of for replies to it to come back to this node.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import TYPE_CHECKING

from masqd.core.model import Family
from masqd.host.probe import netlink

if TYPE_CHECKING:  # workers import this module; they need no YAML parser
    from masqd.core.config import IPAddress

NETLINK_ROUTE = 0
RTM_GETADDR = 22
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
IFA_ADDRESS, IFA_LOCAL = 1, 2
_FAMILIES = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}


def local(family: Family) -> tuple[IPAddress, ...]:
    """Every address of the family on any interface of this network namespace; OSError when
    the kernel cannot be asked."""
    body = IFADDRMSG.pack(_FAMILIES[family], 0, 0, 0, 0)
    replies = netlink.exchange(NETLINK_ROUTE, RTM_GETADDR, body, dump=True)
    return tuple(dict.fromkeys(a for reply in replies if (a := parse(reply)) is not None))


def parse(reply: bytes) -> IPAddress | None:
    """The address of one RTM_NEWADDR message (IFA_LOCAL: on a point-to-point link
    IFA_ADDRESS is the peer's)."""
    found = dict(netlink.attrs(reply, IFADDRMSG.size))
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
    if raw is None or len(raw) not in (4, 16):
        return None
    return ipaddress.ip_address(raw)
