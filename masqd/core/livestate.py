"""Reading the kernel's answer: our chain and jump in `iptables-save -t nat` output. Pure."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from masqd.core.errors import Kind
from masqd.core.leftovers import Leftovers
from masqd.core.nftlive import LiveTable

_COUNTERS = re.compile(r"^\[(\d+):(\d+)\] ")


@dataclass(frozen=True)
class LiveRule:
    """One rule of our chain as the kernel has it."""

    spec: str
    """The rule as iptables-save prints it ("-A CHAIN ...")."""
    packets: int = 0
    bytes: int = 0

    @property
    def target(self) -> str:
        return _option(self.spec, "-j")

    @property
    def destination(self) -> str:
        return _option(self.spec, "-d")

    @property
    def comment(self) -> str:
        return _option(self.spec, "--comment")


@dataclass(frozen=True)
class LiveChain:
    """Our part of the nat table: does the chain exist, its rules, is the jump in POSTROUTING."""

    chain_exists: bool
    rules: tuple[LiveRule, ...]
    jump_rules: tuple[str, ...]
    """POSTROUTING rules that jump to our chain, as iptables-save prints them."""
    first_rule: str = ""
    """POSTROUTING's first rule (empty when it has none): where --jump-position first wants
    our jump."""
    leftovers: Leftovers = field(default_factory=Leftovers)
    """What an earlier --masq-chain left in the table (filled in by the worker's read)."""

    @property
    def specs(self) -> list[str]:
        return [r.spec for r in self.rules]

    def jump_in_place(self, jump: str, first: bool = False) -> bool:
        """Our jump is in POSTROUTING (first: as its first rule)."""
        return self.first_rule == jump if first else jump in self.jump_rules

    def matches(self, desired: list[str], jump: str, first: bool = False) -> bool:
        """True when the chain holds exactly the desired rules and our jump is in place."""
        return self.chain_exists and self.specs == desired and self.jump_in_place(jump, first)


@dataclass(frozen=True)
class ReadOutcome:
    """A worker's answer to a read of the live chain (nftables: the live table)."""

    live: LiveChain | LiveTable | None
    """None when the read failed."""
    error: str = ""
    kind: Kind | None = None


def parse_save(text: str, chain: str) -> LiveChain:
    """Extract our chain from `iptables-save -t nat` output, with or without -c counters."""
    exists = False
    rules: list[LiveRule] = []
    jumps: list[str] = []
    first = ""
    in_nat = False
    chain_prefix = f"-A {chain} "
    jump_suffix = f" -j {chain}"
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
            continue
        if not in_nat:
            continue
        if line.startswith(f":{chain} "):
            exists = True
            continue
        packets = nbytes = 0
        m = _COUNTERS.match(line)
        if m:
            packets, nbytes = int(m.group(1)), int(m.group(2))
            line = line[m.end() :]
        if line.startswith(chain_prefix):
            rules.append(LiveRule(line, packets, nbytes))
        elif line.startswith("-A POSTROUTING "):
            first = first or line
            if line.endswith(jump_suffix):
                jumps.append(line)
    return LiveChain(exists, tuple(rules), tuple(jumps), first)


def _option(spec: str, name: str) -> str:
    try:
        words = shlex.split(spec)
    except ValueError:
        return ""
    for i, word in enumerate(words[:-1]):
        if word == name:
            return words[i + 1]
    return ""
