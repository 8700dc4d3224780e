"""Our table read back from `nft list table` output (as nft 1.0.6 prints it: tabs, element
lists wrapped over lines, counters inline), and the smallest transaction to the desired one:
nothing when it matches, element diffs that keep other counters, chains rewritten without
touching the sets, the whole table replaced only when its frame changed."""

from __future__ import annotations

import dataclasses

from masqd.core import nftlive
from masqd.core.config import parse_config
from masqd.core.model import Family
from masqd.core.nftrules import Table, desired_table
from masqd.core.rules import RenderOptions

CONFIG = """\
masqueradeCIDRs: [10.10.10.10/32]
nonMasqueradeCIDRs: [10.0.0.0/8, 100.64.230.0/24, 172.16.0.0/12, 192.168.0.0/16]
masqOutBound: true
"""
# What `nft list table ip masqd` printed for CONFIG after some traffic (nft 1.0.6).
LISTING = (
    "table ip masqd {\n"
    '\tcomment "managed by masqd (ip-masq-agent): changes to this table are reverted"\n'
    "\tset masq {\n"
    "\t\ttype ipv4_addr\n"
    "\t\tflags interval\n"
    "\t\tcounter\n"
    '\t\telements = { 10.10.10.10 counter packets 3 bytes 180 comment "masqueradeCIDRs: '
    '10.10.10.10/32" }\n'
    "\t}\n"
    "\n"
    "\tset nomasq {\n"
    "\t\ttype ipv4_addr\n"
    "\t\tflags interval\n"
    "\t\tcounter\n"
    "\t\telements = { 10.0.0.0/8 counter packets 7 bytes 420 comment "
    '"nonMasqueradeCIDRs: 10.0.0.0/8", 100.64.230.0/24 counter packets 0 bytes 0 comment '
    '"nonMasqueradeCIDRs: 100.64.230.0/24",\n'
    "\t\t\t     172.16.0.0/12 counter packets 1 bytes 60 comment "
    '"nonMasqueradeCIDRs: 172.16.0.0/12", 192.168.0.0/16 counter packets 0 bytes 0 comment '
    '"nonMasqueradeCIDRs: 192.168.0.0/16" }\n'
    "\t}\n"
    "\n"
    "\tchain postrouting {\n"
    "\t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n"
    "\t\tfib daddr type local return\n"
    "\t\tip daddr @masq masquerade\n"
    "\t\tip daddr 169.254.0.0/16 counter packets 2 bytes 120 return\n"
    "\t\tip daddr @nomasq return\n"
    "\t\tcounter packets 5 bytes 300 masquerade\n"
    "\t}\n"
    "}\n"
)


def desired(text: str = CONFIG, **opts: object) -> Table:
    return desired_table(parse_config(text).config, Family.IPV4, RenderOptions(**opts))  # type: ignore[arg-type]


def live(text: str = LISTING) -> nftlive.LiveTable:
    return nftlive.parse_listing(text, Family.IPV4, "masqd")


def test_listing_is_read_with_every_element_and_counter() -> None:
    table = live()
    assert table.exists and table.comment.startswith("managed by masqd")
    sets = {s.name: s for s in table.sets}
    assert [(e.key, e.packets, e.bytes) for e in sets["nomasq"].elements] == [
        ("10.0.0.0/8", 7, 420),
        ("100.64.230.0/24", 0, 0),
        ("172.16.0.0/12", 1, 60),
        ("192.168.0.0/16", 0, 0),
    ]
    assert sets["masq"].elements[0].comment == "masqueradeCIDRs: 10.10.10.10/32"
    (chain,) = table.chains
    assert chain.declaration == "type nat hook postrouting priority srcnat + 10; policy accept;"
    assert [(r.text, r.packets) for r in chain.rules][2:] == [
        ("ip daddr 169.254.0.0/16 counter return", 2),
        ("ip daddr @nomasq return", 0),
        ("counter masquerade", 5),
    ]


def test_a_table_as_desired_needs_no_transaction() -> None:
    """Counters aside, the listing is exactly what the renderer wrote: nothing to do."""
    assert nftlive.change(live(), desired()) is None
    assert live().matches(desired())


def test_no_table_is_created_whole() -> None:
    absent = nftlive.parse_listing("", Family.IPV4, "masqd")
    assert not absent.exists
    text = nftlive.change(absent, desired())
    assert text is not None and text.startswith("table ip masqd {\n}\ndelete table ip masqd\n")


def test_a_changed_list_is_an_element_diff_only() -> None:
    """An entry added and one removed: one delete and one add, nothing else, so every other
    element keeps its counter."""
    config = CONFIG.replace("100.64.230.0/24", "198.51.100.0/24")
    assert nftlive.change(live(), desired(config)) == (
        "delete element ip masqd nomasq { 100.64.230.0/24 }\n"
        'add element ip masqd nomasq { 198.51.100.0/24 comment "nonMasqueradeCIDRs: '
        '198.51.100.0/24" }\n'
    )


def test_an_element_whose_comment_changed_is_replaced() -> None:
    tampered = LISTING.replace('"nonMasqueradeCIDRs: 10.0.0.0/8"', '"edited"')
    text = nftlive.change(live(tampered), desired())
    assert text == (
        "delete element ip masqd nomasq { 10.0.0.0/8 }\n"
        'add element ip masqd nomasq { 10.0.0.0/8 comment "nonMasqueradeCIDRs: 10.0.0.0/8" }\n'
    )


