"""Figures 10 and 11: what masqd costs while nothing happens, against upstream's per-sync
commands run at the same interval.

    python -m bench.steady 10 --mode nft|legacy [--seconds 120]
    python -m bench.steady 11 --mode nft|legacy [--seconds 60]

Figure 10: CPU per 120 s of a real `python -m masqd` with the default config, at a 1 s and a
60 s resyncInterval, in an empty nat table and beside 10,000 kube-proxy-style rules. Figure
11: CPU per idle tick (resyncInterval 1s, nothing changing) with 10,000 nonMasqueradeCIDRs.

Each case runs in two fresh namespaces side by side, all cases of a figure at once: masqd in
one, and in the other the baseline, upstream ip-masq-agent's per-sync sequence (figure 2's:
`-N` the chain, `-C` the jump, `iptables-restore --noflush` of the same rules) for both
families, from a shell loop sleeping the interval between syncs. CPU time comes from a cgroup
per side (bench/cgroup.py: every thread and child, the ones that exited too); CPU time, unlike
wall time, is hardly touched by the cases sharing the machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import cgroup
from bench.common import CHAIN, Report, Row, Stats, require_own_namespace, restore, stop, tool

KUBE_RULES = 10000
TICK_CIDRS = 10000


@dataclass(frozen=True)
class Case:
    interval: float
    kube: int = 0
    cidrs: int = 0
    """Extra IPv4 nonMasqueradeCIDRs beyond the default config's."""

    @property
    def label(self) -> str:
        parts = [f"interval {self.interval:g}s"]
        if self.kube:
            parts.append(f"beside {self.kube:,} kube rules")
        if self.cidrs:
            parts.append(f"{self.cidrs:,} CIDRs")
        return ", ".join(parts)


FIGURE_CASES = {
    10: (Case(1.0), Case(60.0), Case(1.0, KUBE_RULES), Case(60.0, KUBE_RULES)),
    11: (Case(1.0, cidrs=TICK_CIDRS),),
}


