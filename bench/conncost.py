"""Figure 13: what a new connection costs in our nat rules, with real traffic through a node.

Run by the driver inside a fresh namespace, which plays the node: `python -m bench.conncost
--rounds N`. It adds a pod and a destination namespace (deleted in `finally`), wires them to the
node with veth pairs, and times a sender in the pod that opens FLOWS new UDP flows: one
datagram to each of FLOWS destination ports of an address in none of the lists, each a new
conntrack entry, so each goes once through the nat POSTROUTING hook and our rules, to their
catch-all masquerade. conntrack is flushed before every run, so every flow of every run is new.
The destination drops the datagrams before its own conntrack (a raw-priority drop), the same
for every setup.

The time is CPU time, not wall time: the sender is pinned to CPU 0, and a datagram it sends on a
veth is forwarded by the node, NAT included, in the softirq that runs on that CPU as the send
returns, within the sender's own CPU time (this kernel accounts softirq time to the task it
interrupts); what the kernel put off to ksoftirqd/0 meanwhile is added. Wall time on the shared
2-vCPU machines swung by +-50 % with other tenants' load and steal; CPU time by a few per cent.
Setups, alternated round by round:

- bare: one nft base chain at srcnat + 10 that masquerades everything (the baseline);
- nftables: masqd's table for 10,000 nonMasqueradeCIDRs (`masqd.core.nftrules.render`);
- iptables: masqd's chain for the same 10,000 CIDRs through iptables-nft (the iptables
  backend's linear chain, walked rule by rule);
- none: no NAT at all (conntrack not engaged): the sender's own cost and the forwarding, the
  floor under the other three, to show each one's cost above it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.common import NAMESPACE_PREFIX, Report, Row, Stats, info_row, nft_apply, ratio_row, run

FLOWS = 20000
CIDRS = 10000
DESTINATION = "203.0.113.10"
SETUPS = ("bare", "nftables", "iptables", "none")
_SENDER = """
import socket, sys, time
dst, flows = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.thread_time()
for port in range(1, flows + 1):
    s.sendto(b"x", (dst, port))
print(time.thread_time() - start)
"""
_BARE = """\
table ip bench_bare {
	chain postrouting {
		type nat hook postrouting priority srcnat + 10; policy accept;
		masquerade
	}
}
"""
_DROP = """\
table ip bench_drop {
	chain prerouting {
		type filter hook prerouting priority raw; policy drop;
	}
}
"""


def in_ns(ns: str, *argv: str, stdin: str | None = None) -> str:
    return run(["ip", "netns", "exec", ns, *argv], stdin)


@contextlib.contextmanager
def pod_and_destination() -> Iterator[tuple[str, str]]:
    """A pod and a destination namespace wired to this one (the node), which forwards."""
    base = f"{NAMESPACE_PREFIX}{os.getpid() % 100000}-conn"
    pod, dest = f"{base}-pod", f"{base}-dest"
    try:
        for ns in (pod, dest):
            run(["ip", "netns", "add", ns])
            in_ns(ns, "ip", "link", "set", "lo", "up")
        run(["ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", pod])
        run(["ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", dest])
        run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for argv in (
            ["ip", "addr", "add", "10.244.1.1/24", "dev", "pod0"],
            ["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"],
            ["ip", "link", "set", "pod0", "up"],
            ["ip", "link", "set", "up0", "up"],
            ["ip", "route", "add", f"{DESTINATION}/32", "via", "192.0.2.2"],
        ):
            run(argv)
        for argv in (
            ["ip", "addr", "add", "10.244.1.2/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "route", "add", "default", "via", "10.244.1.1"],
        ):
            in_ns(pod, *argv)
        for argv in (
            ["ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"],
            ["ip", "addr", "add", f"{DESTINATION}/32", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
        ):
            in_ns(dest, *argv)
        in_ns(dest, "nft", "-f", "-", stdin=_DROP)
        yield pod, dest
    finally:
        for ns in (pod, dest):
            run(["ip", "netns", "del", ns], check=False)


def setups() -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """Each setup's install and removal (both untimed)."""
    from bench.common import CHAIN
    from bench.harness import config_with_cidrs
    from masqd.core.config import parse_config
    from masqd.core.model import Family
    from masqd.core.nftrules import render
    from masqd.core.rules import RenderOptions, desired_rules, render_restore

    config = parse_config(config_with_cidrs(CIDRS)).config
    table = render(config, Family.IPV4, RenderOptions())
    chain = render_restore(desired_rules(config, Family.IPV4, RenderOptions()), CHAIN)
    return {
        "bare": (lambda: nft_apply(_BARE), lambda: nft_apply("delete table ip bench_bare\n")),
        "nftables": (lambda: nft_apply(table), lambda: nft_apply("delete table ip masqd\n")),
        # iptables-nft's nat table goes whole, or its empty base chains would stay hooked.
        "iptables": (
            lambda: run(["iptables-nft-restore", "--noflush"], chain),
            lambda: nft_apply("delete table ip nat\n"),
        ),
        "none": (lambda: None, lambda: None),
    }


