"""Reading the kernel's answer for the nftables backend: our table out of `nft list table`
output, and the smallest transaction that makes it the desired one. Pure.

What a change rewrites is chosen to keep counters where the table's meaning did not change:

- no table, or its comment, its sets' declarations or anything we do not know in it (a map,
  a flowtable, another set) changed: the whole table is replaced (`nftrules.create`);
- a chain differs (a rule, a priority, a chain of someone else's): every chain is flushed,
  deleted and declared anew, and the sets with their elements and counters stay;
- elements differ: only those are deleted and added, so every other element keeps its counter.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from masqd.core.model import Family
from masqd.core.nftrules import (
    MASQ,
    NOMASQ,
    Element,
    NftSet,
    Table,
    create,
    element_commands,
    table_block,
)

_COUNTER = re.compile(r"\bcounter packets (\d+) bytes (\d+)")
_COMMENT = re.compile(r'\bcomment "((?:[^"\\]|\\.)*)"')
_DESTINATION = re.compile(r"\bdaddr (?!@)(\S+)")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
# A quoted string, a bracket or comma, or a run of anything else.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],]|[^"{}\[\],]+')


@dataclass(frozen=True)
class LiveElement:
    """One set element as the kernel has it."""

    key: str
    """As nft lists it (10.10.10.10, 10.0.0.0/8; someone else's may be a range)."""
    comment: str = ""
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class LiveSet:
    name: str
    declaration: tuple[str, ...]
    elements: tuple[LiveElement, ...] = ()


@dataclass(frozen=True)
class LiveRule:
    """One rule of one of our chains as nft lists it, its counter's values taken out."""

    text: str
    """`... counter ...` where nft printed `counter packets N bytes M`."""
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class LiveChain:
    name: str
    declaration: str
    rules: tuple[LiveRule, ...] = ()


@dataclass(frozen=True)
class LiveTable:
    """Our table as `nft list table` printed it (exists is False when there is none)."""

    family: Family
    name: str
    exists: bool
    comment: str = ""
    sets: tuple[LiveSet, ...] = ()
    chains: tuple[LiveChain, ...] = ()
    unknown: tuple[str, ...] = ()
    """Anything else in the table (maps, flowtables, named objects, stray lines)."""
    listing: str = field(default="", compare=False)
    """The listing itself, for people."""
    leftovers: tuple[str, ...] = ()
    """Tables of the family with our comment under another name: what an earlier --nft-table
    left (filled in by the worker's read, as the iptables backend's leftovers are)."""

    def matches(self, desired: Table) -> bool:
        """True when the table holds exactly the desired sets, elements and chains (what an
        earlier --nft-table left is not part of it, as with the iptables backend's leftovers)."""
        return _table_change(self, desired) is None


@dataclass(frozen=True)
class Counted:
    """What one counter of our table counts, in the iptables backend's words."""

    target: str
    """MASQUERADE or RETURN."""
    destination: str
    """The CIDR as listed; empty for any destination."""
    packets: int
    bytes: int


def counted(live: LiveTable) -> list[Counted]:
    """Every counter of a destination decision: each element of masq (MASQUERADE, or with
    snatToSource SNAT) and of nomasq (RETURN), and each rule that has one (link-local: RETURN;
    the catch-all and --to-ports: MASQUERADE or SNAT). sourceCIDRs' elements decide nothing."""
    masq_rule = next((r.text for c in live.chains for r in c.rules if f"@{MASQ} " in r.text), "")
    targets = {MASQ: _target(masq_rule) if masq_rule else "MASQUERADE", NOMASQ: "RETURN"}
    found = [
        Counted(targets[s.name], e.key, e.packets, e.bytes)
        for s in live.sets
        if s.name in targets
        for e in s.elements
    ]
    for chain in live.chains:
        for rule in chain.rules:
            if "counter" not in rule.text.split():
                continue
            target = _target(rule.text)
            destination = _DESTINATION.search(rule.text)
            found.append(
                Counted(
                    target, destination.group(1) if destination else "", rule.packets, rule.bytes
                )
            )
    return found


def _target(rule: str) -> str:
    """What a rule of ours does, in the iptables backend's words: MASQUERADE, SNAT (to
    snatToSource), or RETURN (a return, or with --jump-position first the connection bound to
    its own address)."""
    if "masquerade" in rule:
        return "MASQUERADE"
    if "snat to " in rule and " saddr" not in rule:
        return "SNAT"
    return "RETURN"


def parse_listing(text: str, family: Family, name: str) -> LiveTable:
    """Our table from `nft list table FAMILY NAME` output; an empty text means no table."""
    lines = _logical_lines(text)
    if not lines:
        return LiveTable(family, name, exists=False)
    comment = ""
    sets: list[LiveSet] = []
    chains: list[LiveChain] = []
    unknown: list[str] = []
    for head, body in _blocks(lines[1:]):
        words = head.split()
        if len(words) == 3 and words[0] == "set" and words[2] == "{":
            sets.append(_set(words[1], body))
        elif len(words) == 3 and words[0] == "chain" and words[2] == "{":
            chains.append(_chain(words[1], body))
        elif head.startswith("comment ") and not body:
            match = _COMMENT.fullmatch(head)
            comment = match.group(1) if match else head
        elif head != "}":
            unknown.append(head)
    return LiveTable(family, name, True, comment, tuple(sets), tuple(chains), tuple(unknown), text)


def change(live: LiveTable, desired: Table) -> str | None:
    """The `nft -f` input that makes the live table the desired one, and removes the tables an
    earlier --nft-table left (first); None when there is nothing to do."""
    removals = "".join(f"delete {table}\n" for table in leftover_tables(live, desired))
    own = _table_change(live, desired)
    return removals + own if own is not None else removals or None


def leftover_tables(live: LiveTable, desired: Table) -> tuple[str, ...]:
    """The tables an earlier --nft-table left, as `table ip NAME`."""
    protocol = desired.spec.split()[0]
    return tuple(f"table {protocol} {name}" for name in live.leftovers)


def _table_change(live: LiveTable, desired: Table) -> str | None:
    """Our own table's part of `change`."""
    if not live.exists or _table_differs(live, desired):
        return create(desired)
    commands: list[str] = []
    if _chains(live) != _wanted_chains(desired):
        commands += [f"flush chain {desired.spec} {c.name}" for c in live.chains]
        commands += [f"delete chain {desired.spec} {c.name}" for c in live.chains]
        commands.append(table_block(desired, only_chains=True).rstrip("\n"))
    live_sets = {s.name: s for s in live.sets}
    for wanted in desired.sets:
        have = {e.key: e.comment for e in live_sets[wanted.name].elements}
        commands += _element_changes(desired, wanted, have)
    return "\n".join(commands) + "\n" if commands else None


def change_from(known: Table, desired: Table) -> str | None:
    """The same as `change(as_live(known), desired)`: the transaction from a kernel known to
    hold `known`. Element diffs straight from the two tables, without building a listing of
    ten thousand elements first, when only elements differ."""
    frame = (known.family, known.name, known.comment, known.chains)
    declarations = [(s.name, s.declaration) for s in known.sets]
    if (
        frame != (desired.family, desired.name, desired.comment, desired.chains)
        or [(s.name, s.declaration) for s in desired.sets] != declarations
    ):
        return change(as_live(known), desired)
    commands: list[str] = []
    for had, wanted in zip(known.sets, desired.sets, strict=True):
        commands += _element_changes(
            desired, wanted, dict(zip(had.keys, had.comments, strict=True))
        )
    return "\n".join(commands) + "\n" if commands else None


def as_live(table: Table) -> LiveTable:
    """The live table exactly as `table` would list: what masqd knows the kernel holds after
    writing or verifying it, to change from without reading it again."""
    return LiveTable(
        table.family,
        table.name,
        True,
        table.comment,
        tuple(
            LiveSet(s.name, s.declaration, tuple(map(LiveElement, s.keys, s.comments)))
            for s in table.sets
        ),
        tuple(
            LiveChain(c.name, c.declaration, tuple(LiveRule(r) for r in c.rules))
            for c in table.chains
        ),
    )


def _table_differs(live: LiveTable, desired: Table) -> bool:
    declared = {s.name: s.declaration for s in live.sets}
    wanted = {s.name: s.declaration for s in desired.sets}
    return bool(live.unknown) or live.comment != desired.comment or declared != wanted


def _chains(live: LiveTable) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {c.name: (c.declaration, tuple(r.text for r in c.rules)) for c in live.chains}


def _wanted_chains(desired: Table) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {c.name: (c.declaration, c.rules) for c in desired.chains}


def _element_changes(table: Table, wanted: NftSet, have: dict[str, str]) -> list[str]:
    """The commands that turn a set holding `have` (key -> comment) into `wanted`."""
    deleted, added = _element_diff(have, wanted)
    return element_commands(table, wanted.name, deleted, added)


def _element_diff(have: dict[str, str], wanted: NftSet) -> tuple[list[str], list[Element]]:
    """Keys (as listed) to delete, and elements to add; an element whose comment changed is
    both. Compared as text first, as nft prints what `element_key` renders; the few left over
    are compared as networks, in case a kernel or nft prints an address another way."""
    want = dict(zip(wanted.keys, wanted.comments, strict=True))
    deleted = [key for key, comment in have.items() if want.get(key) != comment]
    added = [Element(k, c) for k, c in want.items() if have.get(k) != c]
    if deleted and added:
        gone = {_network(key): key for key in deleted}
        for e in list(added):
            key = gone.get(_network(e.key))
            if key is not None and have[key] == e.comment:
                deleted.remove(key)
                added.remove(e)
    return deleted, added


def _network(key: str) -> object:
    try:
        return ipaddress.ip_network(key)
    except ValueError:
        return key


def _set(name: str, body: list[str]) -> LiveSet:
    declaration: list[str] = []
    elements: list[LiveElement] = []
    for line in body:
        if line.startswith("elements = {") and line.endswith("}"):
            elements += (_element(e) for e in _split_elements(line[len("elements = {") : -1]))
        else:
            declaration.append(line)
    return LiveSet(name, tuple(declaration), tuple(elements))


def _element(text: str) -> LiveElement:
    key = text.split(maxsplit=1)[0] if text.strip() else ""
    counter = _COUNTER.search(text)
    comment = _COMMENT.search(text)
    return LiveElement(
        key,
        comment.group(1) if comment else "",
        int(counter.group(1)) if counter else 0,
        int(counter.group(2)) if counter else 0,
    )


def _chain(name: str, body: list[str]) -> LiveChain:
    declaration: list[str] = []
    rules: list[LiveRule] = []
    for line in body:
        # A base chain's first line, and any comment on the chain, are its declaration.
        if not rules and (line.startswith("type ") or line.startswith("comment ")):
            declaration.append(line)
            continue
        counter = _COUNTER.search(line)
        packets, nbytes = (int(counter.group(1)), int(counter.group(2))) if counter else (0, 0)
        rules.append(LiveRule(_COUNTER.sub("counter", line), packets, nbytes))
    return LiveChain(name, " ".join(declaration), tuple(rules))


def _logical_lines(text: str) -> list[str]:
    """Stripped, non-empty lines, a line continued until its braces close (nft wraps long
    element lists over several lines; a quoted string never spans two)."""
    lines: list[str] = []
    parts: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts.append(line)
        depth += _depth(line)
        opens_block = len(parts) == 1 and line.endswith("{") and not line.startswith("elements")
        if depth <= 0 or opens_block:
            lines.append(" ".join(parts))
            parts, depth = [], 0
    if parts:
        lines.append(" ".join(parts))
    return lines


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """The table's body as (head, body) pairs: a `set x {` or `chain x {` with the lines up to
    its `}`, or a single line with an empty body."""
    blocks: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        head = lines[i]
        i += 1
        body: list[str] = []
        if head.endswith("{"):
            while i < len(lines) and lines[i] != "}":
                body.append(lines[i])
                i += 1
            i += 1  # the closing brace
        blocks.append((head, body))
    return blocks


def _depth(line: str) -> int:
    """Open braces minus closed ones, outside quoted strings."""
    bare = _QUOTED.sub("", line)
    return bare.count("{") - bare.count("}")


def _split_elements(text: str) -> list[str]:
    """An element list's items, split at commas outside quotes and braces (by tokens, not
    characters: ten thousand elements make a listing of a megabyte)."""
    items: list[str] = []
    item: list[str] = []
    depth = 0
    for token in _TOKEN.findall(text):
        if token in ("{", "["):
            depth += 1
        elif token in ("}", "]"):
            depth -= 1
        elif token == "," and depth == 0:
            items.append("".join(item).strip())
            item = []
            continue
        item.append(token)
    last = "".join(item).strip()
    return [*items, last] if last else items