def test_someone_elses_element_is_deleted_as_listed() -> None:
    """An element we never wrote (here a range) is removed by the text nft listed it with."""
    extra = LISTING.replace(
        "elements = { 10.10.10.10 ",
        "elements = { 203.0.113.1-203.0.113.9 counter packets 0 bytes 0, 10.10.10.10 ",
    )
    assert nftlive.change(live(extra), desired()) == (
        "delete element ip masqd masq { 203.0.113.1-203.0.113.9 }\n"
    )


def test_a_changed_chain_is_rewritten_and_the_sets_are_kept() -> None:
    """A rule removed, or the priority changed: every chain flushed, deleted and declared
    again in the same transaction; no set or element command, so their counters stay."""
    for tampered in (
        LISTING.replace("\t\tip daddr @nomasq return\n", ""),
        LISTING.replace("srcnat + 10", "srcnat"),
    ):
        text = nftlive.change(live(tampered), desired())
        assert text is not None
        lines = text.splitlines()
        assert lines[:2] == [
            "flush chain ip masqd postrouting",
            "delete chain ip masqd postrouting",
        ]
        assert "\t\ttype nat hook postrouting priority srcnat + 10; policy accept;" in lines
        assert not any("element" in line or "set " in line for line in lines)


def test_a_chain_someone_added_is_removed() -> None:
    added = LISTING.replace(
        "\tchain postrouting {", "\tchain theirs {\n\t\taccept\n\t}\n\n" + "\tchain postrouting {"
    )
    text = nftlive.change(live(added), desired())
    assert text is not None
    assert "flush chain ip masqd theirs\n" in text and "delete chain ip masqd theirs\n" in text


def test_a_changed_frame_replaces_the_whole_table() -> None:
    """The table's comment, a set's declaration, or an object we do not know: replaced whole."""
    for tampered in (
        LISTING.replace("changes to this table are reverted", "edited"),
        LISTING.replace("\t\tflags interval\n\t\tcounter\n", "\t\tflags interval\n", 1),
        LISTING.replace(
            "\tchain postrouting {",
            "\tmap m {\n\t\ttype ipv4_addr : verdict\n\t}\n\n\tchain postrouting {",
        ),
    ):
        text = nftlive.change(live(tampered), desired())
        assert text is not None and text.startswith("table ip masqd {\n}\ndelete table")


def test_changing_from_the_known_table_is_the_same_diff() -> None:
    """What the worker knows it wrote stands in for a read: the same transaction, whether only
    elements changed (diffed straight from the two tables) or a chain did."""
    known = desired()
    config = CONFIG.replace("172.16.0.0/12", "172.16.0.0/16")
    assert nftlive.change_from(known, known) is None
    assert nftlive.change_from(known, desired(config)) == nftlive.change(live(), desired(config))
    outbound_off = desired(config.replace("masqOutBound: true", "masqOutBound: false"))
    text = nftlive.change_from(known, outbound_off)
    assert text == nftlive.change(nftlive.as_live(known), outbound_off)
    assert text is not None and text.startswith("flush chain ip masqd postrouting\n")


def test_addresses_printed_another_way_still_match() -> None:
    """A key nft prints otherwise than Python (an IPv4-mapped IPv6 address) is the same
    element, not a delete and an add on every sync."""
    table = desired_table(
        parse_config("nonMasqueradeCIDRs: ['::ffff:10.0.0.0/104']").config,
        Family.IPV6,
        RenderOptions(),
    )
    listed = nftlive.as_live(table)
    (nomasq,) = [s for s in listed.sets if s.name == "nomasq"]
    printed = nftlive.LiveElement("::ffff:10.0.0.0/104", nomasq.elements[0].comment)
    reprinted = nftlive.LiveTable(
        listed.family,
        listed.name,
        True,
        listed.comment,
        (listed.sets[0], nftlive.LiveSet("nomasq", nomasq.declaration, (printed,))),
        listed.chains,
    )
    assert nomasq.elements[0].key != printed.key
    assert nftlive.change(reprinted, table) is None


def test_counters_read_as_the_iptables_backend_words_them() -> None:
    """Set elements count MASQUERADE (masq) and RETURN (nomasq); the link-local rule RETURN
    to its range; the catch-all MASQUERADE to any destination."""
    counted = {(c.target, c.destination): c.packets for c in nftlive.counted(live())}
    assert counted[("MASQUERADE", "10.10.10.10")] == 3
    assert counted[("RETURN", "10.0.0.0/8")] == 7
    assert counted[("RETURN", "169.254.0.0/16")] == 2
    assert counted[("MASQUERADE", "")] == 5


def test_a_table_an_earlier_nft_table_left_is_deleted_even_when_ours_matches() -> None:
    left = dataclasses.replace(live(), leftovers=("masqd-old",))
    assert nftlive.change(left, desired()) == "delete table ip masqd-old\n"
    assert left.matches(desired())  # ours holds what it should; the old table is not ours
    changed = nftlive.change(left, desired(CONFIG.replace("100.64.230.0/24", "198.51.100.0/24")))
    assert changed is not None and changed.startswith("delete table ip masqd-old\ndelete element")
    absent = dataclasses.replace(nftlive.parse_listing("", Family.IPV4, "masqd"), leftovers=("x",))
    text = nftlive.change(absent, desired())
    assert text is not None and text.startswith("delete table ip x\ntable ip masqd {\n")
