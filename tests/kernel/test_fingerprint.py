"""The in-process readers of our chain and jump (legacy: the x_tables blob, nft: a netlink
rule dump) and of the nftables backend's table (netlink dumps of it), on the real kernel in a
namespace: their fingerprint moves when ours changes, and only then — not on counters, rule
handles, or other chains and tables."""

from __future__ import annotations

import pytest

from tests.support.netns import run

CHAIN = "IP-MASQ-AGENT"
JUMP = f'-A POSTROUTING -m comment --comment "our jump" -m addrtype ! --dst-type LOCAL -j {CHAIN}'
FAMILIES = {
    "4": ("iptables", "10.0.0.0/8", "192.168.0.0/16"),
    "6": ("ip6tables", "fd00::/8", "fc00::/8"),
}


def fingerprint(ns: str, mode: str, family: str) -> tuple[str, str]:
    """(chain, jumps) as hex, read inside the namespace; "None" for no chain, "-" for no jump."""
    reader = "nftchain" if mode == "nft" else "xtchain"
    fam = "IPV4" if family == "4" else "IPV6"
    code = (
        f"from masqd.host.probe import {reader}; from masqd.core.model import Family; "
        f"f = {reader}.read(Family.{fam}, {CHAIN!r}); "
        "print(f.chain.hex() if f.chain is not None else None, f.jumps.hex() or '-')"
    )
    chain, jumps = run(ns, "python3", "-c", code).split()
    return chain, jumps


def restore(ns: str, tool: str, mode: str, lines: list[str], counters: str = "0:0") -> None:
    text = "\n".join(["*nat", f":{CHAIN} - [0:0]", *lines, "COMMIT", ""])
    run(ns, f"{tool}-{mode}-restore", "--noflush", "--counters", input=text.replace("@", counters))


@pytest.mark.parametrize("family", ["4", "6"])
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_fingerprint_follows_our_chain_and_jump_only(ns: str, mode: str, family: str) -> None:
    tool, cidr, other = FAMILIES[family]
    ipt = f"{tool}-{mode}"
    rules = [
        f'[@] -A {CHAIN} -d {cidr} -m comment --comment "ip-masq-agent: local" -j RETURN',
        f"[@] -A {CHAIN} -j MASQUERADE --random-fully",
    ]
    # Another chain that sorts before ours, so legacy moves our chain's offset when it grows.
    run(ns, ipt, "-t", "nat", "-N", "A-FIRST")
    run(ns, ipt, "-t", "nat", "-A", "POSTROUTING", "-j", "A-FIRST")
    restore(ns, tool, mode, [*rules, f"[@] {JUMP}"])
    first = fingerprint(ns, mode, family)
    assert first[0] != "None" and first[1] != "-"

    # The same rules written again with other counters (and, nft, new handles): unchanged.
    restore(ns, tool, mode, rules, counters="57:9000")
    assert fingerprint(ns, mode, family) == first
    # Another chain grows: unchanged (legacy: our chain and the jump's verdict moved).
    for _ in range(3):
        run(ns, ipt, "-t", "nat", "-A", "A-FIRST", "-d", cidr, "-j", "RETURN")
    run(ns, ipt, "-t", "nat", "-A", "POSTROUTING", "-d", cidr, "-j", "RETURN")
    assert fingerprint(ns, mode, family) == first

    # A rule of ours replaced: the chain's digest moves, the jump's does not.
    run(ns, ipt, "-t", "nat", "-R", CHAIN, "1", "-d", other, "-j", "RETURN")
    replaced = fingerprint(ns, mode, family)
    assert replaced[0] != first[0] and replaced[1] == first[1]
    # Flushed.
    run(ns, ipt, "-t", "nat", "-F", CHAIN)
    flushed = fingerprint(ns, mode, family)
    assert flushed[0] not in (first[0], replaced[0]) and flushed[1] == first[1]
    # Rewritten as at first: as at first again.
    restore(ns, tool, mode, rules)
    assert fingerprint(ns, mode, family) == first

    # The jump deleted: the jump's digest moves, the chain's does not.
    run(ns, ipt, "-t", "nat", "-D", "POSTROUTING", *_jump_args())
    unjumped = fingerprint(ns, mode, family)
    assert unjumped[0] == first[0] and unjumped[1] == "-"  # no jump: an empty jumps part
    # The chain deleted (legacy tells a missing chain apart; nft reads it as empty).
    run(ns, ipt, "-t", "nat", "-F", CHAIN)
    run(ns, ipt, "-t", "nat", "-X", CHAIN)
    gone = fingerprint(ns, mode, family)
    assert gone[0] != first[0]
    if mode == "legacy":
        assert gone == ("None", "-")


def _jump_args() -> list[str]:
    return [
        "-m", "comment", "--comment", "our jump",
        "-m", "addrtype", "!", "--dst-type", "LOCAL",
        "-j", CHAIN,
    ]  # fmt: skip


