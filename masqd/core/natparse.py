"""The nat postrouting path out of what the tools print: `iptables-save -t nat` and
`nft list table`. Pure: text in, `masqd.core.natpath` model out.

Only what decides NAT is read: addresses (literals, sets), the local-destination type, the
mark, the verdicts and the chains they lead to. Any other match (an interface, a protocol, an
ipset, conntrack state, a random share) is kept as text and counts as unknown, so a rule using
it is one that *may* decide, never one taken to decide.
"""

from __future__ import annotations

import re
import shlex

from masqd.core import nftlive
from masqd.core.model import Family
from masqd.core.natpath import (
    ACCEPT,
    DADDR,
    DROP,
    FAMILY,
    GOTO,
    JUMP,
    KEEP,
    LOCAL,
    MARK,
    MASQUERADE,
    NONE,
    OTHER,
    RETURN,
    SADDR,
    SNAT,
    UNKNOWN,
    Element,
    Hook,
    Match,
    Rule,
    Verdict,
    network,
)
from masqd.core.nftrules import priority_value

IPTABLES_PRIORITY = 100
"""iptables' nat POSTROUTING, legacy and iptables-nft alike: NF_IP_PRI_NAT_SRC (srcnat)."""
_IPTABLES_VERDICTS = {"ACCEPT": ACCEPT, "RETURN": RETURN, "DROP": DROP, "REJECT": DROP}
_IPTABLES_NAT = {"MASQUERADE": MASQUERADE, "SNAT": SNAT, "NETMAP": SNAT}
_NFT_VERSIONS = {"ip": 4, "ip6": 6}
_NFT_FAMILIES = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}
_NAT_HOOK = re.compile(r"\btype nat hook postrouting priority ([^;]+);")
_NFT_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\S+')


# -- iptables -------------------------------------------------------------------------------


def iptables_hook(text: str, owner: str) -> Hook | None:
    """iptables' nat POSTROUTING and every chain of the nat table, from `iptables-save -t nat`
    (with or without -c); None when the output holds no nat table."""
    chains: dict[str, list[Rule]] = {}
    in_nat = False
    for raw in text.splitlines():
        line = re.sub(r"^\[\d+:\d+\] ", "", raw.strip())
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif in_nat and line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif in_nat and line.startswith("-A "):
            name = line.split()[1]
            chains.setdefault(name, []).append(iptables_rule(line, set(chains)))
    if "POSTROUTING" not in chains:
        return None
    frozen = {name: tuple(rules) for name, rules in chains.items()}
    return Hook(owner, "POSTROUTING", IPTABLES_PRIORITY, frozen)


def iptables_rule(spec: str, chains: set[str] | None = None) -> Rule:
    """One rule as iptables-save prints it ("-A CHAIN ..."). A -j naming no target masqd
    knows is a jump when `chains` holds it (unknown chains: every name counts as one)."""
    try:
        words = shlex.split(spec)[2:]
    except ValueError:
        return Rule(spec, (Match(OTHER, text=spec),), Verdict(UNKNOWN))
    matches: list[Match] = []
    verdict = Verdict(NONE)
    i, negate = 0, False
    while i < len(words):
        word = words[i]
        if word == "!":
            negate, i = True, i + 1
            continue
        if word in ("-s", "-d") and i + 1 < len(words):
            field = SADDR if word == "-s" else DADDR
            shown = f"{'! ' if negate else ''}{word} {words[i + 1]}"
            matches.append(Match(field, negate, network(words[i + 1]), text=shown))
            i += 2
        elif word == "-m" and i + 1 < len(words):
            end = _module_end(words, i + 2)
            matches += _module(words[i + 1], words[i + 2 : end])
            i = end
        elif word in ("-j", "-g") and i + 1 < len(words):
            verdict = _target(word, words[i + 1], words[i + 2 :], chains)
            break
        else:  # -p, -i, -o, -f: a match masqd does not evaluate
            end = _next_option(words, i + 2, ("-s", "-d", "-m", "-j", "-g", "!", "-p", "-i", "-o"))
            matches.append(Match(OTHER, text=" ".join((["!"] if negate else []) + words[i:end])))
            i = end
        negate = False
    return Rule(spec, tuple(matches), verdict)


_BASIC = ("-s", "-d", "-p", "-i", "-o", "-f", "-m", "-j", "-g")


def _module_end(words: list[str], start: int) -> int:
    """Where a module's options end: at the next option of iptables' own (a `!` before one
    belongs to it; a `!` before a `--option` is the module's own)."""
    i = start
    while i < len(words):
        if words[i] in _BASIC:
            return i
        if words[i] == "!" and i + 1 < len(words) and words[i + 1] in _BASIC:
            return i
        i += 1
    return i


