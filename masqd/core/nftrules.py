"""Rendering for the nftables backend: (config, family, flags) to our table, and the `nft -f`
input that creates it. Pure.

One table per family (`table ip masqd`, `table ip6 masqd`) holds two interval sets, `masq` and
`nomasq`, whose elements count their own packets, and one base chain that makes the seed's
decisions in the seed's order:

    fib daddr type local return          the `! --dst-type LOCAL` of the iptables jump
    ip daddr @masq masquerade            masqueradeCIDRs win over everything below
    ip daddr 169.254.0.0/16 return       link-local, unless masqLinkLocal
    ip daddr @nomasq return              nonMasqueradeCIDRs
    masquerade                           the catch-all, only with masqOutBound

Like the iptables rules, everything is rendered exactly as `nft list table` prints it back
(counter values aside), so `nftlive` compares the live table with the desired one line by line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from masqd.core.cidrs import collapse, covered_warnings
from masqd.core.entries import HostName
from masqd.core.model import Family
from masqd.core.rules import LINK_LOCAL, PORT_PROTOCOLS, PortRange, RenderOptions

if TYPE_CHECKING:  # workers import this module; they need no YAML parser
    from masqd.core.config import MasqConfig
    from masqd.core.entries import IPNetwork

BASE_CHAIN = "postrouting"
# After iptables-nft's nat POSTROUTING (srcnat) and kube-proxy's nft srcnat chains, as the
# iptables jump is appended after theirs; never exactly srcnat, whose order against another
# chain of equal priority the kernel leaves undefined.
BASE_CHAIN_DECLARATION = "type nat hook postrouting priority srcnat + 10; policy accept;"
TABLE_COMMENT = "managed by masqd (ip-masq-agent): changes to this table are reverted"
MASQ, NOMASQ = "masq", "nomasq"
SET_KEYS = {MASQ: "masqueradeCIDRs", NOMASQ: "nonMasqueradeCIDRs"}
PORTS_CHAIN = "to-ports-{}"
_PROTOCOL = {Family.IPV4: "ip", Family.IPV6: "ip6"}
_ADDRESS_TYPE = {Family.IPV4: "ipv4_addr", Family.IPV6: "ipv6_addr"}
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
# Words nft's parser takes as keywords where a table's name belongs (the few a name is likely
# to be; `masqctl config validate` asks nft itself about any other).
_KEYWORDS = {
    "accept", "chain", "counter", "drop", "element", "filter", "inet", "ip", "ip6", "jump",
    "map", "masquerade", "meta", "redirect", "return", "rule", "set", "snat", "dnat", "table",
}  # fmt: skip


class Element(NamedTuple):
    """One element of our sets."""

    key: str
    """The CIDR as nft lists it: a full-length prefix as its address alone."""
    comment: str
    """The config entry it is."""


@dataclass(frozen=True)
class NftSet:
    name: str
    declaration: tuple[str, ...]
    """The lines between `set NAME {` and the elements."""
    keys: tuple[str, ...]
    """Each element's key, and below its comment: two tuples of strings, because ten thousand
    elements cross the worker's pipe with every change, and strings pickle fastest (a tuple
    of NamedTuples takes about ten times as long)."""
    comments: tuple[str, ...]

    @property
    def elements(self) -> tuple[Element, ...]:
        return tuple(map(Element, self.keys, self.comments))


@dataclass(frozen=True)
class Chain:
    name: str
    declaration: str
    """A base chain's `type ... hook ...; policy ...;` line; empty for a regular chain."""
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """Our table for one family, as `nft list table` prints it (counter values aside)."""

    family: Family
    name: str
    comment: str
    sets: tuple[NftSet, ...]
    chains: tuple[Chain, ...]
    """Chains a rule jumps to come before the chain that jumps."""
    covered: tuple[tuple[str, str, str], ...] = field(default=(), compare=False)
    """(set, entry, the key of the element it lies in) for each entry that is no element of its
    own."""
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def spec(self) -> str:
        """How nft commands name it: `ip masqd`."""
        return f"{_PROTOCOL[self.family]} {self.name}"

    @property
    def size(self) -> int:
        """Rules and elements together: what the table holds."""
        return sum(len(c.rules) for c in self.chains) + sum(len(s.keys) for s in self.sets)


def validate_table_name(name: str) -> str:
    """Return name if nft takes it as our table's name, else raise ValueError."""
    if not _TABLE_NAME.fullmatch(name) or name.lower() in _KEYWORDS:
        raise ValueError(
            f"invalid nftables table name {name!r}: up to 32 letters, digits, '_' and '-', "
            "starting with a letter, and not an nft keyword"
        )
    return name


def element_key(cidr: IPNetwork) -> str:
    """A CIDR as nft lists it in a set: 10.10.10.10 for 10.10.10.10/32."""
    return str(cidr.network_address) if cidr.prefixlen == cidr.max_prefixlen else str(cidr)


