"""The nat postrouting path as the kernel has it, and a new connection's walk along it. Pure.

A connection's first packet, routed to a destination that is not the node's own, meets every
base chain at the nat table's postrouting hook in priority order: iptables' nat POSTROUTING
(legacy and iptables-nft, both at srcnat), and each nftables table's nat chains. In each it
walks the rules in order, into the chains they jump to, until a verdict ends the chain. The
first NAT decision wins: once a chain masquerades or SNATs the connection, the kernel runs no
later nat chain for it; a RETURN, an ACCEPT or the end of a base chain leaves it to the next
one. (`masqd.core.natparse` builds this model from what the tools print; `masqd.core.explain`
names what decided in the config's words.)

What masqd cannot know about a connection (its source when none is given, its protocol, the
interface it leaves by, an ipset's members) makes a match unknown: the walk goes on as if it
did not match and records the rule as one that may decide first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from masqd.core.errors import Kind
from masqd.core.model import Family

if TYPE_CHECKING:
    from masqd.core.config import IPAddress, IPNetwork

# What a match looks at.
SADDR, DADDR, LOCAL, MARK, FAMILY, OTHER = "saddr", "daddr", "local", "mark", "family", "other"
# What a rule does once it matches.
MASQUERADE, SNAT, KEEP = "masquerade", "snat", "keep"
"""KEEP: bound to its own address (`snat to ip saddr`): no NAT, and no later chain's either."""
ACCEPT, RETURN, DROP, JUMP, GOTO, NONE, UNKNOWN = (
    "accept", "return", "drop", "jump", "goto", "none", "unknown"
)  # fmt: skip
NAT_VERDICTS = (MASQUERADE, SNAT, KEEP)
MAX_DEPTH = 32
"""Chains deeper than this are not followed (the kernel refuses loops; this bounds the walk)."""


@dataclass(frozen=True)
class Match:
    """One condition of a rule."""

    field: str
    negated: bool = False
    networks: tuple[IPNetwork, ...] = ()
    """SADDR, DADDR: any of these (a literal, or an anonymous set)."""
    set_name: str = ""
    """SADDR, DADDR: a named set's elements instead (nftables `@name`)."""
    version: int = 0
    """SADDR, DADDR, FAMILY: the IP version it applies to (an inet table holds both)."""
    value: int = 0
    mask: int = 0xFFFFFFFF
    """MARK: (mark & mask) == value."""
    text: str = ""
    """How the tool prints it; OTHER: what masqd cannot tell."""


@dataclass(frozen=True)
class Verdict:
    kind: str
    chains: tuple[str, ...] = ()
    """JUMP, GOTO: the chain (several: one of them, chosen at random, as a numgen vmap does)."""
    to: str = ""
    """SNAT: the address (and ports) as printed."""
    mark: tuple[str, int, int] | None = None
    """NONE: a mark change, (op, value, mask) with op set, xor, or unknown."""


@dataclass(frozen=True)
class Rule:
    text: str
    """As its tool prints it (iptables-save, or nft list with the counter's values left out)."""
    matches: tuple[Match, ...]
    verdict: Verdict


@dataclass(frozen=True)
class Element:
    """One element of a named set: the addresses it covers, and its comment."""

    networks: tuple[IPNetwork, ...]
    """Empty: an element masqd cannot read (a concatenation); the set is then unknown."""
    key: str
    comment: str = ""


@dataclass(frozen=True)
class Hook:
    """One base chain at the nat postrouting hook, with the chains and sets it can reach."""

    owner: str
    """Whose it is, for people: "iptables-nft", "iptables-legacy", "table ip kube-proxy"."""
    chain: str
    priority: int
    chains: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    sets: Mapping[str, tuple[Element, ...]] = field(default_factory=dict)
    table: str = ""
    """nftables: the table as nft names it ("ip kube-proxy"); empty for iptables'."""

    def label(self, chain: str = "") -> str:
        """How explain names it: `iptables-nft nat` (iptables rules name their chain
        themselves), `table ip kube-proxy chain masquerading`."""
        if not self.table:
            return f"{self.owner} nat"
        return f"{self.owner} chain {chain or self.chain}"


