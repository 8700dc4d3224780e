"""`make bench`: every figure on every backend it applies to, each in a fresh namespace, one
table at the end.

    python -m bench [--quick] [--figures 1,3] [--backends nft,legacy,nftables] [--strict]

Backends: nft and legacy are the iptables backend's modes; nftables is the nftables backend
(figures 3, 9 and 13 only: the others time the iptables chain's own repairs and paths).

Progress goes to stderr, the table to stdout. The exit code is 1 when a figure could not be
measured (and, with --strict, when a goal is missed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.common import Report, Row, Stats
from bench.netns import FigureFailed, run_figure

FIGURES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
PARALLEL = (10, 11)
"""Figures whose backends run at once: they measure CPU time over minutes, which sharing the
machine hardly touches, and one after the other they would take twice as long."""
BACKENDS = ("nft", "legacy", "nftables")
FIGURE_BACKENDS = {3: BACKENDS, 9: BACKENDS, 13: ("nftables",)}
"""The backends each figure runs on; nft and legacy where not listed."""


@dataclass(frozen=True)
class Budget:
    """How many rounds each kind of figure runs; --quick trades precision for time."""

    rounds: int = 25
    daemon_rounds: int = 8
    repair_rounds: int = 3
    idle_seconds: float = 60.0
    apply_rounds: int = 15
    steady_seconds: float = 120.0
    tick_seconds: float = 60.0
    start_rounds: int = 10
    connection_rounds: int = 9


FULL = Budget()
QUICK = Budget(
    rounds=5,
    daemon_rounds=4,
    repair_rounds=2,
    idle_seconds=20.0,
    apply_rounds=3,
    steady_seconds=30.0,
    tick_seconds=20.0,
    start_rounds=4,
    connection_rounds=3,
)


def figure_command(figure: int, backend: str, budget: Budget) -> tuple[str, list[str]]:
    """The module and arguments that measure one figure on one backend."""
    mode = ["--mode", backend]
    if figure in (1, 2, 3, 4):
        return "inproc", [str(figure), *mode, "--rounds", str(budget.rounds)]
    if figure == 9:
        return "inproc", ["9", *mode, "--rounds", str(budget.apply_rounds)]
    if figure == 5:
        return "daemon", ["5", *mode, "--rounds", str(budget.daemon_rounds)]
    if figure == 6:
        return "daemon", ["6", *mode, "--rounds", str(budget.repair_rounds)]
    if figure == 7:
        return "daemon", ["7", *mode]
    if figure == 10:
        return "steady", ["10", *mode, "--seconds", str(budget.steady_seconds)]
    if figure == 11:
        return "steady", ["11", *mode, "--seconds", str(budget.tick_seconds)]
    if figure == 12:
        return "daemon", ["12", *mode, "--rounds", str(budget.start_rounds)]
    if figure == 13:
        return "conncost", ["--rounds", str(budget.connection_rounds)]
    return "daemon", ["8", *mode, "--idle-seconds", str(budget.idle_seconds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 20 s idle window")
    parser.add_argument(
        "--figures", default=",".join(map(str, FIGURES)), help="e.g. 1,3 (default: all)"
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="nft,legacy,nftables (default)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the bench creates network namespaces: run it as root")
    figures = [int(f) for f in args.figures.split(",") if f]
    backends = [b for b in args.backends.split(",") if b]
    if any(f not in FIGURES for f in figures) or any(b not in BACKENDS for b in backends):
        parser.error(f"figures are {FIGURES}, backends {BACKENDS}")
    budget = QUICK if args.quick else FULL

    started = time.monotonic()
    rows: list[Row] = []
    details: list[str] = []
    errors: list[str] = []
    for figure in figures:
        on = [b for b in backends if b in FIGURE_BACKENDS.get(figure, BACKENDS[:2])]
        if not on:
            continue
        print(f"bench: figure {figure} on {', '.join(on)} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        if figure in PARALLEL:
            with concurrent.futures.ThreadPoolExecutor(len(on)) as pool:
                futures = [pool.submit(_measure, figure, b, budget, errors) for b in on]
                reports = [f.result() for f in futures]
        else:
            reports = [_measure(figure, backend, budget, errors) for backend in on]
        print(f"bench:   {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        for report in reports:
            rows += report.rows
            details += report.details

    print(header(time.monotonic() - started, args.quick))
    print(table(rows))
    if details:
        print("\nDetails:")
        print("\n".join(f"  {d}" for d in details))
    for error in errors:
        print(f"\nERROR {error}", file=sys.stderr)
    goals = [r for r in rows if r.met is not None]
    print(f"\n{sum(1 for r in goals if r.met)} of {len(goals)} goals met.")
    if errors:
        return 1
    return 1 if args.strict and not all(r.met for r in goals) else 0


def _measure(figure: int, backend: str, budget: Budget, errors: list[str]) -> Report:
    module, figure_args = figure_command(figure, backend, budget)
    try:
        return run_figure(module, figure_args, f"f{figure}{backend[:2]}", timeout=900)
    except (FigureFailed, subprocess.TimeoutExpired) as e:
        errors.append(f"figure {figure} on {backend}: {e}")
        return Report([_error_row(figure, backend)])


def _error_row(figure: int, backend: str) -> Row:
    nan = float("nan")
    return Row(f"{figure} (failed to measure)", backend, Stats(nan, nan, nan, 0), "-", False)


def header(seconds: float, quick: bool) -> str:
    versions = [
        subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        .stdout.strip()
        .splitlines()[:1]
        for tool in ("iptables-nft", "nft")
    ]
    tools = ", ".join(v[0] for v in versions if v)
    return (
        f"masqd bench{' (quick)' if quick else ''}: {platform.node()}, Linux "
        f"{platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{tools}; {seconds:.0f} s. Values: median (min-max) of the rounds.\n"
    )


def table(rows: list[Row]) -> str:
    head = ("figure", "backend", "value", "baseline", "ratio", "goal", "met")
    lines = [
        (
            r.figure,
            r.backend,
            fmt_stats(r.value),
            fmt_stats(r.baseline) if r.baseline else "-",
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            r.goal,
            "-" if r.met is None else ("met" if r.met else "NOT MET"),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    out = []
    for i, line in enumerate([head, *lines]):
        out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def fmt_stats(s: Stats) -> str:
    """median (min-max) in one unit: ms or s for times."""
    scale, unit = 1.0, s.unit
    if s.unit == "s" and s.median < 1e-3:
        scale, unit = 1e6, "µs"
    elif s.unit == "s" and s.median < 1:
        scale, unit = 1000.0, "ms"
    digits = 2 if unit in ("s", "%") else 1
    if s.unit not in ("s", "MiB", "%"):
        digits, unit = 0, ""

    def one(v: float) -> str:
        return f"{v * scale:.{digits}f}"

    text = (
        one(s.median)
        if s.n <= 1 or s.min == s.max
        else (f"{one(s.median)} ({one(s.min)}-{one(s.max)})")
    )
    return f"{text} {unit}".rstrip()


if __name__ == "__main__":
    sys.exit(main())
