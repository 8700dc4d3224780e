"""What `masqd cleanup` removes, decided from the live state alone. Pure.

Only what is ours: the POSTROUTING jumps that carry masqd's own comment, and the chain they
lead to. A chain of the same name that no jump with our comment leads to belongs to someone
else (`masqd cleanup --masq-chain KUBE-POSTROUTING` beside kube-proxy: its chain and its own
jump), and is left alone with a note; so is our chain while other rules still jump to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from masqd.core.livestate import LiveChain
from masqd.core.rules import jump_comment


@dataclass(frozen=True)
class Removal:
    """The restore input that removes what is ours (None: nothing to do), and a note for the
    operator about what was left and why (empty: nothing was left)."""

    text: str | None
    note: str = ""


def removal(chain: str, live: LiveChain) -> Removal:
    comment = f'--comment "{jump_comment(chain)}"'
    ours = [rule for rule in live.jump_rules if comment in rule]
    others = [rule for rule in live.jump_rules if comment not in rule]
    if not ours:
        if not live.chain_exists:
            return Removal(None)
        return Removal(
            None,
            f"{chain} left in place: no POSTROUTING jump to it carries masqd's comment, "
            "so it is not ours",
        )
    lines = ["-D" + rule[2:] for rule in ours]
    note = ""
    if live.chain_exists and not others:
        lines += [f"-F {chain}", f"-X {chain}"]
    elif live.chain_exists:
        note = f"{chain} left in place: {len(others)} other POSTROUTING rule(s) still jump to it"
    return Removal("\n".join(["*nat", *lines, "COMMIT"]) + "\n", note)
