"""Our rules in the config's words: which entry a rule of masqd's chain (or an element of its
sets) stands for, and what it decides. Pure; used by `masqd.core.explain`.

A live rule names its entry by what it matches: the CIDR of its `-d` (the iptables backend),
or the comment of the set element the connection matched (nftables: an element is one entry,
which may stand for entries inside it too). A rule no entry of the config in force accounts
for is said to be so: the live chain is then not (yet) the config's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from masqd.core.model import Family
from masqd.core.names import Answer, expansion
from masqd.core.natpath import (
    ACCEPT,
    DADDR,
    LOCAL,
    MARK,
    MASQUERADE,
    NAT_VERDICTS,
    RETURN,
    SADDR,
    SNAT,
    Met,
    Stop,
)
from masqd.core.rules import LINK_LOCAL, source_elements

if TYPE_CHECKING:
    from masqd.core.config import IPAddress, MasqConfig, Origin

NONE_ACTION = "none"
"""The connection leaves with the pod's own address."""
LOCAL_DESTINATION = "not in our chain: local destination"
NOT_A_SOURCE = "not in our chain: the source is not in sourceCIDRs"
KEYS = ("masqueradeCIDRs", "nonMasqueradeCIDRs")


@dataclass(frozen=True)
class Ours:
    """Which rules of the path are masqd's, and where masqd wants them."""

    backend: str
    """iptables or nftables."""
    owner: str
    """The Hook.owner of ours: the iptables tool ("iptables-nft"), or "table ip masqd"."""
    chain: str
    """Our chain (iptables), or our base chain (nftables)."""
    jump_position: str = "append"
    config_path: str = ""


@dataclass(frozen=True)
class Entry:
    """A config entry: `nonMasqueradeCIDRs[1] 172.16.0.0/12`."""

    key: str
    index: int
    value: str
    """As the file spells it: a CIDR, or a DNS name."""
    file: str = ""
    resolved: str = ""
    """A DNS name: the address of its answer that decides."""

    def __str__(self) -> str:
        address = f" ({self.resolved})" if self.resolved else ""
        where = f" in {self.file}" if self.file else ""
        return f"{self.key}[{self.index}] {self.value}{address}{where}"


Entries = Mapping[tuple[str, str], Entry]
"""(key, a CIDR as rendered) -> the config entry it comes from."""


def entries_of(
    config: MasqConfig,
    answers: Mapping[str, Answer] | None = None,
    origins: tuple[Origin, ...] = (),
    file: str = "",
) -> dict[tuple[str, str], Entry]:
    """What each CIDR our rules can hold stands for in the config: its list, its place there,
    the DNS name it resolved from (with `answers`), and the file (with --config-dir, each
    entry's own, from `origins`; else `file`)."""
    sources = {(o.key, o.entry): o.source for o in origins}
    found: dict[tuple[str, str], Entry] = {}
    for key in KEYS:
        listed = config.masquerade_cidrs if key == KEYS[0] else config.non_masquerade_cidrs
        first = {entry: i for i, entry in reversed(list(enumerate(listed)))}
        for network, entry in expansion(listed, answers or {}):
            resolved = str(network) if network != entry else ""
            where = sources.get((key, entry), file)
            found.setdefault(
                (key, str(network)), Entry(key, first[entry], str(entry), where, resolved)
            )
    return found


@dataclass(frozen=True)
class Decision:
    action: str
    """masquerade, snat, none (the pod's own address), or drop."""
    decided_by: str
    rule: str = ""
    """The rule that decided, as its tool prints it."""
    owner: str = "masqd"
    snat_to: str = ""
    entry: Entry | None = None


def named(
    stop: Stop, config: MasqConfig, family: Family, source: IPAddress | None, entries: Entries
) -> Decision:
    """Our rule that stopped a walk of our chain (or its end), in the config's words
    (`entries`: see entries_of)."""
    met = stop.at
    if met is None or stop.kind not in (*NAT_VERDICTS, ACCEPT, RETURN):
        return _fell_through(config, family, source)
    rule = met.rule.text
    fields = {m.field: m for m in met.rule.matches}
    if stop.kind in (MASQUERADE, SNAT):
        to = met.rule.verdict.to
        entry = _entry(entries, "masqueradeCIDRs", met)
        if entry is None and DADDR not in fields and met.element is None:
            out = "masqOutBound" if family == 4 else "masqOutBoundIPv6"
            return Decision(stop.kind, f"the catch-all ({out}: true)", rule, snat_to=to)
        return Decision(stop.kind, _label(entry, met), rule, snat_to=to, entry=entry)
    if MARK in fields:
        return Decision(NONE_ACTION, "kube-proxy's masquerade mark: left to kube-proxy", rule)
    if LOCAL in fields:
        return Decision(NONE_ACTION, LOCAL_DESTINATION, rule)
    if SADDR in fields and fields[SADDR].negated:
        return Decision(NONE_ACTION, NOT_A_SOURCE, rule)
    link_local = LINK_LOCAL[family]
    daddr = fields.get(DADDR)
    if daddr is not None and daddr.networks == (link_local,) and met.element is None:
        key = "masqLinkLocal" if family == 4 else "masqLinkLocalIPv6"
        return Decision(NONE_ACTION, f"the link-local rule {link_local} ({key}: false)", rule)
    entry = _entry(entries, "nonMasqueradeCIDRs", met)
    return Decision(NONE_ACTION, _label(entry, met), rule, entry=entry)


def _fell_through(config: MasqConfig, family: Family, source: IPAddress | None) -> Decision:
    """No rule of ours decided: a source sourceCIDRs leaves out, or no entry covers it."""
    sources = source_elements(config, family)
    if sources is not None and (source is None or not any(source in s for s in sources)):
        return Decision(NONE_ACTION, NOT_A_SOURCE)
    out = "masqOutBound" if family == 4 else "masqOutBoundIPv6"
    return Decision(NONE_ACTION, f"no entry ({out}: false)")


def _entry(entries: Entries, key: str, met: Met) -> Entry | None:
    """The config entry a rule (or the set element it matched) stands for."""
    if met.element is not None:
        # Its comment names the entry ("nonMasqueradeCIDRs: 10.0.0.0/8"; a DNS name's address:
        # the name), its key the address: the key finds a name's entry.
        named, _, _ = met.element.comment.partition(": ")
        key = named if named in KEYS else key
        cidrs = [str(n) for n in met.element.networks]
    else:
        cidrs = [str(n) for m in met.rule.matches if m.field == DADDR for n in m.networks]
    return next((entries[key, c] for c in cidrs if (key, c) in entries), None)


def _label(entry: Entry | None, met: Met) -> str:
    if entry is not None:
        return str(entry)
    return f"a rule of ours the config in force does not have ({met.rule.text})"
