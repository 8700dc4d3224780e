"""What a CIDR list holds: networks, and DNS names where a CIDR goes (as CCE's agent accepts).

Pure, and free of the YAML parser (the workers import the rules, which import this). A name is
kept as a name: resolving it is not parsing, and happens off the sync path (engine/resolver.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_NAME = 253  # RFC 1035: 255 octets on the wire, 253 characters written out
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class HostName:
    """A DNS name in a CIDR list: its A records count as /32 entries, its AAAA as /128."""

    name: str
    """Lower case, without the trailing dot: two spellings of one name are one entry."""
    version: ClassVar[int] = 0
    """No address family: until its addresses are known, a name renders no rule."""

    def __str__(self) -> str:
        return self.name


Entry = IPNetwork | HostName
"""One entry of nonMasqueradeCIDRs or masqueradeCIDRs."""


def host_name(text: str) -> HostName | str:
    """The name text spells, or why it is not a DNS name one can look up (a sentence).

    Host name syntax (RFC 1123): labels of letters, digits and '-', not starting or ending with
    '-'. Names are looked up as given, without the resolver's search list, so a single label
    is refused; a last label of digits alone is an address, not a name (RFC 3696).
    """
    name = text.lower().removesuffix(".")
    if not name:
        return "an empty name"
    if not name.isascii():
        return "not ASCII (write an internationalised name in its xn-- form)"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    labels = name.split(".")
    for label in labels:
        if not label:
            return "an empty label (two dots in a row)"
        if len(label) > 63:
            return f"the label {label[:20]}... is longer than 63 characters"
        if not _LABEL.fullmatch(label):
            bad = next((c for c in label if not (c.isalnum() or c == "-")), "")
            if bad:
                return f"{bad!r} is not allowed in a name (letters, digits and '-')"
            return f"the label {label!r} starts or ends with '-'"
    if len(labels) < 2:
        return "a single label; names are looked up as given, so write it in full (db.example.com)"
    if labels[-1].isdigit():
        return "its last label is all digits, which makes it an address, not a name"
    return HostName(name)
