"""Golden cases: `tests/golden/<case>.yaml` renders to `<case>.ipv4.rules` / `<case>.ipv6.rules`
(the iptables backend's restore input) and `<case>.ipv4.nft` / `<case>.ipv6.nft` (the nftables
backend's `nft -f` input).

A case's first line may carry masqd's rendering flags:

    # flags: --random-fully --to-ports 1024-29999,32768-65535 --enable-ipv6=false

Regenerate every expected file with `python -m tests.support.golden`, then read the diff against
SPEC §3 before committing it: the golden files are the specification in executable form.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from masqd.core import flags, nftrules
from masqd.core.config import ParseOptions, parse_config
from masqd.core.model import Family
from masqd.core.rules import RenderOptions, render
from tests.support.paths import GOLDEN

FLAGS_PREFIX = "# flags:"
BACKENDS = ("iptables", "nftables")


@dataclass(frozen=True)
class Case:
    """One golden case: the config file, the flags on its first line, the families it renders."""

    name: str
    path: Path
    render: RenderOptions
    parse: ParseOptions

    @property
    def families(self) -> tuple[Family, ...]:
        return (Family.IPV4, Family.IPV6) if self.parse.enable_ipv6 else (Family.IPV4,)

    def expected_path(self, family: Family, backend: str = "iptables") -> Path:
        suffix = "nft" if backend == "nftables" else "rules"
        return self.path.with_name(f"{self.name}.{family.label}.{suffix}")

    def rendered(self, family: Family, backend: str = "iptables") -> str:
        """What masqd renders for this case today, on the backend."""
        config = parse_config(self.path.read_bytes(), self.parse).config
        renderer = nftrules.render if backend == "nftables" else render
        return renderer(config, family, self.render)


def load(path: Path) -> Case:
    first = path.read_text().partition("\n")[0]
    argv = shlex.split(first[len(FLAGS_PREFIX) :]) if first.startswith(FLAGS_PREFIX) else []
    parser = argparse.ArgumentParser(prog=path.name, exit_on_error=False)
    flags.add_render_flags(parser)
    args = parser.parse_args(argv)
    return Case(path.stem, path, flags.render_options(args), flags.parse_options(args))


def cases() -> list[Case]:
    return [load(p) for p in sorted(GOLDEN.glob("*.yaml"))]


def main() -> int:
    written = 0
    for case in cases():
        for family in Family:
            for backend in BACKENDS:
                target = case.expected_path(family, backend)
                if family not in case.families:
                    target.unlink(missing_ok=True)
                    continue
                text = case.rendered(family, backend)
                if not target.exists() or target.read_text() != text:
                    target.write_text(text)
                    print(f"wrote {target}")
                    written += 1
    print(f"{written} golden file(s) changed; review them against SPEC §3 before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