@dataclass(frozen=True)
class NatPath:
    """Every owner's nat postrouting base chain for one family, in the order the kernel runs
    them (equal priorities keep the order they were read in)."""

    family: Family
    hooks: tuple[Hook, ...]
    local: tuple[IPAddress, ...] = ()
    """The node's own addresses: `--dst-type LOCAL`, `fib daddr type local`."""
    unread: tuple[str, ...] = ()
    """What could not be read, and why (the walk cannot see it)."""

    def ordered(self) -> tuple[Hook, ...]:
        return tuple(sorted(self.hooks, key=lambda h: h.priority))

    def is_local(self, address: IPAddress) -> bool:
        """An address of the node, or loopback: the kernel delivers it to the node itself."""
        return _is_local(address, self.local)


@dataclass(frozen=True)
class PathOutcome:
    """A worker's answer to a read of the nat path: the path, or why it could not be read."""

    path: NatPath | None
    error: str = ""
    kind: Kind | None = None


@dataclass(frozen=True)
class Packet:
    """The first packet of a new connection, as far as it is known."""

    destination: IPAddress
    source: IPAddress | None = None
    """None: any source (a rule matching on it may or may not match)."""
    mark: int | None = 0
    """0: a plain connection (one not through a Service, which kube-proxy may mark)."""


@dataclass(frozen=True)
class Met:
    """A rule the walk met that matched, or may have (`why` says what was unknown)."""

    hook: Hook
    chain: str
    rule: Rule
    element: Element | None = None
    """The set element that matched, when a named set decided."""
    why: str = ""
    """Empty: it matched. Else what masqd could not tell: it may have matched."""
    effect: str = ""
    """What it does (or would do) to the connection: its verdict, for a jump where the chain
    it leads to stops (a NAT verdict if any rule there may NAT), UNKNOWN if masqd cannot say."""

    @property
    def certain(self) -> bool:
        return not self.why


@dataclass(frozen=True)
class Stop:
    """Where one hook's walk ended."""

    hook: Hook
    kind: str
    """A NAT verdict, ACCEPT, DROP, or RETURN (the base chain's end or its RETURN: policy)."""
    at: Met | None = None
    """The rule that ended it; None when the base chain ran out."""


@dataclass
class Walk:
    """One hook's walk: where it stopped, and the rules it met on the way, in order: those that
    matched and went on (jumps, marks) and those that may have matched (each of which could
    have decided instead)."""

    stop: Stop
    trace: list[Met] = field(default_factory=list)

    @property
    def maybe(self) -> list[Met]:
        return [m for m in self.trace if not m.certain]


def walk(hook: Hook, packet: Packet, path: NatPath, chain: str = "") -> Walk:
    """The packet through one base chain (or, given `chain`, through that chain alone)."""
    result = Walk(Stop(hook, RETURN))
    state = _State(path, packet.mark, result.trace)
    result.stop = _chain(hook, chain or hook.chain, packet, state, 0)
    return result


@dataclass
class _State:
    path: NatPath
    mark: int | None
    trace: list[Met]


def _chain(hook: Hook, name: str, packet: Packet, state: _State, depth: int) -> Stop:
    for rule in hook.chains.get(name, ()):
        known, element, why = _all(rule, hook, packet, state)
        if known is False:
            continue
        verdict = rule.verdict
        if known is None:
            if verdict.kind != NONE:
                effect = _effect(hook, verdict, packet, state, depth)
                state.trace.append(Met(hook, name, rule, element, why, effect))
            elif verdict.mark is not None:
                state.mark = None  # it may or may not have changed the mark
            continue
        met = Met(hook, name, rule, element, "", verdict.kind)
        if verdict.kind == NONE:
            state.mark = _marked(state.mark, verdict.mark)
            continue
        if verdict.kind in (*NAT_VERDICTS, ACCEPT, DROP, RETURN):
            return Stop(hook, verdict.kind, met)
        if verdict.kind in (JUMP, GOTO) and depth < MAX_DEPTH:
            state.trace.append(met)
            stop = _branches(hook, verdict.chains, packet, state, depth + 1, met)
            if stop is not None and stop.kind != RETURN:
                return stop
            if stop is not None and verdict.kind == GOTO:
                return Stop(hook, RETURN, met)  # a goto's chain returns past its caller
            continue
        state.trace.append(replace(met, why="a target masqd does not know", effect=UNKNOWN))
    return Stop(hook, RETURN)