def config_text(case: Case) -> str:
    from bench.harness import DEFAULT_CONFIG

    lines = DEFAULT_CONFIG.replace("resyncInterval: 60s", f"resyncInterval: {case.interval:g}s")
    if not case.cidrs:
        return lines
    cidrs = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(case.cidrs)]
    return "\n".join(
        [
            "nonMasqueradeCIDRs:",
            *(f"  - {c}" for c in [*cidrs, "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]),
            "masqOutBound: true",
            "masqOutBoundIPv6: true",
            f"resyncInterval: {case.interval:g}s",
            f"cidrLimit: {case.cidrs + 64}",
            "",
        ]
    )


def upstream_script(mode: str, case: Case, work: Path) -> str:
    """The shell loop that runs upstream's sync for both families every interval."""
    from masqd.core.config import parse_config
    from masqd.core.model import Family
    from masqd.core.rules import RenderOptions, desired_rules, jump_rule, render_restore

    config = parse_config(config_text(case)).config
    jump = " ".join(shlex.quote(w) for w in shlex.split(jump_rule(CHAIN))[2:])
    steps = []
    for family in Family:
        rules = desired_rules(config, family, RenderOptions())
        path = work / f"rules.v{family.value}"
        path.write_text(render_restore(rules, CHAIN, with_jump=False))
        ipt, restore_tool = tool(mode, family.value), tool(mode, family.value, "restore")
        steps += [
            f"{ipt} -w 5 -t nat -N {CHAIN} 2>/dev/null",
            f"{ipt} -w 5 -t nat -C POSTROUTING {jump} 2>/dev/null"
            f" || {ipt} -w 5 -t nat -A POSTROUTING {jump}",
            f"{restore_tool} -w 5 --noflush < {path}",
        ]
    return "while :; do\n  " + "\n  ".join(steps) + f"\n  sleep {case.interval:g}\ndone\n"


def measure_case(role: str, mode: str, case: Case, seconds: float) -> dict[str, float]:
    """In this namespace: run one side of a case and return its CPU over `seconds`."""
    from bench.daemon import kube_proxy_table

    if case.kube:
        restore(mode, kube_proxy_table(case.kube))
    with tempfile.TemporaryDirectory(prefix="masqd-bench-steady-") as tmp:
        work = Path(tmp)
        with cgroup.account(f"{role[:4]}{mode[0]}") as account:
            if role == "masqd":
                (work / "config").write_text(config_text(case))
                argv = [sys.executable, "-m", "masqd", "--config", str(work / "config")]
                argv += ["--socket", str(work / "masqd.sock"), "--iptables-mode", mode]
                argv += ["--metrics-address", "", "--log-level", "warning"]
            else:
                (work / "loop.sh").write_text(upstream_script(mode, case, work))
                argv = ["sh", str(work / "loop.sh")]
            with open(work / "log", "wb") as log:
                proc = subprocess.Popen(account.wrap(argv), stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_until_written(mode, proc, work)
                time.sleep(3.0)  # start-up is not the steady state
                before, start = account.seconds(), time.monotonic()
                time.sleep(seconds)
                cpu, wall = account.seconds() - before, time.monotonic() - start
                if proc.poll() is not None:
                    raise RuntimeError(f"{role} exited:\n{(work / 'log').read_text()[-2000:]}")
            finally:
                stop(proc)
    return {"cpu": cpu, "wall": wall}


def _wait_until_written(mode: str, proc: subprocess.Popen[bytes], work: Path) -> None:
    from bench.common import chain_rules, save_nat

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(chain_rules(save_nat(mode, family)) for family in (4, 6)):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the chains were not written:\n{(work / 'log').read_text()[-2000:]}")


def run_cases(figure: int, mode: str, seconds: float, report: Report) -> None:
    """Every case of the figure, both sides, at once, each in a namespace of its own."""
    from bench.netns import run_figure

    cases = FIGURE_CASES[figure]
    results: dict[tuple[int, str], dict[str, float]] = {}
    errors: list[str] = []

    def one(i: int, role: str) -> None:
        args = ["case", "--mode", mode, "--role", role, "--seconds", str(seconds)]
        case = cases[i]
        args += ["--interval", str(case.interval), "--kube", str(case.kube)]
        args += ["--cidrs", str(case.cidrs)]
        try:
            report = run_figure("steady", args, f"s{figure}{i}{role[0]}", timeout=seconds + 300)
            results[i, role] = json.loads(report.details[0])
        except Exception as e:  # reported below, with the others
            errors.append(f"{cases[i].label} ({role}): {e}")

    threads = [
        threading.Thread(target=one, args=(i, role))
        for i in range(len(cases))
        for role in ("masqd", "upstream")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    for i, case in enumerate(cases):
        ours, theirs = results[i, "masqd"], results[i, "upstream"]
        if figure == 10:
            scale = 120.0
            name, unit, goal, limit = f"10 CPU per 120 s, {case.label}", "s", "<= 1x", 1.0
        else:
            scale = case.interval  # per tick
            name, unit, goal, limit = f"11 CPU per idle tick, {case.label}", "s", "<= 10 ms", None
        value = ours["cpu"] / ours["wall"] * scale
        baseline = theirs["cpu"] / theirs["wall"] * scale
        ratio = value / baseline if baseline else float("inf")
        met = ratio <= limit if limit is not None else value <= 0.010
        report.rows.append(
            Row(
                name,
                mode,
                Stats(value, value, value, 1, unit),
                goal,
                met,
                Stats(baseline, baseline, baseline, 1, unit),
                ratio,
                note=f"over {ours['wall']:.0f} s; baseline: upstream's commands, both families",
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steady")
    parser.add_argument("what", choices=("10", "11", "case"))
    parser.add_argument("--mode", required=True, choices=("nft", "legacy"))
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--role", choices=("masqd", "upstream"))
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--kube", type=int, default=0)
    parser.add_argument("--cidrs", type=int, default=0)
    args = parser.parse_args(argv)
    require_own_namespace()
    report = Report()
    if args.what == "case":
        case = Case(args.interval, args.kube, args.cidrs)
        report.details.append(json.dumps(measure_case(args.role, args.mode, case, args.seconds)))
    else:
        run_cases(int(args.what), args.mode, args.seconds, report)
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
