"""masqd.core.leftovers: a jump with our comment to another chain, and that chain when it is
ours alone, are found; anything someone else wrote is not."""

from __future__ import annotations

from masqd.core.leftovers import find_leftovers
from masqd.core.rules import COMMENT_NON_MASQ, jump_rule

OLD_RULE = f'-A OLD -d 10.0.0.0/8 -m comment --comment "{COMMENT_NON_MASQ}" -j RETURN'


def save(*lines: str) -> str:
    return "\n".join(["# Generated", "*nat", ":POSTROUTING ACCEPT [0:0]", *lines, "COMMIT"])


def test_the_old_chain_and_its_jump_are_leftovers() -> None:
    text = save(
        ":OLD - [0:0]",
        ":IP-MASQ-AGENT - [0:0]",
        "[3:180] " + jump_rule("OLD"),
        jump_rule("IP-MASQ-AGENT"),
        "[1:60] " + OLD_RULE,
    )
    found = find_leftovers(text, "IP-MASQ-AGENT")
    assert found.jumps == (jump_rule("OLD"),)
    assert found.chains == ("OLD",)
    assert found.restore_lines() == ["-D" + jump_rule("OLD")[2:], "-F OLD", "-X OLD"]


def test_our_own_jump_is_no_leftover() -> None:
    text = save(":IP-MASQ-AGENT - [0:0]", jump_rule("IP-MASQ-AGENT"))
    assert not find_leftovers(text, "IP-MASQ-AGENT")


def test_a_chain_of_that_name_without_our_jump_is_left_alone() -> None:
    foreign_jump = "-A POSTROUTING -m addrtype ! --dst-type LOCAL -j OLD"
    text = save(":OLD - [0:0]", foreign_jump, OLD_RULE)
    assert not find_leftovers(text, "IP-MASQ-AGENT")


def test_a_chain_someone_else_also_jumps_to_keeps_only_losing_our_jump() -> None:
    text = save(":OLD - [0:0]", jump_rule("OLD"), "-A PREROUTING -j OLD", OLD_RULE)
    found = find_leftovers(text, "IP-MASQ-AGENT")
    assert found.jumps == (jump_rule("OLD"),) and found.chains == ()


def test_a_chain_holding_rules_of_someone_else_is_kept() -> None:
    text = save(":OLD - [0:0]", jump_rule("OLD"), OLD_RULE, "-A OLD -d 192.0.2.0/24 -j DNAT")
    found = find_leftovers(text, "IP-MASQ-AGENT")
    assert found.jumps == (jump_rule("OLD"),) and found.chains == ()


def test_a_jump_whose_comment_names_another_chain_is_not_ours() -> None:
    mismatched = jump_rule("OLD").replace("-j OLD", "-j OTHER")
    text = save(":OTHER - [0:0]", mismatched)
    assert not find_leftovers(text, "IP-MASQ-AGENT")


def test_only_the_nat_table_counts() -> None:
    text = "*filter\n:OLD - [0:0]\n" + jump_rule("OLD") + "\nCOMMIT\n"
    assert not find_leftovers(text, "IP-MASQ-AGENT")


def test_a_chain_another_running_masqd_manages_is_no_leftover() -> None:
    """Another masqd on another --masq-chain in the same network namespace (it holds that
    chain's claim): its chain and jump are its own, not what an earlier masqd left."""
    text = save(":OLD - [0:0]", jump_rule("OLD"), OLD_RULE)
    assert not find_leftovers(text, "IP-MASQ-AGENT", managed=lambda chain: chain == "OLD")
    assert find_leftovers(text, "IP-MASQ-AGENT", managed=lambda chain: chain == "OTHER")
