"""What an earlier masqd left in the nat table under another chain name (--masq-chain changed;
upstream's kubernetes#64212 leaves it for good). Pure: iptables-save text in, what to remove out.

A leftover is a POSTROUTING rule that is exactly our jump, comment and all, for a chain other
than ours: masqd (like the agents it replaces) writes that comment, naming the chain it jumps
to. The chain it points at goes too, but only when nothing else jumps to it and every rule in
it is one masqd writes. Nothing else is touched: a chain of that name without our jump, or
with rules of someone else's, stays.

This reads iptables-save text, so it serves both iptables backends (nft and legacy). The
nftables backend's counterpart, a masqd table of another name, belongs beside that backend's
own reader, called from the same place in the worker's read step.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from masqd.core.rules import COMMENT_MASQ_ALL, COMMENT_MASQ_SPECIFIC, COMMENT_NON_MASQ, jump_rule

_COUNTERS = re.compile(r"^\[\d+:\d+\] ")
_OUR_COMMENTS = (COMMENT_NON_MASQ, COMMENT_MASQ_SPECIFIC, COMMENT_MASQ_ALL)


@dataclass(frozen=True)
class Leftovers:
    jumps: tuple[str, ...] = ()
    """POSTROUTING rules to delete, as iptables-save prints them."""
    chains: tuple[str, ...] = ()
    """Chains to flush and delete."""

    def __bool__(self) -> bool:
        return bool(self.jumps or self.chains)

    def restore_lines(self) -> list[str]:
        """The iptables-restore lines that remove them (the jumps first: a chain still
        referenced cannot be deleted)."""
        lines = ["-D" + jump[2:] for jump in self.jumps]
        for chain in self.chains:
            lines += [f"-F {chain}", f"-X {chain}"]
        return lines


def find_leftovers(
    save_text: str, chain: str, managed: Callable[[str], bool] = lambda _chain: False
) -> Leftovers:
    """The jumps with our comment to chains other than `chain`, and those chains that are ours
    to delete, in the nat table of `iptables-save` output. A chain for which `managed` says
    yes is another masqd's, running now (another --masq-chain in the same network namespace):
    not a leftover."""
    declared: set[str] = set()
    rules: list[tuple[str, str]] = []  # (chain, rule)
    in_nat = False
    for raw in save_text.splitlines():
        line = _COUNTERS.sub("", raw.strip())
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif in_nat and line.startswith(":"):
            declared.add(line[1:].split(" ", 1)[0])
        elif in_nat and line.startswith("-A "):
            rules.append((line.split(" ", 2)[1], line))
    jumps = []
    for owner, rule in rules:
        target = _target(rule)
        if owner == "POSTROUTING" and target != chain and rule == jump_rule(target):
            jumps.append(rule)
    alive = {target for target in {_target(j) for j in jumps} if managed(target)}
    jumps = [j for j in jumps if _target(j) not in alive]
    chains = []
    for jump in dict.fromkeys(jumps):
        old = _target(jump)
        referenced = any(_target(r) == old and r not in jumps for _, r in rules)
        own = [r for c, r in rules if c == old]
        if old in declared and not referenced and all(_comment(r) in _OUR_COMMENTS for r in own):
            chains.append(old)
    return Leftovers(tuple(jumps), tuple(dict.fromkeys(chains)))


def _words(rule: str) -> list[str]:
    try:
        return shlex.split(rule)
    except ValueError:
        return []


def _target(rule: str) -> str:
    words = _words(rule)
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "--jump", "-g", "--goto"):
            return words[i + 1]
    return ""


def _comment(rule: str) -> str:
    words = _words(rule)
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--comment"), "")