def desired_table(
    config: MasqConfig,
    family: Family,
    opts: RenderOptions,
    names: Mapping[IPNetwork, str] | None = None,
) -> Table:
    """Our table for one family, from a config whose DNS names are resolved (`names.expand`);
    `names` says which name an address came from, for its element's comment."""
    proto = _PROTOCOL[family]
    fully = " fully-random" if opts.random_fully else ""
    masq_link_local = config.masq_link_local if family == 4 else config.masq_link_local_ipv6
    out_bound = config.masq_out_bound if family == 4 else config.masq_out_bound_ipv6
    rules = ["fib daddr type local return", f"{proto} daddr @{MASQ} masquerade{fully}"]
    if not masq_link_local:
        rules.append(f"{proto} daddr {LINK_LOCAL[family]} counter return")
    rules.append(f"{proto} daddr @{NOMASQ} return")
    chains: list[Chain] = []
    if out_bound:
        port_rules, port_chains = _port_spreading(opts.to_ports, fully)
        chains += port_chains
        rules += port_rules
        rules.append(f"counter masquerade{fully}")
    chains.append(Chain(BASE_CHAIN, BASE_CHAIN_DECLARATION, tuple(rules)))

    sets: list[NftSet] = []
    covered: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    lists = {MASQ: config.masquerade_cidrs, NOMASQ: config.non_masquerade_cidrs}
    for name, cidrs in lists.items():
        key = SET_KEYS[name]
        # A DNS name still unresolved renders nothing (`names.expand` replaced the others).
        collapsed = collapse(
            c for c in cidrs if not isinstance(c, HostName) and c.version == family
        )
        keys = tuple(element_key(c) for c in collapsed.elements)
        comments = tuple(f"{key}: {(names or {}).get(c, c)}" for c in collapsed.elements)
        sets.append(NftSet(name, set_declaration(family), keys, comments))
        covered += [(name, str(entry), element_key(outer)) for entry, outer in collapsed.covered]
        warnings += covered_warnings(key, collapsed)
    return Table(
        family,
        opts.table,
        TABLE_COMMENT,
        tuple(sets),
        tuple(chains),
        tuple(covered),
        tuple(warnings),
    )


def set_declaration(family: Family) -> tuple[str, ...]:
    """An interval set of addresses whose every element gets a counter of its own."""
    return (f"type {_ADDRESS_TYPE[family]}", "flags interval", "counter")


def render(config: MasqConfig, family: Family, opts: RenderOptions) -> str:
    """The exact `nft -f` input masqd applies to a node with none of our table."""
    return create(desired_table(config, family, opts))


def create(table: Table) -> str:
    """Replace whatever table of our name exists by the desired one, atomically.

    Declaring the table first makes the delete valid when none exists; all three commands
    are one transaction, so traffic sees the old table or the new one, never neither.
    """
    return f"table {table.spec} {{\n}}\ndelete table {table.spec}\n{table_block(table)}"


def table_block(table: Table, *, only_chains: bool = False) -> str:
    """`table ip masqd { ... }` with everything in it (or only its chains)."""
    lines = [f"table {table.spec} {{"]
    if not only_chains:
        lines.append(f'\tcomment "{table.comment}"')
        for s in table.sets:
            lines += [f"\tset {s.name} {{", *(f"\t\t{d}" for d in s.declaration)]
            if s.keys:
                lines.append("\t\telements = {")
                lines.append(",\n".join(f"\t\t\t{_element(e)}" for e in s.elements))
                lines.append("\t\t}")
            lines.append("\t}")
    for chain in table.chains:
        lines.append(f"\tchain {chain.name} {{")
        if chain.declaration:
            lines.append(f"\t\t{chain.declaration}")
        lines += [f"\t\t{rule}" for rule in chain.rules]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def element_commands(
    table: Table, set_name: str, deleted: list[str], added: list[Element]
) -> list[str]:
    """The commands that take `deleted` (keys as listed) out of a set and put `added` in."""
    commands = []
    if deleted:
        commands.append(f"delete element {table.spec} {set_name} {{ {', '.join(deleted)} }}")
    if added:
        elements = ", ".join(_element(e) for e in added)
        commands.append(f"add element {table.spec} {set_name} {{ {elements} }}")
    return commands


def _element(e: Element) -> str:
    return f'{e.key} comment "{e.comment}"'


def _port_spreading(ranges: tuple[PortRange, ...], fully: str) -> tuple[list[str], list[Chain]]:
    """The rules that spread masqueraded tcp/udp/sctp over the --to-ports ranges.

    One range: a rule per protocol. Several: one chain per range, chosen by `numgen random`
    over all their ports together, so each range is taken in proportion to its size and every
    source port is equally likely, as upstream's chained probabilities give.
    """
    if not ranges:
        return [], []
    if len(ranges) == 1:
        return _to_ports_rules(ranges[0], fully), []
    chains = []
    choices = []
    first = 0
    for i, port_range in enumerate(ranges):
        name = PORTS_CHAIN.format(i)
        chains.append(Chain(name, "", tuple(_to_ports_rules(port_range, fully))))
        last = first + port_range[1] - port_range[0]
        choices.append(f"{_interval(first, last)} : jump {name}")
        first = last + 1
    protocols = ", ".join(PORT_PROTOCOLS)
    rule = (
        f"meta l4proto {{ {protocols} }} numgen random mod {first} vmap {{ {', '.join(choices)} }}"
    )
    return [rule], chains


def _to_ports_rules(port_range: PortRange, fully: str) -> list[str]:
    ports = _interval(*port_range)
    return [
        f"meta l4proto {proto} counter masquerade to :{ports}{fully}" for proto in PORT_PROTOCOLS
    ]


def _interval(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"
