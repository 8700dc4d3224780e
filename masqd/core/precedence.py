"""Who decides a connection when masqd is not alone: every owner's nat postrouting chain in
the kernel's order, where the first NAT decision wins, and the warnings that say who decided
instead of masqd and why. Pure; used by `masqd.core.explain`.

Before masqd's rules: a rule ahead of our jump in POSTROUTING, or a chain of lower priority,
that masquerades first. After them: a RETURN (append) leaves the connection to the rules after
our jump and to the chains of higher priority, one of which may masquerade what masqd keeps.
Beside them: a chain of the same priority, whose order against ours the kernel leaves
undefined. And rules that may decide, because they match on what masqd cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from masqd.core.attribution import NONE_ACTION, Decision, Ours
from masqd.core.natpath import (
    ACCEPT,
    DROP,
    JUMP,
    KEEP,
    MASQUERADE,
    NAT_VERDICTS,
    RETURN,
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
from masqd.core.rules import FIRST


@dataclass
class Judging:
    """One connection judged along one path; what is found odd gathers in `warnings`."""

    path: NatPath
    ours: Ours
    packet: Packet
    warnings: list[str] = field(default_factory=list)

    def our_hook(self) -> Hook | None:
        return next((h for h in self.path.hooks if h.owner == self.ours.owner), None)

    def local(self) -> bool:
        """The destination is the node's own: delivered to it, never through postrouting."""
        return self.path.is_local(self.packet.destination)


def effective(ctx: Judging, mine: Decision) -> Decision:
    """Every owner's chain in the kernel's order; the first NAT decision wins."""
    if ctx.local():
        return mine
    _same_priority(ctx)
    reached = False
    for hook in ctx.path.ordered():
        walked = walk(hook, ctx.packet, ctx.path)
        ours_here = hook.owner == ctx.ours.owner
        entry_at = _entry_point(walked, ctx) if ours_here else None
        _maybe_first(ctx, walked, reached, entry_at)
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


def _entry_point(walked: Walk, ctx: Judging) -> int | None:
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


def _is_ours(met: Met | None, ctx: Judging) -> bool:
    if met is None or met.hook.owner != ctx.ours.owner:
        return False
    return ctx.ours.backend == "nftables" or met.chain == ctx.ours.chain


def _foreign(stop: Stop) -> Decision:
    assert stop.at is not None
    action = {KEEP: NONE_ACTION, DROP: "drop"}.get(stop.kind, stop.kind)
    hook, rule = stop.hook, stop.at.rule
    label = f"{hook.label(stop.at.chain)}: {rule.text}"
    return Decision(action, label, rule.text, hook.owner, rule.verdict.to)


def _bypassed(ctx: Judging, mine: Decision, stop: Stop) -> Decision:
    """iptables: a rule before our jump ended POSTROUTING (an ACCEPT or a RETURN): our chain
    never saw the connection."""
    assert stop.at is not None
    decision = replace(_foreign(stop), action=NONE_ACTION)
    ctx.warnings.append(
        f"{decision.decided_by} ends POSTROUTING before masqd's jump: masqd's chain never sees "
        f"this connection (alone it would give it: {mine.action}, {mine.decided_by})"
    )
    return decision


def _preempted(ctx: Judging, mine: Decision, decision: Decision) -> None:
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


def _overridden(ctx: Judging, mine: Decision, decision: Decision) -> None:
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


def _maybe_first(ctx: Judging, walked: Walk, reached: bool, entry_at: int | None) -> None:
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
            f"{met.hook.label(met.chain)}: {met.rule.text} {what} {where} masqd's rules: it "
            f"depends on {met.why}, which masqd cannot tell"
        )


def _same_priority(ctx: Judging) -> None:
    """Another owner's chain at our priority that may NAT the connection: which of two equal
    priorities runs first, the kernel does not say (the order they were registered in)."""
    ours = ctx.our_hook()
    if ours is None:
        return
    for hook in ctx.path.hooks:
        if hook is ours or hook.priority != ours.priority:
            continue
        walked = walk(hook, ctx.packet, ctx.path)
        may = [m for m in walked.maybe if m.effect in (*NAT_VERDICTS, UNKNOWN)]
        if walked.stop.kind in NAT_VERDICTS or may:
            ctx.warnings.append(
                f"{hook.label()} runs at the same priority as masqd's "
                f"({priority_text(hook.priority)}) and may NAT this connection; the kernel does "
                "not define which of the two runs first"
            )
