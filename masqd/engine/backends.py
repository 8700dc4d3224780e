"""The two data planes a worker can write, behind one small protocol.

The worker (`masqd.engine.worker`) decides whether to read and whether to write; a Backend says
how: what is live, which text turns it into what is desired, and applying that text in one
atomic transaction with the tool it keeps started ahead. Rendering and comparing stay in the
pure core (`rules`/`livestate` for iptables, `nftrules`/`nftlive` for nftables); running the
tools stays in `masqd.host`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from masqd.core import nftlive
from masqd.core.desired import Desired, Live
from masqd.core.errors import ApplyError
from masqd.core.leftovers import find_leftovers
from masqd.core.livestate import LiveChain, parse_save
from masqd.core.model import NFTABLES
from masqd.core.nftrules import TABLE_COMMENT, Table
from masqd.core.rules import jump_rule, render_restore
from masqd.host import chainlock, cleanup, iptables, nftables
from masqd.host.probe import nfttable

if TYPE_CHECKING:
    from masqd.engine.worker import WorkerOptions

log = logging.getLogger("masqd.worker")


class Write(NamedTuple):
    """A transaction to apply."""

    text: str
    with_jump: bool
    """It puts in itself what sends traffic through our rules (iptables: our POSTROUTING
    jump; nftables: our base chain), so whatever is there afterwards came from it."""
    removed: tuple[str, ...] = ()
    """What it removes that an earlier --masq-chain left (chains, then jumps)."""


class Backend(Protocol):
    @property
    def blind_writes(self) -> bool:
        """A write replaces all of ours whatever the kernel holds, so a changed config is
        written without a look first (iptables: the restore declares the chain anew). Else a
        write changes only what differs from what the worker knows is there, and the kernel
        must be seen unchanged since first (nftables: element diffs keep counters)."""
        ...

    @property
    def settles_at_once(self) -> bool:
        """Fingerprint a write before answering, not while idle after. Idle is cheaper for the
        answer, but a change of someone else's landing in between leaves the write
        unverified, and the next sync then reads everything back: cheap for iptables-save of
        our chain, not for `nft list table` of ten thousand elements."""
        ...

    def read(self, *, counters: bool = False, timeout: float | None = None) -> Live:
        """The live state (an exec, within timeout seconds, by default the backend's own);
        ApplyError when it cannot be read."""
        ...

    def holds(self, live: Live, rules: Desired) -> bool:
        """Ours holds exactly these rules (only the way traffic reaches them, or leftovers,
        may be amiss): a write of them took."""
        ...

    def change(self, live: Live, wanted: Desired) -> Write | None:
        """The transaction that makes live the wanted state; None when it already is."""
        ...

    def change_from(self, known: Desired, wanted: Desired, *, with_jump: bool) -> Write | None:
        """The transaction from a kernel known to hold `known` (iptables: and our jump, unless
        with_jump) to the wanted state."""
        ...

    def apply(self, text: str, *, timeout: float | None = None) -> None:
        """One atomic transaction; ApplyError (its kind says whether to retry) when refused."""
        ...

    def prepare(self) -> None:
        """Start the next transaction's process, idle until `apply` feeds it."""
        ...

    def synced(self) -> None:
        """Told, while idle, after a sync that left ours as desired."""
        ...

    def close(self) -> None: ...


@dataclass
class IptablesBackend:
    """Our chain and its POSTROUTING jump, through iptables-save and iptables-restore."""

    host: iptables.Backend
    chain: str
    timeout: float
    lock_wait: int
    first: bool = False
    """--jump-position first: our jump must be POSTROUTING's first rule; elsewhere is drift."""
    blind_writes: bool = True
    settles_at_once: bool = False

    def read(self, *, counters: bool = False, timeout: float | None = None) -> LiveChain:
        """Our chain and jump, and what an earlier --masq-chain left in the nat table."""
        text = self.host.save_nat(counters=counters, timeout=timeout or self.timeout)
        live = parse_save(text, self.chain)
        leftovers = find_leftovers(text, self.chain, managed=chainlock.held)
        return dataclasses.replace(live, leftovers=leftovers)

    def holds(self, live: Live, rules: Desired) -> bool:
        assert isinstance(live, LiveChain) and not isinstance(rules, Table)
        return live.chain_exists and live.specs == list(rules)

    def change(self, live: Live, wanted: Desired) -> Write | None:
        assert isinstance(live, LiveChain) and not isinstance(wanted, Table)
        jump = jump_rule(self.chain)
        leftovers = live.leftovers
        if live.matches(list(wanted), jump, self.first) and not leftovers:
            return None
        with_jump = not live.jump_in_place(jump, self.first)
        # A jump that is there but not first moves: its copies go, one comes back first.
        moved = live.jump_rules.count(jump) if with_jump and self.first else 0
        text = render_restore(
            list(wanted),
            self.chain,
            with_jump=with_jump,
            first=self.first,
            moved=moved,
            removals=leftovers.restore_lines(),
        )
        return Write(text, with_jump, (*leftovers.chains, *leftovers.jumps))

    def change_from(self, known: Desired, wanted: Desired, *, with_jump: bool) -> Write | None:
        assert not isinstance(wanted, Table)
        text = render_restore(list(wanted), self.chain, with_jump=with_jump, first=self.first)
        return Write(text, with_jump)

    def apply(self, text: str, *, timeout: float | None = None) -> None:
        self.host.restore(text, wait=self.lock_wait, timeout=timeout or self.timeout)

    def prepare(self) -> None:
        self.host.prepare_restore(self.lock_wait)

    def synced(self) -> None:
        pass

    def close(self) -> None:
        self.host.close()


@dataclass
class NftablesBackend:
    """Our table, through `nft list table` and `nft -f -`.

    It takes over from the iptables backend: once our table is in place, our iptables chain
    and its POSTROUTING jump (left by masqd's iptables backend, or by ip-masq-agent) are
    removed from both modes' nat tables, once per worker. Left there, they would go on deciding
    before our table with a stale config: the iptables nat chain runs at srcnat, ours after it,
    and a connection masqueraded there is never seen by a later nat chain.
    """

    host: nftables.Nft
    timeout: float
    iptables_chain: str = ""
    """The iptables backend's chain to take over from; empty leaves it be."""
    blind_writes: bool = False
    settles_at_once: bool = True
    _took_over: bool = field(default=False, repr=False)

    def read(self, *, counters: bool = False, timeout: float | None = None) -> nftlive.LiveTable:
        """Our table, and the family's other tables with our comment (an earlier
        --nft-table's)."""
        # Counters come with every listing.
        text = self.host.list_table(timeout=timeout or self.timeout)
        live = nftlive.parse_listing(text, self.host.family, self.host.table)
        try:
            named = nfttable.named_like(self.host.family, TABLE_COMMENT)
        except OSError:
            named = []  # could not tell: leave them for the next read
        # A table another masqd manages now (it holds that table's claim) is not a leftover.
        leftovers = tuple(n for n in named if n != self.host.table and not chainlock.held_table(n))
        return dataclasses.replace(live, leftovers=leftovers)

    def holds(self, live: Live, rules: Desired) -> bool:
        assert isinstance(live, nftlive.LiveTable) and isinstance(rules, Table)
        return live.matches(rules)

    def change(self, live: Live, wanted: Desired) -> Write | None:
        assert isinstance(live, nftlive.LiveTable) and isinstance(wanted, Table)
        return _nft_write(nftlive.change(live, wanted), nftlive.leftover_tables(live, wanted))

    def change_from(self, known: Desired, wanted: Desired, *, with_jump: bool) -> Write | None:
        assert isinstance(known, Table) and isinstance(wanted, Table)
        return _nft_write(nftlive.change_from(known, wanted))

    def apply(self, text: str, *, timeout: float | None = None) -> None:
        self.host.apply(text, timeout=timeout or self.timeout)

    def prepare(self) -> None:
        self.host.prepare()

    def synced(self) -> None:
        """Our table is in place: take over from the iptables backend, once."""
        if self._took_over or not self.iptables_chain:
            return
        self._took_over = True
        family, chain = self.host.family, self.iptables_chain
        for mode in iptables.MODES:
            backend = iptables.Backend(family, mode)
            tool = backend.binary("")
            try:
                if cleanup.remove(backend, chain).text is not None:
                    log.warning(
                        "%s: removed the iptables backend's %s chain and jump from %s: our "
                        "nftables table decides now",
                        family.label,
                        chain,
                        tool,
                    )
            except ApplyError as e:
                log.warning("%s: could not take %s out of %s: %s", family.label, chain, tool, e)

    def close(self) -> None:
        self.host.close()


def _nft_write(text: str | None, removed: tuple[str, ...] = ()) -> Write | None:
    """A transaction other than an element diff declares our base chain itself; the deletions
    of `removed` tables, which come first, do not count."""
    if text is None:
        return None
    own = text.split("\n", len(removed))[-1]
    return Write(text, not own.startswith(("delete element", "add element")), removed)


def open_backend(opts: WorkerOptions) -> Backend:
    """The backend a worker with these options writes through."""
    if opts.mode == NFTABLES:
        nft = nftables.Nft(opts.family, opts.table)
        return NftablesBackend(nft, opts.iptables_timeout, iptables_chain=opts.chain)
    host = iptables.Backend(opts.family, opts.mode)
    return IptablesBackend(
        host, opts.chain, opts.iptables_timeout, opts.lock_wait, first=opts.jump_first
    )