def _next_option(words: list[str], start: int, stops: tuple[str, ...]) -> int:
    i = start
    while i < len(words) and words[i] not in stops:
        i += 1
    return i


def _module(name: str, args: list[str]) -> list[Match]:
    shown = " ".join(["-m", name, *args])
    if name == "comment":
        return []
    negated = "!" in args
    values = [a for a in args if a != "!"]
    if name == "addrtype" and values == ["--dst-type", "LOCAL"]:
        return [Match(LOCAL, negated, text=shown)]
    if name == "mark" and len(values) == 2 and values[0] == "--mark":
        value, _, mask = values[1].partition("/")
        try:
            return [
                Match(
                    MARK,
                    negated,
                    value=int(value, 0),
                    mask=int(mask or "0xffffffff", 0),
                    text=shown,
                )
            ]
        except ValueError:
            pass
    return [Match(OTHER, text=shown)]


def _target(option: str, name: str, args: list[str], chains: set[str] | None) -> Verdict:
    if option == "-g":
        return Verdict(GOTO, (name,))
    if name in _IPTABLES_VERDICTS:
        return Verdict(_IPTABLES_VERDICTS[name])
    if name in _IPTABLES_NAT:
        to = args[args.index("--to-source") + 1] if "--to-source" in args else ""
        to = to or (args[args.index("--to") + 1] if "--to" in args else "")
        return Verdict(_IPTABLES_NAT[name], to=to)
    if name == "MARK":
        return Verdict(NONE, mark=_mark_change(args))
    if name in ("LOG", "NFLOG", "CONNMARK", "TRACE", "AUDIT", "NOTRACK", "CT"):
        return Verdict(NONE)
    if chains is None or name in chains:
        return Verdict(JUMP, (name,))
    return Verdict(UNKNOWN, to=" ".join([name, *args]))


def _mark_change(args: list[str]) -> tuple[str, int, int]:
    try:
        if len(args) == 2 and args[0] == "--set-xmark":
            value, _, mask = args[1].partition("/")
            return "set", int(value, 0), int(mask or "0xffffffff", 0)
        if len(args) == 2 and args[0] == "--xor-mark":
            return "xor", int(args[1], 0), 0
    except ValueError:
        pass
    return "unknown", 0, 0


# -- nftables -------------------------------------------------------------------------------


def nat_tables(listing: str) -> list[str]:
    """The tables ("ip kube-proxy") with a nat chain at postrouting, from `nft list chains`
    (or any listing of whole tables)."""
    found: list[str] = []
    for table in _tables(listing):
        if _NAT_HOOK.search(table):
            found.append(" ".join(table.split("{", 1)[0].split()[1:3]))
    return found


def nft_hooks(listing: str, family: Family) -> list[Hook]:
    """The nat postrouting base chains of one table, from `nft list table`, that see the
    family's packets (an inet table's see both)."""
    head = listing.lstrip().split("{", 1)[0].split()
    if len(head) < 3 or head[0] != "table" or family not in _NFT_FAMILIES.get(head[1], ()):
        return []
    table = nftlive.parse_listing(listing, family, head[2])
    spec = f"{head[1]} {head[2]}"
    chains = {c.name: tuple(nft_rule(r.text, head[1]) for r in c.rules) for c in table.chains}
    sets = {s.name: _elements(s) for s in table.sets}
    hooks = []
    for chain in table.chains:
        hook = _NAT_HOOK.search(chain.declaration)
        priority = priority_value(hook.group(1).strip()) if hook else None
        if priority is not None:
            hooks.append(Hook(f"table {spec}", chain.name, priority, chains, sets, spec))
    return hooks


def _tables(listing: str) -> list[str]:
    return [t for t in re.split(r"(?m)^(?=table )", listing) if t.startswith("table ")]


def _elements(live: nftlive.LiveSet) -> tuple[Element, ...]:
    """A set's elements as addresses; none readable unless the set holds plain addresses (a
    concatenation or a set of ports matches on more than an address)."""
    addresses = any(d in ("type ipv4_addr", "type ipv6_addr") for d in live.declaration)
    return tuple(
        Element(network(e.key) if addresses else (), e.key, e.comment) for e in live.elements
    )


def nft_rule(text: str, table_family: str = "ip") -> Rule:
    """One rule as nft lists it (counters' values left out, as nftlive leaves them)."""
    words = _NFT_WORD.findall(text)
    matches: list[Match] = []
    verdict = Verdict(NONE)
    other: list[str] = []
    i = 0
    while i < len(words):
        taken, found = _nft_statement(words, i)
        if found is None:
            other.append(words[i])
            i += 1
            continue
        if other:
            matches.append(Match(OTHER, text=" ".join(other)))
            other = []
        if isinstance(found, Match):
            matches.append(found)
        elif found.kind != NONE or found.mark is not None:
            verdict = found
        i += taken
    if other:
        matches.append(Match(OTHER, text=" ".join(other)))
    return Rule(text, tuple(matches), verdict)