def test_garbled_input_raises_and_the_probe_answers_it_cannot_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A blob or dump that does not parse raises OSError (never a wrong fingerprint), and the
    probe turns that into None, so the worker reads with iptables-save instead."""
    from masqd.core.model import Family
    from masqd.host import probe
    from masqd.host.probe import nftchain, xtchain

    head = b"ERROR".ljust(30, b"\0") + CHAIN.encode() + b"\0"
    blob = bytearray(400)
    blob[112 + 2 : 112 + 2 + len(head)] = head  # an ERROR entry naming our chain at offset 0
    blob[88:92] = (112).to_bytes(2, "little") + (176).to_bytes(2, "little")
    # ... followed by an entry whose next_offset is 0.
    with pytest.raises(OSError, match="malformed"):
        xtchain.digest(Family.IPV4, bytes(blob), 0, 0, CHAIN)
    with pytest.raises(OSError):
        nftchain.digest([b"\x02\x00\x01\x00"], [], CHAIN)  # an attribute shorter than its header

    def broken(family: Family, chain: str) -> None:
        raise OSError("malformed x_tables blob")

    monkeypatch.setattr(probe.xtchain, "read", broken)
    assert probe.KernelProbe(Family.IPV4, "legacy", CHAIN).fingerprint() is None


def _shape(ns: str, family: str) -> str:
    fam = "IPV4" if family == "4" else "IPV6"
    code = (
        "from masqd.host.probe import xtchain; from masqd.core.model import Family; "
        f"print(xtchain.shape(Family.{fam}).hex())"
    )
    return run(ns, "python3", "-c", code).strip()


@pytest.mark.parametrize("family", ["4", "6"])
def test_legacy_table_shape_moves_with_every_change_but_a_same_size_rewrite(
    ns: str, family: str
) -> None:
    """The shape (IPT_SO_GET_INFO) is what a legacy drift check trusts between deep looks."""
    tool, cidr, other = FAMILIES[family]
    ipt = f"{tool}-legacy"
    restore(ns, tool, "legacy", [f"[@] -A {CHAIN} -d {cidr} -j RETURN", f"[@] {JUMP}"])
    first = _shape(ns, family)
    restore(ns, tool, "legacy", [f"[@] -A {CHAIN} -d {cidr} -j RETURN"], counters="9:99")
    assert _shape(ns, family) == first  # counters
    run(ns, ipt, "-t", "nat", "-R", CHAIN, "1", "-d", other, "-j", "RETURN")
    assert _shape(ns, family) == first  # a same-size rewrite: what the deep look is for
    run(ns, ipt, "-t", "nat", "-A", CHAIN, "-j", "MASQUERADE")
    added = _shape(ns, family)
    assert added != first
    run(ns, ipt, "-t", "nat", "-F", CHAIN)
    assert _shape(ns, family) not in (first, added)


def table_fingerprint(ns: str, family: str) -> tuple[str, str]:
    """The nftables backend's (table, base chain) digests as hex: "None" for no table, "-" for
    no base chain."""
    fam = "IPV4" if family == "4" else "IPV6"
    code = (
        "from masqd.host.probe import nfttable; from masqd.core.model import Family; "
        f"f = nfttable.read(Family.{fam}, 'masqd'); "
        "print(f.chain.hex() if f.chain is not None else None, f.jumps.hex() or '-')"
    )
    chain, jumps = run(ns, "python3", "-c", code).split()
    return chain, jumps


@pytest.mark.parametrize("family", ["4", "6"])
def test_table_fingerprint_follows_our_table_only(ns: str, family: str) -> None:
    """The nftables backend's fingerprint: unchanged by counter values, by the same table
    written again, and by other tables; moved by a deleted element, and (its jumps part too) by
    a changed base chain priority; nothing at all without the table."""
    from tests.support.paths import GOLDEN

    spec = "ip masqd" if family == "4" else "ip6 masqd"
    golden = (GOLDEN / f"seed-node-identity.ipv{family}.nft").read_text()
    assert table_fingerprint(ns, family) == ("None", "-")
    run(ns, "nft", "-f", "-", input=golden)
    first = table_fingerprint(ns, family)
    assert first[0] != "None" and first[1] != "-"

    # Counters with values (as traffic leaves them), the table written again: unchanged.
    counted = golden.replace(" comment ", " counter packets 57 bytes 9000 comment ").replace(
        "counter return", "counter packets 5 bytes 300 return"
    )
    run(ns, "nft", "-f", "-", input=counted)
    assert "packets 57" in run(ns, "nft", "list", "table", *spec.split())
    assert table_fingerprint(ns, family) == first
    run(ns, "nft", "add", "table", "inet", "other")
    run(ns, "nft", "add", "chain", "inet", "other", "c")
    assert table_fingerprint(ns, family) == first

    element = "10.0.0.0/8" if family == "4" else "fc00::/7"
    run(ns, "nft", "delete", "element", *spec.split(), "nomasq", f"{{ {element} }}")
    moved = table_fingerprint(ns, family)
    assert moved[0] != first[0] and moved[1] == first[1]
    run(ns, "nft", "-f", "-", input=golden.replace("srcnat + 10", "srcnat"))
    priority = table_fingerprint(ns, family)
    assert priority[0] != first[0] and priority[1] != first[1]
    run(ns, "nft", "-f", "-", input=golden)
    assert table_fingerprint(ns, family) == first
