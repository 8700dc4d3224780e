"""`masqctl explain`: what a pod's new connection to a destination gets, which rule decides,
and in the config's words which entry that is. Pure: the nat path (`masqd.core.natpath`, as
the kernel has it, or as a config renders it offline) in, an `Explanation` out; the config is
used only to name the entry a live rule stands for.

Two walks are made. masqd's own: our chain (or table) alone, which is what the config decides.
The effective one: every owner's nat postrouting chain in the kernel's order, where the first
NAT decision wins. When they differ, a warning says who decided instead and why: a rule before
our jump (or a chain of lower priority) that masquerades first, or, after our chain returned
the connection unmasqueraded, a rule after ours that masquerades it anyway.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from masqd.core.attribution import (
    LOCAL_DESTINATION,
    NONE_ACTION,
    Decision,
    Entries,
    Entry,
    Ours,
    entries_of,
    named,
)
from masqd.core.errors import RequestError
from masqd.core.model import Family
from masqd.core.natpath import SNAT, Hook, NatPath, Packet, walk
from masqd.core.nftrules import priority_text
from masqd.core.precedence import Judging, effective
from masqd.core.rules import FIRST, source_elements

if TYPE_CHECKING:
    from masqd.core.config import IPAddress, MasqConfig

__all__ = [
    "Decision",
    "Entry",
    "Explanation",
    "Ours",
    "entries_of",
    "explain",
    "packet_of",
    "unheld",
]


@dataclass(frozen=True)
class Explanation:
    family: Family
    destination: str
    source: str
    """Empty: any source."""
    fate: Decision
    """What the connection gets in the kernel: the first NAT decision along the path."""
    masqd: Decision
    """What masqd's rules alone decide (what the config says)."""
    position: str
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """What was assumed about the connection."""

    @property
    def action(self) -> str:
        return self.fate.action

    @property
    def decided_by(self) -> str:
        return self.fate.decided_by

    @property
    def owner(self) -> str:
        return self.fate.owner


def explain(
    path: NatPath,
    ours: Ours,
    config: MasqConfig,
    packet: Packet,
    entries: Entries | None = None,
) -> Explanation:
    """The connection's fate along the path, masqd's own decision, and what differs.
    `entries` names the config entries (entries_of: DNS names, --config-dir's files); by
    default the config's own CIDRs, in ours.config_path."""
    given: list[str] = []
    if packet.source is None and (source := representative_source(config, path.family)):
        packet = Packet(packet.destination, source, packet.mark)
        given.append(f"source {source}: an address of sourceCIDRs (give --source for another)")
    judging = Judging(path, ours, packet)
    named_as = entries if entries is not None else entries_of(config, file=ours.config_path)
    mine = _masqd_decision(judging, config, named_as)
    fate = effective(judging, mine)
    if fate.action == SNAT and fate.owner == "masqd" and path.local:
        judging.warnings += unheld(config, path.family, path.local)  # offline: not known
    return Explanation(
        family=path.family,
        destination=str(packet.destination),
        source=str(packet.source or ""),
        fate=fate,
        masqd=mine,
        position=_position(judging),
        warnings=tuple(dict.fromkeys([*judging.warnings, *path.unread])),
        notes=(*given, *_assumed(packet)),
    )


def packet_of(destination: str, source: str = "", family: Family | None = None) -> Packet:
    """The connection asked about; RequestError saying what is wrong with the addresses."""
    try:
        dst = ipaddress.ip_address(destination.strip())
    except ValueError:
        raise RequestError(f"destination {destination!r} is not an IP address") from None
    if family is not None and dst.version != family:
        raise RequestError(f"destination {dst} is not an {family.label} address")
    src = None
    if source.strip():
        try:
            src = ipaddress.ip_address(source.strip())
        except ValueError:
            raise RequestError(f"source {source!r} is not an IP address") from None
        if src.version != dst.version:
            raise RequestError(f"source {src} and destination {dst} are of different families")
    return Packet(dst, src)


def representative_source(config: MasqConfig, family: Family) -> IPAddress | None:
    """With sourceCIDRs and no --source, a pod's address: the first of the first source."""
    elements = source_elements(config, family)
    if not elements:
        return None
    first = elements[0]
    return first.network_address + 1 if first.num_addresses > 2 else first.network_address


# -- masqd's own decision ----------------------------------------------------------------------


def _masqd_decision(ctx: Judging, config: MasqConfig, entries: Entries) -> Decision:
    """What our chain (or table) alone gives the connection: what the config decides."""
    if ctx.local():
        return Decision(NONE_ACTION, LOCAL_DESTINATION)
    hook = ctx.our_hook()
    iptables = ctx.ours.backend == "iptables"
    if hook is None or (iptables and ctx.ours.chain not in hook.chains):
        what = f"chain {ctx.ours.chain}" if iptables else f"table ({ctx.ours.owner})"
        ctx.warnings.append(f"masqd's {what} is not in the kernel: it decides nothing")
        return Decision(NONE_ACTION, f"not in our chain: masqd's {what} is missing")
    if iptables and not _jumps(hook, ctx.ours.chain):
        ctx.warnings.append(
            f"masqd's jump to {ctx.ours.chain} is missing from POSTROUTING: our chain "
            "decides nothing until a sync puts it back"
        )
        return Decision(NONE_ACTION, "not in our chain: our jump is missing from POSTROUTING")
    walked = walk(hook, ctx.packet, ctx.path, ctx.ours.chain if iptables else "")
    return named(walked.stop, config, ctx.path.family, ctx.packet.source, entries)


def _jumps(hook: Hook, chain: str) -> list[int]:
    """The positions (from 1) of POSTROUTING's rules that jump to chain."""
    rules = hook.chains.get(hook.chain, ())
    return [i for i, r in enumerate(rules, 1) if chain in r.verdict.chains]


def unheld(config: MasqConfig, family: Family, local: tuple[IPAddress, ...]) -> tuple[str, ...]:
    """The warning for an snatToSource address the node does not hold (not an error: it may
    be added later, as a floating address often is)."""
    address = config.snat_to(family)
    if address is None or address in local:
        return ()
    key = "snatToSource" if family == 4 else "snatToSourceIPv6"
    return (
        f"{key} {address} is not an address of this node: connections SNATed to it get "
        "their replies only if the network routes that address here",
    )


def _position(ctx: Judging) -> str:
    hook = ctx.our_hook()
    wanted = ctx.ours.jump_position
    if hook is None:
        return f"{wanted} (masqd's rules are not in the kernel)"
    if ctx.ours.backend == "nftables":
        return f"{wanted}: our chain at priority {priority_text(hook.priority)}"
    jumps = _jumps(hook, ctx.ours.chain)
    if not jumps:
        return f"{wanted}: no jump to {ctx.ours.chain} in POSTROUTING"
    total = len(hook.chains.get(hook.chain, ()))
    at = ", ".join(str(i) for i in jumps)
    if wanted == FIRST and jumps[0] != 1:
        ctx.warnings.append(
            f"masqd's jump is rule {jumps[0]} of POSTROUTING, not the first: the rules before "
            "it decide first until a sync moves it back"
        )
    return f"{wanted}: our jump is rule {at} of {total} in POSTROUTING"


def _assumed(packet: Packet) -> tuple[str, ...]:
    notes = []
    if packet.source is None:
        notes.append("any source: a rule that matches on the source is one that may decide")
    notes.append(
        "a plain connection: no mark (kube-proxy marks some Service traffic), any protocol"
    )
    return tuple(notes)