def per_connection(pod: str, flows: int) -> float:
    """CPU seconds per new flow of one run (conntrack flushed first): the sender's own, plus
    what CPU 0's ksoftirqd spent meanwhile (the softirqs the kernel put off to it)."""
    run(["conntrack", "-F"], check=False)  # exits 1 when it had nothing to flush
    argv = ["taskset", "-c", "0", sys.executable, "-c", _SENDER, DESTINATION, str(flows)]
    deferred = _ksoftirqd_cpu()
    sender = float(in_ns(pod, *argv))
    return (sender + _ksoftirqd_cpu() - deferred) / flows


def _ksoftirqd_cpu() -> float:
    """CPU seconds ksoftirqd/0 has run (its schedstat: nanoseconds on the CPU)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            proc = Path("/proc", entry.name)
            if (proc / "comm").read_text().strip() == "ksoftirqd/0":
                return int((proc / "schedstat").read_text().split()[0]) / 1e9
        except OSError:
            continue
    return 0.0


def measure(rounds: int, flows: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per new flow of each setup, one run per setup per round, in alternating order."""
    samples: dict[str, list[float]] = {name: [] for name in SETUPS}
    with pod_and_destination() as (pod, _):
        install = setups()
        for i in range(warmup + rounds):
            for name in SETUPS if i % 2 == 0 else tuple(reversed(SETUPS)):
                up, down = install[name]
                up()
                try:
                    seconds = per_connection(pod, flows)
                finally:
                    down()
                if i >= warmup:
                    samples[name].append(seconds)
    return samples


def rows(samples: dict[str, list[float]]) -> list[Row]:
    bare, none = samples["bare"], samples["none"]
    above = {
        name: [t - floor for t, floor in zip(samples[name], none, strict=True)]
        for name in ("bare", "nftables", "iptables")
    }
    return [
        ratio_row(
            f"13 new connection, {CIDRS:,} CIDRs (vs bare masquerade)",
            "nftables",
            samples["nftables"],
            bare,
            1.2,
        ),
        info_row(
            "13 ... iptables backend's linear chain (vs bare masquerade)",
            "nft",
            samples["iptables"],
            bare,
            "the same CIDRs, one rule each, through iptables-nft",
        ),
        info_row(
            "13 ... above the no-NAT floor (vs bare's)",
            "nftables",
            above["nftables"],
            above["bare"],
            "each run less the same round's run with no NAT at all",
        ),
        info_row(
            "13 ... iptables above the floor (vs bare's)", "nft", above["iptables"], above["bare"]
        ),
        Row("13 ... no NAT at all: the floor (info)", "-", Stats.of(none), "-", None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.conncost")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--flows", type=int, default=FLOWS)
    args = parser.parse_args(argv)
    from bench.common import require_own_namespace

    require_own_namespace()
    report = Report(rows(measure(args.rounds, args.flows)))
    report.details.append(
        f"fig 13: {args.flows:,} new UDP flows per run from a pod to {DESTINATION} (in no list), "
        f"sender pinned to CPU 0, conntrack flushed before each run"
    )
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
