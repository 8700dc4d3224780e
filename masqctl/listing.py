"""A chain's rules laid out as `iptables -L -n -v` shows them (counters exact, as with -x).

Input is the rule as iptables-save prints it (`-A CHAIN -d 10.0.0.0/8 -m comment ... -j RETURN`);
the columns are pkts, bytes, target, prot, opt, in, out, source, destination, then the match and
target options in iptables' wording (`/* comment */`, `masq ports: 1024-29999`, ...).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

HEADER = ("pkts", "bytes", "target", "prot", "opt", "in", "out", "source", "destination")
_ANY = {4: "0.0.0.0/0", 6: "::/0"}
# How iptables -L words the options our rules use; anything else is shown as written.
_OPTION_WORDS = {
    "--to-ports": "masq ports:",
    "--random-fully": "random-fully",
    "--random": "random",
    "--mode": "mode",
    "--probability": "probability",
    "--dst-type": "dst-type",
    "--src-type": "src-type",
}
_MATCH_WORDS = {"statistic": "statistic", "addrtype": "ADDRTYPE match"}


@dataclass
class Columns:
    """One rule split into iptables -L's columns."""

    target: str = ""
    prot: str = "all"
    in_: str = "*"
    out: str = "*"
    source: str = ""
    destination: str = ""
    extras: list[str] = field(default_factory=list)


def columns(spec: str, version: int) -> Columns:
    """Split a rule (iptables-save syntax) into the columns iptables -L prints."""
    try:
        words = shlex.split(spec)
    except ValueError:
        return Columns(extras=[spec])
    cols = Columns(source=_ANY[version], destination=_ANY[version])
    negate = False
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else ""
        bang = "!" if negate else ""
        negate = False
        step = 2
        if word == "!":
            negate, step = True, 1
        elif word == "-A":
            pass
        elif word in ("-s", "--source"):
            cols.source = bang + value
        elif word in ("-d", "--destination"):
            cols.destination = bang + value
        elif word in ("-p", "--protocol"):
            cols.prot = bang + value
        elif word in ("-i", "--in-interface"):
            cols.in_ = bang + value
        elif word in ("-o", "--out-interface"):
            cols.out = bang + value
        elif word in ("-j", "--jump"):
            cols.target = value
        elif word == "-m":
            if value != "comment":
                cols.extras.append(_MATCH_WORDS.get(value, value))
        elif word == "--comment":
            cols.extras.append(f"/* {value} */")
        elif word.startswith("--"):
            name = _OPTION_WORDS.get(word, word.lstrip("-"))
            if value and not value.startswith("-") and value != "!":
                cols.extras.append(f"{name} {bang}{value}")
            else:
                cols.extras.append(f"{bang}{name}")
                step = 1
        else:
            cols.extras.append(bang + word)
            step = 1
        i += step
    return cols


def table(rules: Sequence[tuple[int, int, str]], version: int) -> list[str]:
    """Lines of the listing: the header, then one per (packets, bytes, spec)."""
    rows = [HEADER]
    extras = [""]
    for packets, nbytes, spec in rules:
        c = columns(spec, version)
        rows.append(
            (
                str(packets),
                str(nbytes),
                c.target,
                c.prot,
                "--",
                c.in_,
                c.out,
                c.source,
                c.destination,
            )
        )
        extras.append(" ".join(c.extras))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for row, extra in zip(rows, extras, strict=True):
        cells = [
            cell.rjust(width) if i < 2 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(" ".join([*cells, extra]).rstrip())
    return lines
