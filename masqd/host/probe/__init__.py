"""Cheap in-process looks at the kernel, which let a worker skip exec-ing iptables-save.

`generation()` (nft only) says whether anything at all changed in the ruleset; `shape()`
(legacy only) whether the nat table changed in any way but a same-size rewrite; `fingerprint()`
whether our chain or our jump changed. Each answers None when it cannot tell, and the worker
then reads the slow, sure way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from masqd.core.fingerprint import Fingerprint
from masqd.core.model import Family
from masqd.host.probe import nftchain, nftgen, xtchain


class Probe(Protocol):
    def generation(self) -> int | None: ...
    def shape(self) -> bytes | None: ...
    def fingerprint(self) -> Fingerprint | None: ...


@dataclass(frozen=True)
class KernelProbe:
    family: Family
    mode: str
    chain: str

    def generation(self) -> int | None:
        return nftgen.generation() if self.mode == "nft" else None

    def shape(self) -> bytes | None:
        if self.mode == "nft":
            return None
        try:
            return xtchain.shape(self.family)
        except OSError:
            return None

    def fingerprint(self) -> Fingerprint | None:
        reader = nftchain.read if self.mode == "nft" else xtchain.read
        try:
            return reader(self.family, self.chain)
        except OSError:
            return None