def _branches(
    hook: Hook, chains: tuple[str, ...], packet: Packet, state: _State, depth: int, met: Met
) -> Stop | None:
    """A jump's outcome; with several chains to choose from (numgen), the one they all come
    to, or None (recorded as undecided) when they differ."""
    stops = [_chain(hook, c, packet, state, depth) for c in chains]
    kinds = {(s.kind, s.at.rule.verdict.to if s.at else "") for s in stops}
    if len(kinds) == 1:
        return stops[0]
    effect = next((s.kind for s in stops if s.kind in NAT_VERDICTS), UNKNOWN)
    state.trace.append(replace(met, why="it picks a chain at random", effect=effect))
    return None


def _effect(hook: Hook, verdict: Verdict, packet: Packet, state: _State, depth: int) -> str:
    """What a rule that may match would do: its verdict, or for a jump what the chain it
    leads to may do (walked aside: the main walk's mark and trace stay as they are)."""
    if verdict.kind not in (JUMP, GOTO):
        return verdict.kind
    if depth >= MAX_DEPTH:
        return UNKNOWN
    aside = _State(state.path, state.mark, [])
    stops = [_chain(hook, c, packet, aside, depth + 1) for c in verdict.chains]
    nat = [s.kind for s in stops if s.kind in NAT_VERDICTS]
    nat += [m.effect for m in aside.trace if m.effect in (*NAT_VERDICTS, UNKNOWN)]
    return nat[0] if nat else stops[0].kind


def _marked(mark: int | None, change: tuple[str, int, int] | None) -> int | None:
    if change is None or mark is None:
        return mark
    op, value, mask = change
    if op == "set":
        return (mark & ~mask & 0xFFFFFFFF) | (value & mask)
    if op == "xor":
        return mark ^ value
    return None


def _all(
    rule: Rule, hook: Hook, packet: Packet, state: _State
) -> tuple[bool | None, Element | None, str]:
    """Whether every match of the rule holds: True, False, or None (unknown, and why)."""
    element: Element | None = None
    unknown: list[str] = []
    for m in rule.matches:
        result, found, why = _one(m, hook, packet, state)
        if result is False:
            return False, None, ""
        if result is None:
            unknown.append(why)
        element = found or element
    return (None if unknown else True), element, "; ".join(unknown)


def _one(
    m: Match, hook: Hook, packet: Packet, state: _State
) -> tuple[bool | None, Element | None, str]:
    family = state.path.family
    if m.field in (SADDR, DADDR, FAMILY) and m.version and m.version != family:
        return False, None, ""
    if m.field == FAMILY:
        return not m.negated, None, ""
    if m.field == LOCAL:
        local = _is_local(packet.destination, state.path.local)
        return local != m.negated, None, ""
    if m.field == MARK:
        if state.mark is None:
            return None, None, f"the connection's mark ({m.text})"
        return ((state.mark & m.mask) == m.value) != m.negated, None, ""
    if m.field in (SADDR, DADDR):
        address = packet.source if m.field == SADDR else packet.destination
        if address is None:
            return None, None, f"its source ({m.text})"
        if m.set_name:
            elements = hook.sets.get(m.set_name)
            if elements is None or any(not e.networks for e in elements):
                return None, None, f"set @{m.set_name}, which masqd cannot read"
            found = next((e for e in elements if _inside(address, e.networks)), None)
            return (found is not None) != m.negated, found, ""
        return _inside(address, m.networks) != m.negated, None, ""
    return None, None, m.text


def _inside(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _is_local(address: IPAddress, local: tuple[IPAddress, ...]) -> bool:
    """An address of the node, or loopback: the kernel delivers it to the node itself."""
    return address.is_loopback or address in local


def network(text: str) -> tuple[IPNetwork, ...]:
    """An address, a CIDR or a range (a-b) as the tools print them; () when it is none."""
    try:
        if "-" in text and "/" not in text:
            low, _, high = text.partition("-")
            first, last = ipaddress.ip_address(low), ipaddress.ip_address(high)
            if first.version != last.version:
                return ()
            return tuple(ipaddress.summarize_address_range(first, last))
        return (ipaddress.ip_network(text, strict=False),)
    except ValueError:
        return ()
