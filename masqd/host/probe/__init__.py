"""Cheap in-process looks at the kernel, which let a worker skip exec-ing iptables-save.

`generation()` (nftables, and iptables in nft mode) says whether anything at all changed in the
ruleset; `fingerprint()` says whether our chain or our jump changed (the nftables backend: our
table). Both answer None when they cannot tell, and the
worker then reads the slow, sure way.
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

    def fingerprint(self) -> Fingerprint | None:
        readers: dict[str, Callable[[Family, str], Fingerprint]] = {
            "nft": nftchain.read,
            NFTABLES: nfttable.read,
        }
        try:
            return readers.get(self.mode, xtchain.read)(self.family, self.name)
        except OSError:
            return None
