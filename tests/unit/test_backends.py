"""The worker's decisions on the nftables backend, over a stand-in nft: a changed list is written
as an element diff from the table the worker knows, without a read, only while the kernel
still holds that table; anything else reads first; a no-op sync neither reads nor writes. The
iptables backend's decisions are tests/unit/test_worker.py's."""

from __future__ import annotations

import dataclasses
import hashlib

from masqd.core import nftlive
from masqd.core.config import parse_config
from masqd.core.fingerprint import Fingerprint
from masqd.core.model import NFTABLES, Family
from masqd.core.nftrules import Table, desired_table, table_block
from masqd.core.rules import RenderOptions
from masqd.engine import worker
from masqd.engine.backends import NftablesBackend

OPTS = worker.WorkerOptions(Family.IPV4, NFTABLES, "IP-MASQ-AGENT", 5.0, 5, 1.0)
CONFIG = "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\nmasqOutBound: true\n"


def table(text: str = CONFIG) -> Table:
    return desired_table(parse_config(text).config, Family.IPV4, RenderOptions())


class FakeNft:
    """nft over one table: lists what was last made true, and counts lists and transactions.
    `becomes` is what the next transaction leaves (the worker only writes to get there)."""

    family, table = Family.IPV4, "masqd"

    def __init__(self, live: Table | None) -> None:
        self.listing = table_block(live) if live is not None else ""
        self.becomes: Table | None = None
        self.applied: list[str] = []
        self.lists = 0
        self.generation = 41

    def list_table(self, *, timeout: float = 10.0) -> str:
        self.lists += 1
        return self.listing

    def apply(self, text: str, *, timeout: float = 10.0) -> None:
        assert self.becomes is not None
        self.applied.append(text)
        self.listing = table_block(self.becomes)
        self.generation += 1

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeProbe:
    def __init__(self, nft: FakeNft) -> None:
        self.nft = nft

    def generation(self) -> int | None:
        return self.nft.generation

    def shape(self) -> bytes | None:
        return None  # legacy's look; the nftables backend has the generation

    def fingerprint(self) -> Fingerprint | None:
        listing = self.nft.listing.encode()
        return Fingerprint(hashlib.sha256(listing).digest() if listing else None, b"hook")


def sync(nft: FakeNft, wanted: Table, known: worker.Known) -> worker.SyncOutcome:
    nft.becomes = wanted
    backend = NftablesBackend(nft, 5.0)  # type: ignore[arg-type]
    return worker.sync(backend, FakeProbe(nft), OPTS, wanted, known)


def synced() -> tuple[FakeNft, worker.Known]:
    """A table as desired, read and verified by the worker."""
    nft, known = FakeNft(table()), worker.Known()
    outcome = sync(nft, table(), known)
    assert outcome.ok and not outcome.changed and known.verified and nft.lists == 1
    return nft, known


def test_a_missing_table_is_created_whole() -> None:
    nft, known = FakeNft(None), worker.Known()
    assert sync(nft, table(), known).changed
    (text,) = nft.applied
    assert text.startswith("table ip masqd {\n}\ndelete table ip masqd\n")


def test_a_noop_sync_neither_reads_nor_writes() -> None:
    nft, known = synced()
    for _ in range(3):
        outcome = sync(nft, table(), known)
        assert outcome.ok and outcome.in_sync and not outcome.changed
    assert nft.lists == 1 and nft.applied == []


def test_a_changed_list_is_an_element_diff_from_the_known_table_without_a_read() -> None:
    """The kernel still holds what the worker verified (the generation says so): the change
    is written as the elements that differ, and nothing is read first."""
    nft, known = synced()
    changed = table(CONFIG.replace("172.16.0.0/12", "192.168.0.0/16"))
    assert sync(nft, changed, known).changed
    (text,) = nft.applied
    assert text.splitlines() == [
        "delete element ip masqd nomasq { 172.16.0.0/12 }",
        'add element ip masqd nomasq { 192.168.0.0/16 comment "nonMasqueradeCIDRs: '
        '192.168.0.0/16" }',
    ]
    assert nft.lists == 1


def test_a_changed_list_after_someone_changed_the_table_is_read_first() -> None:
    """Someone deleted an element since the worker verified the table: a diff from what it
    knows would delete an element that is gone (the kernel refuses that), so it reads first
    and diffs from what is there."""
    nft, known = synced()
    nft.listing = nft.listing.replace(
        '\t\t\t10.0.0.0/8 comment "nonMasqueradeCIDRs: 10.0.0.0/8",\n', ""
    )
    nft.generation += 1
    changed = table(CONFIG.replace("172.16.0.0/12", "192.168.0.0/16"))
    assert sync(nft, changed, known).changed
    assert nft.lists == 2
    (text,) = nft.applied
    assert "delete element ip masqd nomasq { 172.16.0.0/12 }" in text
    assert "10.0.0.0/8" in text and "192.168.0.0/16" in text  # both put (back) in


def test_a_write_with_one_generation_step_is_verified_and_trusted() -> None:
    """As on iptables-nft: exactly one generation step across the transaction was ours alone,
    so the next sync reads nothing back."""
    nft, known = synced()
    changed = table(CONFIG.replace("172.16.0.0/12", "192.168.0.0/16"))
    sync(nft, changed, known)
    worker.settle(FakeProbe(nft), known)
    assert known.verified
    assert not sync(nft, changed, known).changed
    assert nft.lists == 1 and len(nft.applied) == 1


def test_after_a_write_beside_another_writer_one_read_verifies_again() -> None:
    """Another change lands with our transaction (two generation steps): unverified. The next
    config change reads the table first (the kernel may not be as known), and its element diff
    trusts the base chain that read saw; still in place after the write, it is verified, so
    the config change after that reads nothing. One unverified write costs one read, not a
    read before every write from then on."""
    nft, known = synced()
    first = table(CONFIG.replace("172.16.0.0/12", "192.168.0.0/16"))
    original = nft.apply

    def racing(text: str, *, timeout: float = 10.0) -> None:
        original(text)
        nft.generation += 1  # someone else's change, in the same moment

    nft.apply = racing  # type: ignore[method-assign]
    assert sync(nft, first, known).changed and not known.verified
    nft.apply = original  # type: ignore[method-assign]
    second = table(CONFIG.replace("172.16.0.0/12", "198.51.100.0/24"))
    assert sync(nft, second, known).changed
    assert nft.lists == 2 and known.verified
    assert sync(nft, table(), known).changed
    assert nft.lists == 2


def test_an_element_diff_that_also_deletes_an_old_table_still_trusts_the_base_chain() -> None:
    """The deletion of an earlier --nft-table's table comes first in the transaction; the
    write is still an element diff (it does not declare our base chain), and says what it
    removes."""
    live = nftlive.parse_listing(table_block(table()), Family.IPV4, "masqd")
    left = dataclasses.replace(live, leftovers=("masqd-old",))
    backend = NftablesBackend(FakeNft(None), 5.0)  # type: ignore[arg-type]
    write = backend.change(left, table(CONFIG.replace("172.16.0.0/12", "192.168.0.0/16")))
    assert write is not None and write.text.startswith("delete table ip masqd-old\n")
    assert not write.with_jump and write.removed == ("table ip masqd-old",)
    whole = backend.change(dataclasses.replace(left, exists=False), table())
    assert whole is not None and whole.with_jump and whole.removed == ("table ip masqd-old",)
