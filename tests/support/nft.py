"""nft inside a test's node namespace: our table as nft lists it, every table of the ruleset,
masqd on the nftables backend, and an `nft` that the kernel can be made to refuse.

NftWrapper puts a directory in front of PATH whose `nft` passes everything to the real one, but
while a marker file exists, adds to every `nft -f -` transaction a chain that jumps to itself
and a jump to it from our base chain: the real kernel refuses the whole transaction (ELOOP,
"Too many links"), which is what a refusal looks like to masqd. It looks at the marker once
its input has arrived, as masqd keeps its next `nft -f -` started long before it has a
transaction to feed it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support import netns
from tests.support.daemon import Masqd, wait_until

PROTOCOL = {4: "ip", 6: "ip6"}
NFTABLES = ("--backend", "nftables", "--drift-check-interval", "1")


def listing(ns: str, family: int, table: str = "masqd", *, stateless: bool = False) -> str:
    """`nft list table` of our table in the family ('' when there is none)."""
    argv = ["nft", *(["-s"] if stateless else []), "list", "table", PROTOCOL[family], table]
    return netns.run(ns, *argv, check=False)


def tables(ns: str) -> dict[str, str]:
    """Every table of the ruleset as `nft -s list ruleset` prints it (no counters), by
    `family name`."""
    text = netns.run(ns, "nft", "-s", "list", "ruleset")
    found: dict[str, str] = {}
    for block in re.split(r"(?m)^(?=table )", text):
        if block.startswith("table "):
            head = block.split("{", 1)[0].split()
            found[f"{head[1]} {head[2]}"] = block
    return found


def element_counters(ns: str, family: int, set_name: str) -> dict[str, int]:
    """Packets per element of one of our sets."""
    text = netns.run(ns, "nft", "list", "set", PROTOCOL[family], "masqd", set_name)
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"([0-9a-f.:/]+) counter packets (\d+) bytes \d+", text)
    }


def in_sync(daemon: Masqd) -> Callable[[], bool]:
    return lambda: all(f.in_sync for f in daemon.status().families)


def wait_listed(ns: str, family: int, condition: Callable[[str], bool], timeout: float) -> str:
    """Poll our table's listing until condition holds; the listing."""
    return str(wait_until(lambda: (t := listing(ns, family)) and condition(t) and t, timeout))


_NFT = """#!/bin/sh
if [ "$1" = "-f" ] && [ "$2" = "-" ]; then
  input=$(mktemp)
  cat > "$input"
  [ -s "$input" ] && echo fed >> "{calls}"
  if [ -e "{refuse}" ]; then
    table=$(awk '{{for (i = 1; i < NF; i++) if ($i ~ /^ip6?$/) {{print $i, $(i+1); exit}}}}' \\
      "$input")
    loop='add chain %s loop\\nadd rule %s loop jump loop\\nadd rule %s postrouting jump loop\\n'
    printf "$loop" "$table" "$table" "$table" >> "$input"
  fi
  {real} -f "$input"
  rc=$?
  rm -f "$input"
  exit $rc
fi
exec {real} "$@"
"""


@dataclass
class NftWrapper:
    """An `nft` to prepend to masqd's PATH; `refuse_marker` makes the kernel refuse."""

    path: Path

    @classmethod
    def create(cls, directory: Path) -> NftWrapper:
        directory.mkdir()
        wrapper = cls(directory)
        real = shutil.which("nft")
        assert real is not None, "nft is not installed"
        script = directory / "nft"
        script.write_text(
            _NFT.format(refuse=wrapper.refuse_marker, calls=wrapper.calls_file, real=real)
        )
        script.chmod(0o755)
        return wrapper

    @property
    def refuse_marker(self) -> Path:
        return self.path / "refuse"

    @property
    def calls_file(self) -> Path:
        return self.path / "calls"

    def transactions(self) -> int:
        """How many `nft -f -` were fed a transaction so far (one started ahead and ended
        unfed does not count)."""
        if not self.calls_file.exists():
            return 0
        return len(self.calls_file.read_text().splitlines())

    def environ_path(self) -> str:
        return f"{self.path}{os.pathsep}{os.environ.get('PATH', '')}"
