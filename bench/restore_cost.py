"""What starting iptables-restore ahead of need saves a write, against starting it on the spot.

    python -m bench.restore_cost [--rounds 20]

For each backend, in a fresh namespace: our chain rewritten with 64 and 1,000 CIDRs (the text
masqd writes; two configs differing in their last entry take turns, so every restore changes
the chain). Each row times `Backend.restore` fed to a restore the worker started beforehand
(`prepare_restore`, as the worker does while idle) against the same call starting its own
process, both after the same untimed 20 ms pause, interleaved. For information: no goal rides
on it, but it is where much of figures 1 and 9 comes from.
"""

from __future__ import annotations

import sys
import time

from bench.common import CHAIN, Report, info_row, interleaved

SIZES = (64, 1000)
PAUSE = 0.02


def inside(mode: str, rounds: int) -> None:
    from bench.common import require_own_namespace

    require_own_namespace()
    report = Report()
    for size in SIZES:
        _one_size(mode, size, rounds, report)
    report.emit()


def _one_size(mode: str, size: int, rounds: int, report: Report) -> None:
    from bench.harness import config_with_cidrs
    from masqd.core.config import parse_config
    from masqd.core.model import Family
    from masqd.core.rules import RenderOptions, desired_rules, render_restore
    from masqd.host.iptables import Backend

    texts = [
        render_restore(
            desired_rules(parse_config(config).config, Family.IPV4, RenderOptions()),
            CHAIN,
            with_jump=False,
        )
        for config in (config_with_cidrs(size), config_with_cidrs(size, last="192.0.2.0/24"))
    ]
    prepared, spot = Backend(Family.IPV4, mode), Backend(Family.IPV4, mode)
    turns = {"prepared": 0, "spot": 0}

    def write(backend: Backend, turn: str) -> None:
        turns[turn] ^= 1
        backend.restore(texts[turns[turn]])

    def before_each() -> None:
        prepared.prepare_restore()  # a no-op when one is already waiting
        time.sleep(PAUSE)

    ours, theirs = interleaved(
        rounds,
        [lambda: write(prepared, "prepared"), lambda: write(spot, "spot")],
        prepare=before_each,
    )
    prepared.close()
    report.rows.append(
        info_row(f"restore {size:,} CIDRs, started ahead (vs on the spot)", mode, ours, theirs)
    )


def main(argv: list[str] | None = None) -> int:
    from bench.netns import info_main

    return info_main("restore_cost", inside, argv, rounds=20)


if __name__ == "__main__":
    sys.exit(main())
