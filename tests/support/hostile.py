"""Config files made to take masqd down, each a few bytes to 60 kB (one `kubectl edit` away):
what masqd.core.yamldoc must refuse at once. Shared by the unit and the kernel tests."""

from __future__ import annotations


def laughs(levels: int, key: str) -> str:
    """The billion-laughs file: each anchor a list of nine aliases of the one before."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"{key}: *a{levels - 1}")
    return "\n".join(lines) + "\n"


HOSTILE = {
    # name: (text, what the message must say)
    "30,000 nested lists": ("nonMasqueradeCIDRs: " + "[" * 30000 + "]" * 30000, "nested"),
    "1,000 nested lists": ("nonMasqueradeCIDRs: " + "[" * 1000 + "]" * 1000, "nested"),
    "1,000 nested block lists": ("x:\n" + "- " * 1000 + "1\n", "nested"),
    "1,000 nested maps": ("a: " + "{a: " * 1000 + "1" + "}" * 1000, "nested"),
    "alias bomb (9 levels)": (laughs(9, "nonMasqueradeCIDRs"), "more than 200000 values"),
    "alias bomb (6 levels)": (laughs(6, "masqOutBound"), "more than 200000 values"),
    "alias bomb (5 levels, within the count)": (laughs(5, "masqOutBound"), "must be true or"),
    "an integer of 5,000 digits": ("cidrLimit: " + "9" * 5000, "a number of 5000 characters"),
    "a float of 5,000 digits": ("cidrLimit: 1." + "9" * 5000, "a number of 5002 characters"),
    "40,000 keys": ("\n".join(f"k{i}: 1" for i in range(40000)), "more than 1000 keys"),
    "40,000 repeated keys": ("masqOutBound: true\n" * 40000, "more than 1000 keys"),
    "an impossible date": ("x: 2001-13-45", "a value cannot be read"),
}
