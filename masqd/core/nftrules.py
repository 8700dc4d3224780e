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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from masqd.core.cidrs import collapse, covered_warnings
from masqd.core.entries import Entry, HostName
from masqd.core.model import Family
from masqd.core.rules import LINK_LOCAL, PORT_PROTOCOLS, PortRange, RenderOptions

if TYPE_CHECKING:  # workers import this module; they need no YAML parser
    from masqd.core.config import IPAddress, MasqConfig
    from masqd.core.entries import IPNetwork

BASE_CHAIN = "postrouting"
SRCNAT = 100
# The priorities nft names at the postrouting hook (it lists a priority within 10 of one as
# that name and an offset, any other as a number).
_NAMED_PRIORITIES = (("mangle", -150), ("filter", 0), ("security", 50), ("srcnat", SRCNAT))
TABLE_COMMENT = "managed by masqd (ip-masq-agent): changes to this table are reverted"
MASQ, NOMASQ, SOURCES = "masq", "nomasq", "src"
SET_KEYS = {MASQ: "masqueradeCIDRs", NOMASQ: "nonMasqueradeCIDRs", SOURCES: "sourceCIDRs"}
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
    `names` says which name an address came from, for its element's comment.

    With sourceCIDRs, a connection from any other source returns at once (the `src` set; one
    with no element of this family returns every connection). With --jump-position first,
    what kube-proxy marked for masquerade returns to it, and a kept source address is final:
    `snat to ip saddr` binds the connection to its own address, and the kernel runs no later
    nat chain for a connection already bound (a `return` would leave it to them).
    """
    proto = _PROTOCOL[family]
    nat = _masquerade(config.snat_to(family), opts)
    keep = f"snat to {proto} saddr" if opts.first else "return"
    masq_link_local = config.masq_link_local if family == 4 else config.masq_link_local_ipv6
    out_bound = config.masq_out_bound if family == 4 else config.masq_out_bound_ipv6
    rules = ["fib daddr type local return"]
    if opts.first:
        rules.append(
            f"meta mark & {opts.masquerade_mark:#010x} == {opts.masquerade_mark:#010x} return"
        )
    if config.source_cidrs:
        rules.append(f"{proto} saddr != @{SOURCES} return")
    rules.append(f"{proto} daddr @{MASQ} {nat('')}")
    if not masq_link_local:
        rules.append(f"{proto} daddr {LINK_LOCAL[family]} counter {keep}")
    rules.append(f"{proto} daddr @{NOMASQ} {keep}")
    chains: list[Chain] = []
    if out_bound:
        port_rules, port_chains = _port_spreading(opts.to_ports, nat)
        chains += port_chains
        rules += port_rules
        rules.append(f"counter {nat('')}")
    declaration = base_chain_declaration(opts.priority_offset)
    chains.append(Chain(BASE_CHAIN, declaration, tuple(rules)))

    sets: list[NftSet] = []
    covered: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    lists: dict[str, tuple[Entry, ...]] = {
        MASQ: config.masquerade_cidrs,
        NOMASQ: config.non_masquerade_cidrs,
    }
    if config.source_cidrs:
        lists[SOURCES] = config.source_cidrs
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


def base_chain_declaration(offset: int) -> str:
    """Our base chain's declaration at srcnat + offset, spelled as nft lists it."""
    return f"type nat hook postrouting priority {priority_text(SRCNAT + offset)}; policy accept;"


def priority_text(priority: int) -> str:
    """A postrouting priority as nft lists it: `srcnat + 10`, `filter - 1`, `111`."""
    for name, value in _NAMED_PRIORITIES:
        offset = priority - value
        if abs(offset) <= 10:
            return name if offset == 0 else f"{name} {'+' if offset > 0 else '-'} {abs(offset)}"
    return str(priority)


def priority_value(text: str) -> int | None:
    """The number a priority as nft lists it stands for; None when it is not one."""
    words = text.split()
    named = dict(_NAMED_PRIORITIES)
    try:
        if len(words) == 1:
            return named[words[0]] if words[0] in named else int(words[0])
        if len(words) == 3 and words[0] in named and words[1] in "+-":
            sign = 1 if words[1] == "+" else -1
            return named[words[0]] + sign * int(words[2])
    except ValueError:
        return None
    return None


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


def _masquerade(snat_to: IPAddress | None, opts: RenderOptions) -> Callable[[str], str]:
    """The statement that masquerades, with the ports it may use (`:1024-29999`, or none):
    `masquerade`, or with snatToSource `snat to` that address; fully-random with
    --random-fully. nft takes ports only after a transport protocol match."""
    fully = " fully-random" if opts.random_fully else ""

    def statement(ports: str = "") -> str:
        if snat_to is None:
            return f"masquerade{f' to :{ports}' if ports else ''}{fully}"
        address = f"[{snat_to}]" if snat_to.version == 6 and ports else str(snat_to)
        return f"snat to {address}{f':{ports}' if ports else ''}{fully}"

    return statement


def _port_spreading(
    ranges: tuple[PortRange, ...], nat: Callable[[str], str]
) -> tuple[list[str], list[Chain]]:
    """The rules that spread masqueraded tcp/udp/sctp over the --to-ports ranges.

    One range: a rule per protocol. Several: one chain per range, chosen by `numgen random`
    over all their ports together, so each range is taken in proportion to its size and every
    source port is equally likely, as upstream's chained probabilities give.
    """
    if not ranges:
        return [], []
    if len(ranges) == 1:
        return _to_ports_rules(ranges[0], nat), []
    chains = []
    choices = []
    first = 0
    for i, port_range in enumerate(ranges):
        name = PORTS_CHAIN.format(i)
        chains.append(Chain(name, "", tuple(_to_ports_rules(port_range, nat))))
        last = first + port_range[1] - port_range[0]
        choices.append(f"{_interval(first, last)} : jump {name}")
        first = last + 1
    protocols = ", ".join(PORT_PROTOCOLS)
    rule = (
        f"meta l4proto {{ {protocols} }} numgen random mod {first} vmap {{ {', '.join(choices)} }}"
    )
    return [rule], chains


def _to_ports_rules(port_range: PortRange, nat: Callable[[str], str]) -> list[str]:
    ports = _interval(*port_range)
    return [f"meta l4proto {proto} counter {nat(ports)}" for proto in PORT_PROTOCOLS]


def _interval(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"
