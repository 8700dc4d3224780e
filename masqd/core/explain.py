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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from masqd.core.errors import RequestError
from masqd.core.model import Family
from masqd.core.natpath import (
    ACCEPT,
    DADDR,
    DROP,
    JUMP,
    KEEP,
    LOCAL,
    MARK,
    MASQUERADE,
    NAT_VERDICTS,
    RETURN,
    SADDR,
    SNAT,
    UNKNOWN,
    Hook,
    Met,
    NatPath,
    Packet,
    Stop,
    Walk,
    walk,
)
from masqd.core.nftrules import priority_text
from masqd.core.rules import FIRST, LINK_LOCAL, source_elements

if TYPE_CHECKING:
    from masqd.core.config import IPAddress, MasqConfig

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
    file: str = ""

    def __str__(self) -> str:
        where = f" in {self.file}" if self.file else ""
        return f"{self.key}[{self.index}] {self.value}{where}"


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


@dataclass(frozen=True)
class Explanation:
    family: Family
    destination: str
    source: str
    """Empty: any source."""
    action: str
    decided_by: str
    rule: str
    owner: str
    snat_to: str
    entry: Entry | None
    masqd: Decision
    """What masqd's rules alone decide (what the config says)."""
    position: str
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """What was assumed about the connection."""


@dataclass
class _Context:
    path: NatPath
    ours: Ours
    config: MasqConfig
    packet: Packet
    warnings: list[str] = field(default_factory=list)


