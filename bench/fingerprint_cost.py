"""What the worker's in-process fingerprint costs, against the `iptables-save -t nat` it replaces.

    python -m bench.fingerprint_cost [--rounds 10]

For each backend, in a fresh namespace: our chain with 64, 1,000 and 10,000 rules, and a
64-rule chain beside 10,000 kube-proxy-style rules in another chain (a busy node). Each row is
one fingerprint read (`KernelProbe.fingerprint`: nft, a netlink dump of our chain and
POSTROUTING; legacy, the x_tables blob) against one `iptables-save -t nat`, interleaved.
For information: no goal rides on it, but it is where figures 3 and 8 come from.
"""

from __future__ import annotations

import sys

from bench.common import CHAIN, Report, info_row, interleaved, run, save_nat, tool

CASES = ((64, 0), (1000, 0), (10000, 0), (64, 10000))


def setup(mode: str, rules: int, kube: int) -> None:
    lines = [f"-A {CHAIN} -d 10.{i >> 8}.{i & 255}.0/24 -j RETURN" for i in range(rules)]
    others = [f"-A KUBE-SERVICES -d 10.96.{i >> 8}.{i & 255}/32 -j RETURN" for i in range(kube)]
    head = ["*nat", f":{CHAIN} - [0:0]", ":KUBE-SERVICES - [0:0]"]
    tail = [f"-A {CHAIN} -j MASQUERADE", f"-A POSTROUTING -j {CHAIN}", *others, "COMMIT", ""]
    text = "\n".join([*head, *lines, *tail])
    run([tool(mode, 4, "restore")], text)


def inside(mode: str, rounds: int) -> None:
    from bench.common import require_own_namespace
    from masqd.core.model import Family
    from masqd.host.probe import KernelProbe

    require_own_namespace()
    probe = KernelProbe(Family.IPV4, mode, CHAIN)
    report = Report()
    for rules, kube in CASES:
        setup(mode, rules, kube)
        assert probe.fingerprint() is not None, "the fingerprint could not be read"
        fingerprint, save = interleaved(rounds, [probe.fingerprint, lambda: save_nat(mode)])
        label = f"fingerprint, {rules:,} rules" + (f" + {kube:,} kube" if kube else "")
        report.rows.append(info_row(label + " (vs iptables-save)", mode, fingerprint, save))
    report.emit()


def main(argv: list[str] | None = None) -> int:
    from bench.netns import info_main

    return info_main("fingerprint_cost", inside, argv, rounds=10)


if __name__ == "__main__":
    sys.exit(main())
