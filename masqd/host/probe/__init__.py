"""Cheap in-process looks at the kernel, which let a worker skip exec-ing iptables-save.

`generation()` (nftables, and iptables in nft mode) says whether anything at all changed in the
ruleset; `shape()` (legacy only) whether the nat table changed in any way but a same-size
rewrite; `fingerprint()` whether our chain or our jump changed (the nftables backend: our
table and its base chain). Each answers None when it cannot tell, and the worker then reads
the slow, sure way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from masqd.core.fingerprint import Fingerprint
from masqd.core.model import NFTABLES, Family
from masqd.host.probe import nftchain, nftgen, nfttable, xtchain


class Probe(Protocol):
    def generation(self) -> int | None: ...
    def shape(self) -> bytes | None: ...
    def fingerprint(self) -> Fingerprint | None: ...


@dataclass(frozen=True)
class KernelProbe:
    family: Family
    mode: str
    """legacy or nft (the iptables backend), or nftables."""
    name: str
    """Our chain, or the nftables backend's table."""

    def generation(self) -> int | None:
        return nftgen.generation() if self.mode in ("nft", NFTABLES) else None

    def shape(self) -> bytes | None:
        if self.mode != "legacy":
            return None
        try:
            return xtchain.shape(self.family)
        except OSError:
            return None

    def fingerprint(self) -> Fingerprint | None:
        readers: dict[str, Callable[[Family, str], Fingerprint]] = {
            "nft": nftchain.read,
            NFTABLES: nfttable.read,
        }
        try:
            return readers.get(self.mode, xtchain.read)(self.family, self.name)
        except OSError:
            return None
