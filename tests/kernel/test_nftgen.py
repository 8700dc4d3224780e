"""The nftables generation id, read over netlink in a namespace: it moves on every ruleset
change (any family, through iptables-nft), and not on reads or on legacy tables."""

from __future__ import annotations

from masqd.host.probe import nftgen
from tests.support.netns import run


def generation_in(ns: str) -> int:
    out = run(
        ns, "python3", "-c", "from masqd.host.probe.nftgen import generation; print(generation())"
    )
    return int(out)


def test_generation_moves_on_changes_only(ns: str) -> None:
    """A chain added by iptables-nft or ip6tables-nft bumps it; a save or a legacy change not."""
    first = generation_in(ns)
    run(ns, "iptables-nft", "-t", "nat", "-N", "SOMEONE")
    second = generation_in(ns)
    assert second > first
    run(ns, "iptables-nft-save", "-t", "nat")
    assert generation_in(ns) == second
    run(ns, "ip6tables-nft", "-t", "nat", "-N", "SOMEONE")
    third = generation_in(ns)
    assert third > second
    run(ns, "iptables-legacy", "-t", "nat", "-N", "SOMEONE")
    assert generation_in(ns) == third


def test_reply_parsing_rejects_garbage() -> None:
    """A short or garbled reply gives None, never an exception."""
    assert nftgen.gen_id(b"") is None
    assert nftgen.gen_id(b"\x00" * 40) is None
    assert nftgen.gen_id(b"\x08\x00\x01\x00\x00\x00\x01\x02") == 0x102


def test_next_generation_wraps() -> None:
    """The id is a u32: the one after 2**32 - 1 is 0."""
    assert nftgen.next_generation(41) == 42
    assert nftgen.next_generation(0xFFFFFFFF) == 0
