"""nft mode: our chain and jump read over netlink, without exec-ing iptables-nft-save.

Two rule dumps (our chain, and POSTROUTING) from the nat table of the family. Each rule is
hashed from its expressions, compat info and user data (the comment), leaving out what
changes without the rule changing: its handle, its position and its counter's values; of a
jump's place, only whether it is POSTROUTING's first rule counts.
"""

from __future__ import annotations

import hashlib
import socket

from masqd.core.fingerprint import Fingerprint, jump_place
from masqd.core.model import Family
from masqd.host.probe import netlink

NFT_MSG_GETRULE = 7
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_HANDLE = 3
NFTA_RULE_EXPRESSIONS = 4
NFTA_RULE_COMPAT = 5
NFTA_RULE_POSITION = 6
NFTA_RULE_USERDATA = 7
NFTA_EXPR_NAME = netlink.NFTA_EXPR_NAME
NFTA_EXPR_DATA = 2
NFTA_IMMEDIATE_DATA = 2
NFTA_DATA_VERDICT = 2
NFTA_VERDICT_CODE = 1
NFTA_VERDICT_CHAIN = 2
NFT_JUMP = (-3).to_bytes(4, "big", signed=True)
_KEPT = (NFTA_RULE_COMPAT, NFTA_RULE_USERDATA)
# NFTA_RULE_HANDLE and NFTA_RULE_POSITION: a 4-byte header and a u64.
_ID_ATTR_SIZE = 12
_HANDLE = netlink.NLATTR.pack(_ID_ATTR_SIZE, NFTA_RULE_HANDLE)
_POSITION = netlink.NLATTR.pack(_ID_ATTR_SIZE, NFTA_RULE_POSITION)
_FAMILIES = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}


def read(family: Family, chain: str) -> Fingerprint:
    """Digests of our chain and of the POSTROUTING rules jumping to it; OSError if unreadable.

    A chain that does not exist reads as an empty one: nft refuses to delete a chain a jump
    still points at, so a missing chain also shows as a missing jump.
    """
    ours = _rules(family, chain)
    postrouting = _rules(family, "POSTROUTING")
    return digest(ours, postrouting, chain)


def _rules(family: Family, chain: str) -> list[bytes]:
    payload = netlink.attr(NFTA_RULE_TABLE, b"nat\0") + netlink.attr(
        NFTA_RULE_CHAIN, chain.encode() + b"\0"
    )
    return netlink.request(NFT_MSG_GETRULE, _FAMILIES[family], payload, dump=True)


def digest(ours: list[bytes], postrouting: list[bytes], chain: str) -> Fingerprint:
    """The fingerprint from the two dumps (each rule's attributes, in order). Pure."""
    chain_hash = hashlib.blake2b(_chain_bytes(ours, chain), digest_size=16)
    jump_hash = hashlib.blake2b(digest_size=16)
    jumps = 0
    target = chain.encode() + b"\0"
    for index, rule in enumerate(postrouting):
        # The byte search is a cheap first filter: most rules never name our chain.
        if target in rule and _jumps_to(rule, target):
            jump_hash.update(_normalized(rule))
            jump_hash.update(jump_place(index))
            jumps += 1
    return Fingerprint(chain_hash.digest(), jump_hash.digest() if jumps else b"")


def _chain_bytes(ours: list[bytes], chain: str) -> bytes:
    """Our chain's rules, each without its handle and position, counters blanked.

    A rule dumps as table, chain, handle and (past the first rule) position, then what the
    rule is. Cutting at that offset costs a slice per rule, far less than walking every
    attribute, which counts with thousands of rules; a rule laid out otherwise is walked.
    """
    prefix = netlink.attr(NFTA_RULE_TABLE, b"nat\0") + netlink.attr(
        NFTA_RULE_CHAIN, chain.encode() + b"\0"
    )
    at = len(prefix)
    parts: list[bytes] = []
    for rule in ours:
        if rule.startswith(prefix) and rule.startswith(_HANDLE, at):
            cut = at + _ID_ATTR_SIZE
            if rule.startswith(_POSITION, cut):
                cut += _ID_ATTR_SIZE
            rest = rule[cut:]
        else:
            rest = _normalized(rule)
        parts.append(len(rest).to_bytes(4, "little"))
        parts.append(rest)
    return netlink.blank_counters(b"".join(parts))


def _normalized(rule: bytes) -> bytes:
    """The rule's kept attributes, each length-prefixed, counters' values blanked."""
    parts: list[bytes] = []
    for kind, payload in netlink.attrs(rule):
        if kind == NFTA_RULE_EXPRESSIONS:
            parts.append(netlink.attr(kind, netlink.blank_counters(payload)))
        elif kind in _KEPT:
            parts.append(netlink.attr(kind, payload))
    return netlink.attr(0, b"".join(parts))


def _jumps_to(rule: bytes, target: bytes) -> bool:
    """Whether the rule's verdict is a jump to the chain named target (NUL-terminated)."""
    for kind, expressions in netlink.attrs(rule):
        if kind != NFTA_RULE_EXPRESSIONS:
            continue
        for _, elem in netlink.attrs(expressions):
            fields = dict(netlink.attrs(elem))
            if fields.get(NFTA_EXPR_NAME) != b"immediate\0" or NFTA_EXPR_DATA not in fields:
                continue
            data = dict(netlink.attrs(fields[NFTA_EXPR_DATA])).get(NFTA_IMMEDIATE_DATA, b"")
            verdict = dict(netlink.attrs(data)).get(NFTA_DATA_VERDICT, b"")
            v = dict(netlink.attrs(verdict))
            if v.get(NFTA_VERDICT_CODE) == NFT_JUMP and v.get(NFTA_VERDICT_CHAIN) == target:
                return True
    return False
