"""The nftables backend: a fingerprint of our whole table over netlink, without exec-ing nft.

Read in a handful of requests: the table itself (its flags, comment and use count, which is the
number of chains, sets and objects in it, so a chain or set someone adds shows); every rule of
the table (one dump, filtered by table); each chain those rules name and the base chain (hook,
priority, policy, type); every set of the table (one dump) and each set's elements. Handles,
ids and counter values are left out; the rest is hashed in dump order, which is the kernel's
own and stable while nothing changes.

Also here: the names of a family's tables (one dump), which is how `auto` sees kube-proxy in
nftables mode without exec-ing or creating anything, and those with our comment (a table an
earlier --nft-table left).
"""

from __future__ import annotations

import errno
import hashlib
import socket

from masqd.core.fingerprint import Fingerprint
from masqd.core.model import Family
from masqd.host.probe import netlink

NFT_MSG_GETTABLE = 1
NFT_MSG_GETCHAIN = 4
NFT_MSG_GETRULE = 7
NFT_MSG_GETSET = 10
NFT_MSG_GETSETELEM = 13
NFTA_TABLE_NAME = 1
NFTA_TABLE_USERDATA = 6
NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_NAME = 3
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_SET_TABLE = 1
NFTA_SET_NAME = 2
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3

# What each message keeps: what the object is, never its handle, id or counters' values.
_TABLE_KEPT = frozenset((1, 2, 3, 6, 7))  # name, flags, use, userdata, owner
_CHAIN_KEPT = frozenset((3, 4, 5, 6, 7, 10, 12))  # name, hook, policy, use, type, flags, udata
_RULE_KEPT = frozenset((2, 4, 5, 7))  # chain, expressions, compat, userdata
_SET_KEPT = frozenset((2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 17, 18))  # all but table/id/handle
_FAMILIES = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}
_MISSING = b"\xff missing"


def read(family: Family, table: str, base_chain: str = "postrouting") -> Fingerprint:
    """The fingerprint of our table (`chain`: None when there is no table) and, as `jumps`, of
    what sends traffic through it: our base chain's hook, priority and policy (empty when
    there is no base chain). OSError when it cannot be read (a dump interrupted by a change,
    a table deleted meanwhile)."""
    af = _FAMILIES[family]
    name = _name(table)
    try:
        (head,) = netlink.request(NFT_MSG_GETTABLE, af, netlink.attr(NFTA_TABLE_NAME, name))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return Fingerprint(None, b"")
        raise
    digest = hashlib.blake2b(digest_size=16)
    _update(digest, _kept(head, _TABLE_KEPT))
    rules = netlink.request(NFT_MSG_GETRULE, af, netlink.attr(NFTA_RULE_TABLE, name), dump=True)
    base = base_chain.encode() + b"\0"
    chains = {base}
    for rule in rules:
        fields = dict(netlink.attrs(rule))
        chains.add(fields.get(NFTA_RULE_CHAIN, b""))
        _update(digest, _kept(rule, _RULE_KEPT))
    hook = b""
    for chain in sorted(chains):
        attrs = _chain(af, name, chain)
        _update(digest, attrs)
        if chain == base and not attrs.startswith(_MISSING):
            hook = hashlib.blake2b(attrs, digest_size=16).digest()
    sets = netlink.request(NFT_MSG_GETSET, af, netlink.attr(NFTA_SET_TABLE, name), dump=True)
    for set_msg in sets:
        _update(digest, _kept(set_msg, _SET_KEPT))
        set_name = dict(netlink.attrs(set_msg)).get(NFTA_SET_NAME, b"")
        payload = netlink.attr(NFTA_SET_ELEM_LIST_TABLE, name) + netlink.attr(
            NFTA_SET_ELEM_LIST_SET, set_name
        )
        for reply in netlink.request(NFT_MSG_GETSETELEM, af, payload, dump=True):
            for kind, elements in netlink.attrs(reply):
                if kind == NFTA_SET_ELEM_LIST_ELEMENTS:
                    _update(digest, netlink.blank_counters(elements))
    return Fingerprint(digest.digest(), hook)


def named_like(family: Family, comment: str) -> list[str]:
    """The names of the family's tables whose comment is `comment` (one dump). A table's
    comment is its user data: a TLV of type 0 (libnftnl's NFTNL_UDATA_TABLE_COMMENT), its
    length (with the NUL) and the text."""
    text = comment.encode() + b"\0"
    wanted = bytes((0, len(text))) + text
    replies = netlink.request(NFT_MSG_GETTABLE, _FAMILIES[family], dump=True)
    found = []
    for reply in replies:
        fields = dict(netlink.attrs(reply))
        if fields.get(NFTA_TABLE_USERDATA) == wanted:
            found.append(fields.get(NFTA_TABLE_NAME, b"").rstrip(b"\0").decode(errors="replace"))
    return found


def table_names(family: Family) -> list[str]:
    """The names of the family's nftables tables in this network namespace (one dump; the
    kernel filters it by the request's family)."""
    replies = netlink.request(NFT_MSG_GETTABLE, _FAMILIES[family], dump=True)
    names = (dict(netlink.attrs(reply)).get(NFTA_TABLE_NAME, b"") for reply in replies)
    return [name.rstrip(b"\0").decode(errors="replace") for name in names]


def _chain(af: int, table: bytes, chain: bytes) -> bytes:
    payload = netlink.attr(NFTA_CHAIN_TABLE, table) + netlink.attr(NFTA_CHAIN_NAME, chain)
    try:
        (reply,) = netlink.request(NFT_MSG_GETCHAIN, af, payload)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return _MISSING + chain
        raise
    return _kept(reply, _CHAIN_KEPT)


def _kept(message: bytes, kept: frozenset[int]) -> bytes:
    """The message's attributes of the kept types, counters' values blanked."""
    parts = []
    for kind, payload in netlink.attrs(message):
        if kind in kept:
            if kind == NFTA_RULE_EXPRESSIONS and kept is _RULE_KEPT:
                payload = netlink.blank_counters(payload)
            parts.append(netlink.attr(kind, payload))
    return b"".join(parts)


def _update(digest: hashlib.blake2b, data: bytes) -> None:
    digest.update(len(data).to_bytes(4, "little"))
    digest.update(data)


def _name(text: str) -> bytes:
    return text.encode() + b"\0"