def _nft_statement(words: list[str], i: int) -> tuple[int, Match | Verdict | None]:
    """The statement at words[i]: how many words it takes, and what it is (None: unknown)."""
    word = words[i]
    rest = words[i:]
    if word in _NFT_VERSIONS and len(rest) >= 3 and rest[1] in ("saddr", "daddr"):
        return _address(rest, _NFT_VERSIONS[word])
    if rest[:3] == ["fib", "daddr", "type"] and len(rest) >= 4:
        negated = rest[3] == "!="
        kind = rest[4] if negated and len(rest) > 4 else rest[3]
        if kind == "local":
            return (5 if negated else 4), Match(
                LOCAL, negated, text=" ".join(rest[: 5 if negated else 4])
            )
    if rest[:3] == ["meta", "mark", "&"] and len(rest) >= 6 and rest[4] in ("==", "!="):
        try:
            match = Match(MARK, rest[4] == "!=", value=int(rest[5], 0), mask=int(rest[3], 0),
                          text=" ".join(rest[:6]))  # fmt: skip
            return 6, match
        except ValueError:
            return 0, None
    if rest[:3] == ["meta", "mark", "set"]:
        return _mark_set(rest)
    if rest[:2] == ["meta", "nfproto"] and len(rest) >= 3 and rest[2] in ("ipv4", "ipv6"):
        return 3, Match(FAMILY, version=4 if rest[2] == "ipv4" else 6, text=" ".join(rest[:3]))
    if word == "counter":
        return 1, Verdict(NONE)
    if word == "comment" and len(rest) >= 2:
        return 2, Verdict(NONE)
    return _nft_verdict(rest)


def _address(rest: list[str], version: int) -> tuple[int, Match | Verdict | None]:
    field = SADDR if rest[1] == "saddr" else DADDR
    negated = rest[2] == "!="
    at = 3 if rest[2] in ("!=", "==") else 2
    if at >= len(rest):
        return 0, None
    value = rest[at]
    if value in ("map", "vmap"):  # a lookup whose result masqd does not follow
        return 0, None
    shown = " ".join(rest[: at + 1])
    if value.startswith("@"):
        return at + 1, Match(field, negated, set_name=value[1:], version=version, text=shown)
    items = [v.strip() for v in value.strip("{}").split(",")] if value.startswith("{") else [value]
    networks = tuple(n for item in items for n in network(item))
    if len(networks) < len(items) or not networks:
        return at + 1, Match(OTHER, text=shown)
    return at + 1, Match(field, negated, networks, version=version, text=shown)


def _mark_set(rest: list[str]) -> tuple[int, Verdict]:
    """`meta mark set VALUE` or `meta mark set meta mark ^ VALUE` (how kube-proxy clears its
    masquerade bit); any other form changes the mark in a way masqd does not follow."""
    try:
        if rest[3:6] == ["meta", "mark", "^"] and len(rest) >= 7:
            return 7, Verdict(NONE, mark=("xor", int(rest[6], 0), 0))
        if len(rest) >= 4:
            return 4, Verdict(NONE, mark=("set", int(rest[3], 0), 0xFFFFFFFF))
    except ValueError:
        pass
    return 4, Verdict(NONE, mark=("unknown", 0, 0))


def _nft_verdict(rest: list[str]) -> tuple[int, Verdict | None]:
    word = rest[0]
    simple = {"accept": ACCEPT, "return": RETURN, "drop": DROP, "reject": DROP}
    if word in simple:
        return len(rest), Verdict(simple[word])
    if word in ("jump", "goto") and len(rest) >= 2:
        return 2, Verdict(JUMP if word == "jump" else GOTO, (rest[1],))
    if word == "masquerade":
        return len(rest), Verdict(MASQUERADE)
    if word == "snat" and "to" in rest:
        to = rest[rest.index("to") + 1 :]
        if to[:2] in (["ip", "saddr"], ["ip6", "saddr"]):
            return len(rest), Verdict(KEEP)
        return len(rest), Verdict(SNAT, to=" ".join(t for t in to if t not in _NAT_FLAGS))
    if word == "numgen" and "vmap" in rest:  # --to-ports: one of these chains at random
        at = rest.index("vmap")
        targets = re.findall(r"(?:jump|goto) ([^\s,}]+)", " ".join(rest[at + 1 :]))
        if targets:
            return len(rest), Verdict(JUMP, tuple(targets))
    if word == "vmap":  # a verdict looked up in a map: masqd does not follow it
        return len(rest), Verdict(UNKNOWN, to=" ".join(rest))
    return 0, None


_NAT_FLAGS = ("fully-random", "random", "persistent")