def explain(path: NatPath, ours: Ours, config: MasqConfig, packet: Packet) -> Explanation:
    """The connection's fate along the path, masqd's own decision, and what differs."""
    given: list[str] = []
    if packet.source is None and (source := representative_source(config, path.family)):
        packet = Packet(packet.destination, source, packet.mark)
        given.append(f"source {source}: an address of sourceCIDRs (give --source for another)")
    ctx = _Context(path, ours, config, packet)
    notes = (*given, *_assumed(packet))
    mine = _masqd_decision(ctx)
    effective = _effective(ctx, mine)
    if effective.action == SNAT and effective.owner == "masqd":
        _check_held(ctx)
    return Explanation(
        family=path.family,
        destination=str(packet.destination),
        source=str(packet.source or ""),
        action=effective.action,
        decided_by=effective.decided_by,
        rule=effective.rule,
        owner=effective.owner,
        snat_to=effective.snat_to,
        entry=effective.entry,
        masqd=mine,
        position=_position(ctx),
        warnings=tuple(dict.fromkeys([*ctx.warnings, *path.unread])),
        notes=notes,
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


def _our_hook(ctx: _Context) -> Hook | None:
    return next((h for h in ctx.path.hooks if h.owner == ctx.ours.owner), None)


def _masqd_decision(ctx: _Context) -> Decision:
    if _local(ctx):
        return Decision(NONE_ACTION, LOCAL_DESTINATION)
    hook = _our_hook(ctx)
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
    return _named(ctx, walked.stop)


def _named(ctx: _Context, stop: Stop) -> Decision:
    """Our rule that stopped the walk (or its end), in the config's words."""
    met, family = stop.at, ctx.path.family
    if met is None or stop.kind not in (*NAT_VERDICTS, ACCEPT, RETURN):
        return _fell_through(ctx)
    rule = met.rule.text
    fields = {m.field: m for m in met.rule.matches}
    if stop.kind in (MASQUERADE, SNAT):
        to = met.rule.verdict.to
        entry = _entry(ctx, "masqueradeCIDRs", met)
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
    entry = _entry(ctx, "nonMasqueradeCIDRs", met)
    return Decision(NONE_ACTION, _label(entry, met), rule, entry=entry)


def _fell_through(ctx: _Context) -> Decision:
    family, source = ctx.path.family, ctx.packet.source
    sources = source_elements(ctx.config, family)
    if sources is not None and (source is None or not any(source in s for s in sources)):
        return Decision(NONE_ACTION, NOT_A_SOURCE)
    out = "masqOutBound" if family == 4 else "masqOutBoundIPv6"
    return Decision(NONE_ACTION, f"no entry ({out}: false)")


def _entry(ctx: _Context, key: str, met: Met) -> Entry | None:
    """The config entry a rule (or the set element it matched) stands for."""
    if met.element is not None:
        named, _, value = met.element.comment.partition(": ")
        key, cidrs = (named, [value]) if named in KEYS else (key, [met.element.key])
    else:
        cidrs = [str(n) for m in met.rule.matches if m.field == DADDR for n in m.networks]
    entries = ctx.config.masquerade_cidrs if key == KEYS[0] else ctx.config.non_masquerade_cidrs
    for cidr in cidrs:
        for i, entry in enumerate(entries):
            if str(entry) == cidr:
                return Entry(key, i, cidr, ctx.ours.config_path)
    return None


def _label(entry: Entry | None, met: Met) -> str:
    if entry is not None:
        return str(entry)
    return f"a rule of ours the config in force does not have ({met.rule.text})"


# -- the effective decision --------------------------------------------------------------------


def _effective(ctx: _Context, mine: Decision) -> Decision:
    """Every owner's chain in the kernel's order; the first NAT decision wins."""
    if _local(ctx):
        return mine
    reached = False
    for hook in ctx.path.ordered():
        walked = walk(hook, ctx.packet, ctx.path)
        ours_here = hook.owner == ctx.ours.owner
        entry_at = _entry_point(walked, ctx) if ours_here else None
        _maybe_first(ctx, walked, reached, entry_at)
        _same_priority(ctx, hook, walked)
        stop = walked.stop
        at_ours = entry_at is not None and _is_ours(stop.at, ctx)
        if stop.kind in (*NAT_VERDICTS, DROP) and stop.at is not None:
            if at_ours:
                return mine
            decision = _foreign(stop)
            if reached or entry_at is not None:
                _overridden(ctx, mine, decision)
            else:
                _preempted(ctx, mine, decision)
            return decision
        if ours_here and entry_at is None and stop.at is not None and mine.owner == "masqd":
            return _bypassed(ctx, mine, stop)
        reached = reached or entry_at is not None
    return mine


def _entry_point(walked: Walk, ctx: _Context) -> int | None:
    """Where in the walk's trace masqd's rules begin (nftables: our chain's start; iptables:
    the jump to our chain); None when the walk never got there."""
    if ctx.ours.backend == "nftables":
        return 0
    for i, met in enumerate(walked.trace):
        if (
            met.certain
            and met.rule.verdict.kind == JUMP
            and ctx.ours.chain in met.rule.verdict.chains
        ):
            return i
    return len(walked.trace) if _is_ours(walked.stop.at, ctx) else None


def _is_ours(met: Met | None, ctx: _Context) -> bool:
    if met is None or met.hook.owner != ctx.ours.owner:
        return False
    return ctx.ours.backend == "nftables" or met.chain == ctx.ours.chain


def _foreign(stop: Stop) -> Decision:
    assert stop.at is not None
    action = {KEEP: NONE_ACTION, DROP: "drop"}.get(stop.kind, stop.kind)
    hook, rule = stop.hook, stop.at.rule
    return Decision(action, f"{hook.label}: {rule.text}", rule.text, hook.owner, rule.verdict.to)


def _bypassed(ctx: _Context, mine: Decision, stop: Stop) -> Decision:
    """iptables: a rule before our jump ended POSTROUTING (an ACCEPT or a RETURN): our chain
    never saw the connection."""
    assert stop.at is not None
    decision = replace(_foreign(stop), action=NONE_ACTION)
    ctx.warnings.append(
        f"{decision.decided_by} ends POSTROUTING before masqd's jump: masqd's chain never sees "
        f"this connection (alone it would give it: {mine.action}, {mine.decided_by})"
    )
    return decision


def _jumps(hook: Hook, chain: str) -> list[int]:
    """The positions (from 1) of POSTROUTING's rules that jump to chain."""
    rules = hook.chains.get(hook.chain, ())
    return [i for i, r in enumerate(rules, 1) if chain in r.verdict.chains]


def _preempted(ctx: _Context, mine: Decision, decision: Decision) -> None:
    what = {MASQUERADE: "masquerades", SNAT: f"SNATs (to {decision.snat_to})"}.get(
        decision.action, "decides"
    )
    hint = (
        " --jump-position first puts masqd's decision before it."
        if ctx.ours.backend == "iptables" and ctx.ours.jump_position != FIRST
        else ""
    )
    if decision.action == mine.action and decision.snat_to == mine.snat_to:
        ctx.warnings.append(
            f"{decision.decided_by} {what} this connection before masqd's rules see it, as "
            f"masqd would ({mine.decided_by}): a change to masqd's config will not change it"
        )
        return
    ctx.warnings.append(
        f"{decision.decided_by} {what} this connection before masqd's rules see it; masqd "
        f"alone would give it: {mine.action} ({mine.decided_by}). The first NAT decision "
        f"wins.{hint}"
    )


def _overridden(ctx: _Context, mine: Decision, decision: Decision) -> None:
    hint = (
        " With --jump-position append, a connection masqd does not masquerade goes on to the "
        "rules after ours; --jump-position first makes the decision final."
        if ctx.ours.jump_position != FIRST
        else ""
    )
    ctx.warnings.append(
        f"masqd gives this connection: {mine.action} ({mine.decided_by}), but "
        f"{decision.decided_by} NATs it ({decision.action}) after masqd's rules.{hint}"
    )


def _maybe_first(ctx: _Context, walked: Walk, reached: bool, entry_at: int | None) -> None:
    """Another owner's rule, met before the decision, that may NAT the connection first (or,
    before our jump, end POSTROUTING so that our chain never sees it)."""
    for i, met in enumerate(walked.trace):
        if met.certain or _is_ours(met, ctx):
            continue
        before = not reached and (entry_at is None or i < entry_at)
        where = "before" if before else "after"
        if met.effect in (*NAT_VERDICTS, UNKNOWN):
            what = "may NAT this connection"
        elif before and entry_at is not None and met.effect in (ACCEPT, RETURN, DROP):
            what = "may end POSTROUTING for this connection"
        else:
            continue
        ctx.warnings.append(
            f"{met.hook.label}: {met.rule.text} {what} {where} masqd's rules: it depends on "
            f"{met.why}, which masqd cannot tell"
        )


def _same_priority(ctx: _Context, hook: Hook, walked: Walk) -> None:
    ours = _our_hook(ctx)
    if ours is None or hook is ours or hook.priority != ours.priority:
        return
    if walked.stop.kind in NAT_VERDICTS or walked.maybe:
        ctx.warnings.append(
            f"{hook.label} runs at the same priority as masqd's ({priority_text(hook.priority)})"
            " and may NAT this connection; the kernel does not define which of the two runs "
            "first"
        )


def _check_held(ctx: _Context) -> None:
    if ctx.path.local:  # offline, the node's addresses are not known
        ctx.warnings += unheld(ctx.config, ctx.path.family, ctx.path.local)


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


# -- what is reported beside ----------------------------------------------------------------


def _local(ctx: _Context) -> bool:
    destination = ctx.packet.destination
    return destination.is_loopback or destination in ctx.path.local


def _position(ctx: _Context) -> str:
    hook = _our_hook(ctx)
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
