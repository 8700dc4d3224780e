"""The two data planes a worker can write, behind one small protocol.

The worker (`masqd.engine.worker`) decides whether to read and whether to write; a Backend says
how: what is live, which text turns it into what is desired, and applying that text in one
atomic transaction with the tool it keeps started ahead. Rendering and comparing stay in the
pure core (`rules`/`livestate` for iptables, `nftrules`/`nftlive` for nftables); running the
tools stays in `masqd.host`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from masqd.core import nftlive
from masqd.core.desired import Desired, Live
from masqd.core.livestate import LiveChain, parse_save
from masqd.core.model import NFTABLES
from masqd.core.nftrules import Table
from masqd.core.rules import jump_rule, render_restore
from masqd.host import iptables, nftables

if TYPE_CHECKING:
    from masqd.engine.worker import WorkerOptions


class Backend(Protocol):
    @property
    def blind_writes(self) -> bool:
        """A write replaces all of ours whatever the kernel holds, so a changed config is
        written without a look first (iptables: the restore declares the chain anew). Else a
        write changes only what differs from what the worker knows is there, and the kernel
        must be seen unchanged since first (nftables: element diffs keep counters)."""
        ...

    def read(self, *, counters: bool = False) -> Live:
        """The live state (an exec); ApplyError when it cannot be read."""
        ...

    def change(self, live: Live, wanted: Desired) -> str | None:
        """The transaction that makes live the wanted state; None when it already is."""
        ...

    def change_from(self, known: Desired, wanted: Desired, *, with_jump: bool) -> str | None:
        """The transaction from a kernel known to hold `known` (iptables: and our jump, unless
        with_jump) to the wanted state."""
        ...

    def apply(self, text: str) -> None:
        """One atomic transaction; ApplyError (its kind says whether to retry) when refused."""
        ...

    def prepare(self) -> None:
        """Start the next transaction's process, idle until `apply` feeds it."""
        ...

    def close(self) -> None: ...


@dataclass
class IptablesBackend:
    """Our chain and its POSTROUTING jump, through iptables-save and iptables-restore."""

    host: iptables.Backend
    chain: str
    timeout: float
    lock_wait: int
    blind_writes: bool = True

    def read(self, *, counters: bool = False) -> LiveChain:
        return parse_save(self.host.save_nat(counters=counters, timeout=self.timeout), self.chain)

    def change(self, live: Live, wanted: Desired) -> str | None:
        assert isinstance(live, LiveChain) and not isinstance(wanted, Table)
        jump = jump_rule(self.chain)
        if live.matches(list(wanted), jump):
            return None
        return render_restore(list(wanted), self.chain, with_jump=jump not in live.jump_rules)

    def change_from(self, known: Desired, wanted: Desired, *, with_jump: bool) -> str | None:
        assert not isinstance(wanted, Table)
        return render_restore(list(wanted), self.chain, with_jump=with_jump)

    def apply(self, text: str) -> None:
        self.host.restore(text, wait=self.lock_wait, timeout=self.timeout)

    def prepare(self) -> None:
        self.host.prepare_restore(self.lock_wait)

    def close(self) -> None:
        self.host.close()


@dataclass
class NftablesBackend:
    """Our table, through `nft list table` and `nft -f -`."""

    host: nftables.Nft
    timeout: float
    blind_writes: bool = False

    def read(self, *, counters: bool = False) -> nftlive.LiveTable:
        text = self.host.list_table(timeout=self.timeout)  # counters come with every listing
        return nftlive.parse_listing(text, self.host.family, self.host.table)

    def change(self, live: Live, wanted: Desired) -> str | None:
        assert isinstance(live, nftlive.LiveTable) and isinstance(wanted, Table)
        return nftlive.change(live, wanted)

    def change_from(self, known: Desired, wanted: Desired, *, with_jump: bool) -> str | None:
        assert isinstance(known, Table) and isinstance(wanted, Table)
        return nftlive.change(nftlive.as_live(known), wanted)

    def apply(self, text: str) -> None:
        self.host.apply(text, timeout=self.timeout)

    def prepare(self) -> None:
        self.host.prepare()

    def close(self) -> None:
        self.host.close()


def open_backend(opts: WorkerOptions) -> Backend:
    """The backend a worker with these options writes through."""
    if opts.mode == NFTABLES:
        return NftablesBackend(nftables.Nft(opts.family, opts.table), opts.iptables_timeout)
    host = iptables.Backend(opts.family, opts.mode)
    return IptablesBackend(host, opts.chain, opts.iptables_timeout, opts.lock_wait)
