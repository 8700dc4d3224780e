"""masqd.core.cleanup: `masqd cleanup` removes only a chain whose POSTROUTING jump carries
masqd's comment, and its jumps; a chain of that name without it is left, saying why."""

from __future__ import annotations

from masqd.core.cleanup import removal
from masqd.core.livestate import parse_save
from masqd.core.rules import jump_rule

KUBE = "KUBE-POSTROUTING"
KUBE_JUMP = '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'


def live(*lines: str, chains: tuple[str, ...] = ()) -> str:
    declared = [f":{c} - [0:0]" for c in chains]
    return "\n".join(["*nat", ":POSTROUTING ACCEPT [0:0]", *declared, *lines, "COMMIT", ""])


def test_our_chain_and_jump_are_removed() -> None:
    jump = jump_rule("IP-MASQ-AGENT")
    text = live(jump, "-A IP-MASQ-AGENT -j RETURN", chains=("IP-MASQ-AGENT",))
    plan = removal("IP-MASQ-AGENT", parse_save(text, "IP-MASQ-AGENT"))
    assert plan.text == f"*nat\n-D{jump[2:]}\n-F IP-MASQ-AGENT\n-X IP-MASQ-AGENT\nCOMMIT\n"
    assert plan.note == ""


def test_kube_proxys_chain_is_not_ours() -> None:
    """`--masq-chain KUBE-POSTROUTING` beside kube-proxy: its chain and jump are left."""
    text = live(KUBE_JUMP, "-A KUBE-POSTROUTING -j RETURN", chains=(KUBE,))
    plan = removal(KUBE, parse_save(text, KUBE))
    assert plan.text is None
    assert plan.note == (
        "KUBE-POSTROUTING left in place: no POSTROUTING jump to it carries masqd's comment, "
        "so it is not ours"
    )


def test_our_jump_to_a_chain_others_also_jump_to_removes_only_our_jump() -> None:
    ours = jump_rule(KUBE)
    text = live(KUBE_JUMP, ours, chains=(KUBE,))
    plan = removal(KUBE, parse_save(text, KUBE))
    assert plan.text == f"*nat\n-D{ours[2:]}\nCOMMIT\n"
    assert "1 other POSTROUTING rule(s) still jump to it" in plan.note


def test_a_jump_left_without_its_chain_is_removed_and_nothing_there_is_nothing_to_do() -> None:
    jump = jump_rule("IP-MASQ-AGENT")
    assert removal("IP-MASQ-AGENT", parse_save(live(jump), "IP-MASQ-AGENT")).text == (
        f"*nat\n-D{jump[2:]}\nCOMMIT\n"
    )
    assert removal("IP-MASQ-AGENT", parse_save(live(), "IP-MASQ-AGENT")).text is None
